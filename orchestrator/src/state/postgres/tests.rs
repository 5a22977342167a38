//! The `postgres` backend against a real PostgreSQL (Debian's, started here by
//! `ci/postgres.sh`; a missing server fails these tests, it never skips them): one chain from
//! many clients, the ledger append-only whoever asks, fencing by the lease, the schema checked.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::ledger::{Event, Ledger};

/// A throwaway cluster with ferry's schema set up by an owner role and used by an app role
/// that may only SELECT and INSERT the ledger; stopped when dropped.
pub(crate) struct TeamPg {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/postgres.sh")
}

impl TeamPg {
    pub fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(script())
            .args([
                "start",
                &dir.path().display().to_string(),
                &port.to_string(),
            ])
            .output()
            .expect("ci/postgres.sh runs");
        assert!(
            out.status.success(),
            "cannot start PostgreSQL (ci/postgres.sh install installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self { dir, port };
        pg.sql(
            "CREATE ROLE ferry_owner LOGIN PASSWORD 'owner-secret'; \
             GRANT CREATE ON DATABASE app TO ferry_owner; \
             CREATE ROLE ferry_app LOGIN PASSWORD 'app-secret'",
        );
        std::fs::write(pg.dir.path().join("owner-pw"), "owner-secret").unwrap();
        std::fs::write(pg.dir.path().join("app-pw"), "app-secret").unwrap();
        pg
    }

