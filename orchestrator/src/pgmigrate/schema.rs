//! The schema, loaded with PostgreSQL's own tools: `pg_dump --schema-only --section=pre-data`
//! (tables, types, sequences, grants; no indexes or keys) piped into `psql` in one transaction
//! before the copy, and `--section=post-data` (indexes, keys, constraints, triggers) after it.
//! After each, the catalogs are compared; anything missing or changed is a finding.
//!
//! Nothing is written to disk: pg_dump's output goes straight into psql. Passwords reach the two
//! programs in their environment (`PGPASSWORD`), never on a command line.

use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{Migration, Side, catalog};
use crate::migrate::{Finding, Phase, compare_catalogs, toc};
use crate::model::{MigrationMode, PgTls};
use crate::probe::PgTarget;

/// The catalog kinds each section is responsible for.
pub fn kinds(phase: Phase) -> &'static [&'static str] {
    match phase {
        Phase::Schema => &["relation", "column", "check", "sequence", "grant"],
        _ => &[
            "relation",
            "column",
            "check",
            "sequence",
            "grant",
            "constraint",
            "index",
        ],
    }
}

/// Loads one section (pre-data for `Phase::Schema`, post-data for `Phase::Indexes`), unless the
/// target's catalog already matches (a resumed step whose load committed), then compares.
pub async fn run(m: &Migration<'_>, phase: Phase) -> Result<(Vec<Finding>, Value), String> {
    let (source, target) = tokio::try_join!(m.source(), m.target())?;
    let src = catalog::items(&source).await?;
    let before = catalog::items(&target).await?;
    let kinds = kinds(phase);
    // A replaced target may match already (its old tables, with their rows): always reload it.
    let matches = compare_catalogs(&src, &before, kinds).is_empty() && !src.is_empty();
    let loaded = if matches && m.spec.mode == MigrationMode::Empty {
        false
    } else {
        let section = if phase == Phase::Schema {
            "pre-data"
        } else {
            "post-data"
        };
        if phase == Phase::Schema {
            let clean = m.spec.mode == MigrationMode::Replace;
            pipe(m, &source.db, &target.db, section, clean).await?;
        } else {
            post_data(m, &source, &target, &src, &before).await?;
        }
        true
    };
    if phase == Phase::Indexes {
        restore_autovacuum(m, &source, &target).await?;
    }
    let after = catalog::items(&target).await?;
    let findings = compare_catalogs(&src, &after, kinds);
    let count = |k: &str| src.iter().filter(|i| i.kind == k).count();
    Ok((
        findings,
        json!({
            "loaded": loaded,
            "compared": kinds.iter().map(|k| (k.to_string(), count(k))).collect::<std::collections::BTreeMap<_, _>>(),
        }),
    ))
}

/// Each copied table's autovacuum switches set on the target as the source has them, undoing
/// the copy's [`crate::migrate::sql::autovacuum_off`] (every time the step runs: a resumed one
/// too); only tables whose switches differ are altered.
async fn restore_autovacuum(m: &Migration<'_>, source: &Side, target: &Side) -> Result<(), String> {
    let (want, have) = tokio::try_join!(catalog::autovacuum(source), catalog::autovacuum(target))?;
    let tables = m.tables(source).await?;
    let batch = crate::migrate::sql::autovacuum_restores(&tables, &want, &have);
    if batch.is_empty() {
        return Ok(());
    }
    target
        .client
        .batch_execute(&batch.join("; "))
        .await
        .map_err(|e| {
            format!(
                "{} (setting autovacuum on the target's tables back as the source has it)",
                target.error(&e)
            )
        })
}

