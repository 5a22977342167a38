//! Preflight: everything that would stop the migration, found before any data moves — server
//! versions, pg_dump's version, extensions (present and at the same version), the user's
//! privileges on both sides, the target empty (unless `mode: replace`), and exclusions and rules
//! that name tables the source does not have. Sizes are recorded.

use serde_json::{Value, json};

use super::{Migration, Side, catalog, schema};
use crate::migrate::Finding;
use crate::model::MigrationMode;

/// The findings (none: go ahead) and what was measured.
pub async fn run(m: &Migration<'_>) -> Result<(Vec<Finding>, Value), String> {
    let (source, target) = tokio::try_join!(m.source(), m.target())?;
    let mut f = Vec::new();
    let (sv, stext) = catalog::version(&source).await?;
    let (tv, ttext) = catalog::version(&target).await?;
    if tv / 10000 < sv / 10000 {
        f.push(Finding::new(
            "version",
            format!("the target runs PostgreSQL {ttext}, older than the source's {stext}"),
        ));
    }
    match schema::pg_dump_major().await {
        Ok(major) if major < sv / 10000 => f.push(Finding::new(
            "version",
            format!("pg_dump is version {major}, older than the source server ({stext})"),
        )),
        Ok(_) => {}
        Err(e) => f.push(Finding::new("version", e)),
    }
    f.extend(extensions(&source, &target).await?);
    let mut tables = catalog::tables(&source).await?;
    f.extend(
        m.spec
            .unknown_tables(&tables)
            .into_iter()
            .map(|msg| Finding::new("plan", msg)),
    );
    tables.retain(|t| !m.spec.excludes(&t.id()));
    f.extend(privileges(&source, &target).await?);
    if m.spec.mode == MigrationMode::Empty {
        f.extend(not_empty(&target).await?);
    }
    let facts = json!({
        "source": { "server": stext, "bytes": size(&source).await? },
        "target": { "server": ttext, "bytes": size(&target).await? },
        "tables": tables.len(),
        "rows_estimate": tables.iter().map(|t| t.rows_estimate).sum::<i64>(),
        "mode": m.spec.mode,
    });
    Ok((f, facts))
}

async fn size(s: &Side) -> Result<i64, String> {
    s.client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await
        .map(|r| r.get::<_, i64>(0))
        .map_err(|e| s.error(&e))
}

/// Each extension of the source must be available on the target at the same version.
async fn extensions(source: &Side, target: &Side) -> Result<Vec<Finding>, String> {
    let installed = catalog::extensions(&source.client)
        .await
        .map_err(|e| source.error(&e))?;
    let available = catalog::available_extensions(target).await?;
    Ok(crate::migrate::catalog::extension_findings(
        &installed,
        &available,
        &target.db.place,
    ))
}

/// The source's user reads every table and sequence; the target's may create in the database
/// and in `public`.
async fn privileges(source: &Side, target: &Side) -> Result<Vec<Finding>, String> {
    let mut f = Vec::new();
    let rows = source
        .client
        .query(
            "SELECT c.relnamespace::regnamespace::text || '.' || c.relname FROM pg_class c \
JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind IN ('r', 'S') AND NOT has_table_privilege(c.oid, 'SELECT') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| source.error(&e))?;
    let denied: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let denied: Vec<&String> = denied.iter().collect();
    if !denied.is_empty() {
        f.push(Finding::new(
            "privileges",
            format!(
                "user `{}` cannot read {} on the source: {}",
                source.db.pg.user,
                denied.len(),
                names(&denied)
            ),
        ));
    }
    let r = target
        .client
        .query_one(
            "SELECT has_database_privilege(current_database(), 'CREATE'), has_schema_privilege('public', 'CREATE')",
            &[],
        )
        .await
        .map_err(|e| target.error(&e))?;
    if !r.get::<_, bool>(0) || !r.get::<_, bool>(1) {
        f.push(Finding::new(
            "privileges",
            format!(
                "user `{}` may not create schemas and tables in database `{}` on the target",
                target.db.pg.user, target.db.pg.dbname
            ),
        ));
    }
    Ok(f)
}

/// A target in `mode: empty` holds no tables, views or sequences.
async fn not_empty(target: &Side) -> Result<Vec<Finding>, String> {
    let items = catalog::items(target).await?;
    let rel: Vec<&String> = items
        .iter()
        .filter(|i| i.kind == "relation")
        .map(|i| &i.name)
        .collect();
    Ok(if rel.is_empty() {
        vec![]
    } else {
        vec![Finding::new(
            "target",
            format!(
                "the target is not empty: {} relation(s) ({}); set `mode: replace` in the plan to replace them",
                rel.len(),
                names(&rel)
            ),
        )]
    })
}

fn names(list: &[&String]) -> String {
    let mut s = list
        .iter()
        .take(5)
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > 5 {
        s.push_str(&format!(" and {} more", list.len() - 5));
    }
    s
}