    /// SQL as the superuser, in database `app`.
    #[track_caller]
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(script())
            .args([
                "psql",
                &self.dir.path().display().to_string(),
                &self.port.to_string(),
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn url(&self, role: &str, schema: &str) -> StateUrl {
        let pw = if role == "ferry_owner" {
            "owner-pw"
        } else {
            "app-pw"
        };
        StateUrl::parse(&format!(
            "postgres://{role}@127.0.0.1:{}/app?sslmode=disable&schema={schema}&password=file:{}",
            self.port,
            self.dir.path().join(pw).display()
        ))
        .unwrap()
    }

    /// Schema `schema` set up, and the app role's handle on it.
    pub fn store(&self, schema: &str) -> PgState {
        PgState::init(&self.url("ferry_owner", schema), Some("ferry_app")).unwrap();
        PgState::new(self.url("ferry_app", schema))
    }
}

impl Drop for TeamPg {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", &self.dir.path().display().to_string()])
            .output();
    }
}

fn note(i: usize) -> NewEntry {
    let mut e = NewEntry::new("tester", Event::StepSucceeded).plan("p");
    e.step = Some(format!("s{i}"));
    e
}

#[test]
fn one_cluster_holds_every_guarantee() {
    let pg = TeamPg::start(55461);
    many_clients_keep_one_chain(&pg);
    the_ledger_is_append_only_for_everyone(&pg);
    a_paused_holder_is_fenced_after_a_takeover(&pg);
    the_schema_must_be_exactly_ferrys(&pg);
    init_again_changes_nothing(&pg);
}

/// 8 clients (own connections) × 1,000 appends, each client also group-committing its own
/// threads: one chain, no gap, every entry once.
fn many_clients_keep_one_chain(pg: &TeamPg) {
    pg.store("chain");
    std::thread::scope(|s| {
        for w in 0..8 {
            let state = PgState::new(pg.url("ferry_app", "chain"));
            s.spawn(move || {
                let ledger = Ledger::with_backend(std::sync::Arc::new(state));
                std::thread::scope(|inner| {
                    for t in 0..4 {
                        let l = ledger.clone();
                        inner.spawn(move || {
                            for i in 0..250 {
                                l.append(note(w * 1000 + t * 250 + i)).unwrap();
                            }
                        });
                    }
                });
            });
        }
    });
    let ledger = Ledger::with_backend(std::sync::Arc::new(PgState::new(
        pg.url("ferry_app", "chain"),
    )));
    let mut steps = std::collections::BTreeSet::new();
    let report = ledger
        .verify_each(&mut |e| {
            steps.insert(e.step.unwrap());
        })
        .unwrap();
    assert_eq!(report.tamper, None);
    assert_eq!(report.entries, 8000);
    assert_eq!(steps.len(), 8000, "every entry exactly once");
    let epochs = pg.sql("SELECT count(*) FROM chain.ledger WHERE epoch IS NOT NULL");
    assert_eq!(epochs, "0", "appends outside an apply carry no epoch");
}

fn the_ledger_is_append_only_for_everyone(pg: &TeamPg) {
    let state = pg.store("ro");
    let ledger = Ledger::with_backend(std::sync::Arc::new(state));
    ledger.append(note(1)).unwrap();
    // The owner (the superuser here) is stopped by the triggers...
    for sql in [
        "UPDATE ro.ledger SET line = line",
        "DELETE FROM ro.ledger",
        "TRUNCATE ro.ledger",
    ] {
        let out = Command::new(script())
            .args([
                "psql",
                &pg.dir.path().display().to_string(),
                &pg.port.to_string(),
                sql,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("append-only"),
            "{sql}: {err}"
        );
    }
    // ... and the app role may not even ask.
    let rights = pg.sql(
        "SELECT string_agg(privilege_type, ',' ORDER BY privilege_type) FROM information_schema.role_table_grants \
         WHERE grantee = 'ferry_app' AND table_schema = 'ro' AND table_name = 'ledger'",
    );
    assert_eq!(rights, "INSERT,SELECT");
    assert_eq!(ledger.verify().unwrap().entries, 1);
}

/// A holder paused past its lease is taken over by another client; when it goes on, none of
/// its appends lands (but `lock_lost`), and its renewal fails.
fn a_paused_holder_is_fenced_after_a_takeover(pg: &TeamPg) {
    let a = Ledger::with_backend(std::sync::Arc::new(pg.store("fence")));
    let b = Ledger::with_backend(std::sync::Arc::new(PgState::new(
        pg.url("ferry_app", "fence"),
    )));
    let (mut lock_a, taken) = a
        .take_lock("alice", "p1", Duration::from_millis(400))
        .unwrap();
    assert_eq!(taken.event, Event::LockTaken);
    let held = b
        .take_lock("bob", "p2", Duration::from_secs(30))
        .unwrap_err();
    assert!(
        matches!(&held, crate::state::TakeLockError::Lock(LockError::Held(h)) if h.actor == "alice"),
        "{held}"
    );
    let status = b.lock_status().unwrap().unwrap();
    assert_eq!(
        (status.holder.actor.as_str(), status.expired),
        ("alice", false)
    );
    std::thread::sleep(Duration::from_millis(700));
    let (_lock_b, broken) = b.take_lock("bob", "p2", Duration::from_secs(30)).unwrap();
    assert_eq!(broken.event, Event::LockBroken);
    let why = broken.message.unwrap();
    assert!(
        why.contains("lease expired") && why.contains("still running"),
        "{why}"
    );
    let fenced = a.fenced(lock_a.fence());
    let e = fenced.append(note(1)).unwrap_err();
    assert!(
        matches!(&e, LedgerError::Fenced(LockError::Lost(h)) if h.actor == "bob"),
        "{e}"
    );
    assert!(matches!(lock_a.renew(), Err(LockError::Lost(_))));
    fenced
        .append(NewEntry::new("alice", Event::LockLost))
        .unwrap();
    assert!(!lock_a.release().unwrap(), "the lock is bob's now");
    let events: Vec<Event> = b.read_verified().unwrap().iter().map(|e| e.event).collect();
    assert_eq!(
        events,
        [Event::LockTaken, Event::LockBroken, Event::LockLost]
    );
    let epochs =
        pg.sql("SELECT string_agg(coalesce(epoch::text, '-'), ',' ORDER BY seq) FROM fence.ledger");
    assert_eq!(
        epochs, "1,2,2",
        "each row carries the epoch of the lock it was written under"
    );
    let (prev, entry) = b
        .break_lock("carol", "bob's runner is gone")
        .unwrap()
        .unwrap();
    assert_eq!(prev.actor, "bob");
    assert_eq!(entry.detail.unwrap()["broken_by"], "carol");
    assert!(b.lock_status().unwrap().is_none());
    assert!(b.break_lock("carol", "again").unwrap().is_none());
}

fn the_schema_must_be_exactly_ferrys(pg: &TeamPg) {
    let bare = Ledger::with_backend(std::sync::Arc::new(PgState::new(
        pg.url("ferry_app", "nothing"),
    )));
    let e = bare.append(note(1)).unwrap_err().to_string();
    assert!(
        e.contains("holds no ferry state") && e.contains("ferry state init"),
        "{e}"
    );
    pg.store("changed");
    pg.sql("UPDATE changed.schema_history SET checksum = '1'");
    let changed = Ledger::with_backend(std::sync::Arc::new(PgState::new(
        pg.url("ferry_app", "changed"),
    )));
    let e = changed.verify().unwrap_err().to_string();
    assert!(e.contains("changed after it was applied"), "{e}");
    let again = PgState::init(&pg.url("ferry_owner", "changed"), None).unwrap_err();
    assert!(again.contains("migrations"), "{again}");
}

fn init_again_changes_nothing(pg: &TeamPg) {
    let url = pg.url("ferry_owner", "twice");
    assert_eq!(PgState::init(&url, None).unwrap(), ["V1__ledger_and_lock"]);
    assert!(PgState::init(&url, None).unwrap().is_empty());
}