/// pg_dump's major version (`pg_dump (PostgreSQL) 15.4` -> 15).
pub async fn pg_dump_major() -> Result<i32, String> {
    let out = tokio::process::Command::new("pg_dump")
        .arg("--version")
        .output()
        .await
        .map_err(|e| format!("cannot run pg_dump (PostgreSQL's client tools must be installed where ferry runs): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("cannot read pg_dump's version from `{}`", text.trim()))
}

/// The libpq environment for one database (any PG* variable of ferry's own is removed first).
fn libpq_env(
    m: &Migration<'_>,
    db: &PgTarget,
    cmd: &mut tokio::process::Command,
) -> Result<(), String> {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    let pg = &db.pg;
    cmd.env("PGHOST", &pg.host)
        .env("PGPORT", pg.port.to_string())
        .env("PGDATABASE", &pg.dbname)
        .env("PGUSER", &pg.user)
        .env("PGAPPNAME", "ferry-migrate")
        .env("PGCONNECT_TIMEOUT", db.timeout.as_secs().max(2).to_string());
    match pg.tls {
        PgTls::Disable => {
            cmd.env("PGSSLMODE", "disable");
        }
        PgTls::VerifyFull => {
            let roots = db
                .ca_file
                .clone()
                .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
            cmd.env("PGSSLMODE", "verify-full")
                .env("PGSSLROOTCERT", roots);
        }
    }
    if let Some(p) = m.probes.password(db).map_err(|e| e.to_string())? {
        cmd.env("PGPASSWORD", p.expose());
    }
    Ok(())
}

/// Indexes, keys and constraints built `max_parallel` at once: the entries of pg_dump's
/// post-data section, except the indexes and constraints the target already has exactly as the
/// source has them — so a resumed step that stopped half-way builds only what is missing (an
/// index that took an hour is not built again). Each entry restored is dropped first if it
/// exists (`--clean --if-exists`): one left different is built again. The first error stops it.
async fn post_data(
    m: &Migration<'_>,
    source: &Side,
    target: &Side,
    src: &[crate::migrate::CatalogItem],
    before: &[crate::migrate::CatalogItem],
) -> Result<(), String> {
    let post = PostData::dump(m, source).await?;
    let present = toc::matching(src, before);
    let left = toc::remaining(&post.toc, &post.owners, &present);
    if left.is_empty() {
        return Ok(());
    }
    post.restore(m, &target.db, &left).await
}

/// The source's post-data section as a custom-format archive (DDL only, in a private file
/// removed when this is dropped), its list of entries, and the catalog item each index and
/// constraint entry stands for.
struct PostData {
    file: std::path::PathBuf,
    toc: Vec<toc::TocEntry>,
    owners: toc::Owners,
}

impl Drop for PostData {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(self.file.with_extension("list"));
    }
}

impl PostData {
    /// `pg_dump --section post-data` of the source, and its list (`pg_restore -l`).
    async fn dump(m: &Migration<'_>, source: &Side) -> Result<PostData, String> {
        let file = std::env::temp_dir().join(format!(
            "ferry-post-data-{}-{}.dump",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        private_file(&file)?;
        let mut post = PostData {
            file,
            toc: Vec::new(),
            owners: Default::default(),
        };
        let mut dump = tokio::process::Command::new("pg_dump");
        dump.args([
            "-Fc",
            "--schema-only",
            "--no-owner",
            "--section",
            "post-data",
            "-f",
        ])
        .arg(&post.file);
        libpq_env(m, &source.db, &mut dump)?;
        let place = &source.db.place;
        program(&mut dump, || {
            format!("pg_dump of {place} (post-data) failed")
        })
        .await?;
        let mut list = tokio::process::Command::new("pg_restore");
        list.arg("-l").arg(&post.file);
        let list = program(&mut list, || {
            format!("pg_restore cannot list the post-data archive of {place}")
        })
        .await?;
        post.toc = toc::parse(&String::from_utf8_lossy(&list));
        post.owners = catalog::owned(source).await?;
        Ok(post)
    }

    /// Restores the chosen entries into the target, `max_parallel` at once.
    async fn restore(
        &self,
        m: &Migration<'_>,
        target: &PgTarget,
        entries: &[&toc::TocEntry],
    ) -> Result<(), String> {
        let list = self.file.with_extension("list");
        private_file(&list)?;
        std::fs::write(&list, toc::list_file(entries))
            .map_err(|e| format!("cannot write {}: {e}", list.display()))?;
        let mut restore = tokio::process::Command::new("pg_restore");
        restore
            .args([
                "--no-owner",
                "--clean",
                "--if-exists",
                "--exit-on-error",
                "-j",
            ])
            .arg(
                m.spec
                    .max_parallel
                    .clamp(1, entries.len().max(1))
                    .to_string(),
            )
            .arg("-L")
            .arg(&list)
            // A conninfo naming only the database (quoted: a name is never read as settings);
            // the rest comes from the environment like every other libpq program ferry runs.
            .arg("-d")
            .arg(format!(
                "dbname='{}'",
                target.pg.dbname.replace('\\', "\\\\").replace('\'', "\\'")
            ))
            .arg(&self.file)
            .kill_on_drop(true);
        libpq_env(m, target, &mut restore)?;
        let place = &target.place;
        program(&mut restore, || {
            format!("building indexes and constraints on {place} failed")
        })
        .await
        .map(|_| ())
    }
}

/// Runs one of PostgreSQL's programs to its end: what it printed, or `failed()` with the
/// program's own message.
async fn program(
    cmd: &mut tokio::process::Command,
    failed: impl FnOnce() -> String,
) -> Result<Vec<u8>, String> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            failed(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// Creates an empty file only ferry's user can read.
fn private_file(path: &std::path::Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(|_| ())
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// `pg_dump ... | psql ...`, both checked; psql stops at the first error and rolls back.
async fn pipe(
    m: &Migration<'_>,
    source: &PgTarget,
    target: &PgTarget,
    section: &str,
    clean: bool,
) -> Result<(), String> {
    let mut dump = tokio::process::Command::new("pg_dump");
    dump.args(["--schema-only", "--no-owner", "--section", section]);
    if clean {
        dump.args(["--clean", "--if-exists"]);
    }
    libpq_env(m, source, &mut dump)?;
    let mut dump = dump
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run pg_dump: {e}"))?;
    let stdout: Stdio = dump
        .stdout
        .take()
        .and_then(|s| s.try_into().ok())
        .ok_or("cannot connect pg_dump to psql")?;
    let mut psql = tokio::process::Command::new("psql");
    psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]);
    libpq_env(m, target, &mut psql)?;
    let psql = psql
        .stdin(stdout)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    let mut dump_err = String::new();
    if let Some(mut e) = dump.stderr.take() {
        let _ = e.read_to_string(&mut dump_err).await;
    }
    let dumped = dump.wait().await.map_err(|e| e.to_string())?;
    let loaded = psql.wait_with_output().await.map_err(|e| e.to_string())?;
    if !dumped.success() {
        return Err(format!(
            "pg_dump of {} ({section}) failed: {}",
            source.place,
            dump_err.trim()
        ));
    }
    if !loaded.status.success() {
        return Err(format!(
            "loading the schema ({section}) into {} failed, nothing of it was kept: {}",
            target.place,
            String::from_utf8_lossy(&loaded.stderr).trim()
        ));
    }
    Ok(())
}
