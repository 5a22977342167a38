//! PostgreSQL migrations between two real clusters from Debian's packages (ci/postgres.sh): a
//! multi-table database moved and verified, kill -9 mid-copy and a resume that copies only the
//! remaining chunks, planted differences named by key, types that round-trip exactly, a table
//! without a key, sequences past their columns, a non-empty target, a source that stops
//! mid-copy, a target changed behind ferry's back between the copy and the verification, and bad
//! plans reported at once.

use std::time::{Duration, Instant};

use crate::support::{Postgres, Workspace};

/// The source's schema and data: a large keyed table (many chunks), a composite key with a
/// foreign key, every awkward type, a table without a primary key (with duplicate rows), an
/// identity column and a serial.
const SOURCE: &str = "
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM probe;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric(12,2) CHECK (total >= 0), placed timestamptz, note text);
INSERT INTO orders (customer, total, placed, note)
  SELECT 'c' || (g % 97), g * 1.25, '2026-01-01'::timestamptz + g * interval '1 minute',
         CASE WHEN g % 7 = 0 THEN NULL ELSE repeat('x', g % 50) END
  FROM generate_series(1, 60000) g;
CREATE INDEX orders_customer ON orders (customer);
CREATE TABLE tags (order_id bigint REFERENCES orders (id), tag text, PRIMARY KEY (tag, order_id));
INSERT INTO tags SELECT g, 'tag' || (g % 3) FROM generate_series(1, 5000) g;
CREATE TABLE kinds (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, b bytea, j jsonb, a int[], t text[],
  ts timestamptz, n numeric, f float8, q text);
INSERT INTO kinds (b, j, a, t, ts, n, f, q) VALUES
  ('\\x00ff10'::bytea, '{\"k\": [1, \"two\", null], \"z\": 1.50}', '{1,2,NULL}', '{\"a b\",\"c,d\",NULL}',
   '2026-03-01 12:34:56.789+02', 12345678901234567890.000000001, 0.1, 'it''s \"quoted\" \\ back'),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, ''),
  ('\\x'::bytea, 'null', '{}', '{}', 'infinity', 'NaN', '-0', NULL);
CREATE TABLE events (at timestamptz, kind text, payload jsonb);
INSERT INTO events SELECT '2026-01-01'::timestamptz + g * interval '1 s', 'k' || (g % 5), jsonb_build_object('g', g)
  FROM generate_series(1, 3000) g;
INSERT INTO events VALUES (NULL, 'dup', NULL), (NULL, 'dup', NULL);
ALTER TABLE kinds SET (autovacuum_enabled = off);
GRANT pg_read_all_data TO probe;
ANALYZE;
";

/// Two clusters: `src` with the data above, `dst` empty and owned by the migrating user.
fn clusters(src_port: u16, dst_port: u16) -> (Postgres, Postgres, Workspace) {
    let (src, dst) = std::thread::scope(|s| {
        let a = s.spawn(|| Postgres::start(src_port));
        let b = s.spawn(|| Postgres::start(dst_port));
        (a.join().unwrap(), b.join().unwrap())
    });
    src.sql(SOURCE);
    dst.sql("ALTER DATABASE app OWNER TO probe");
    let ws = Workspace::new();
    let mut inv = Workspace::inventory("");
    inv.push_str("databases:\n");
    inv.push_str(&src.database("src"));
    inv.push_str(&dst.database("dst"));
    ws.write("inventory.yaml", &inv);
    ws.write("pg-password", "probe-secret\n");
    (src, dst, ws)
}

fn plan(name: &str, extra: &str) -> String {
    format!(
        "version: 1\nkind: migration\nname: {name}\nsource: src\ntarget: dst\nmax_parallel: 3\nchunk_rows: 1000\n{extra}"
    )
}

/// What a table holds, as text in key order: equal on both sides means every value round-tripped.
fn contents(pg: &Postgres, table: &str, order: &str) -> String {
    pg.sql(&format!(
        "SET TimeZone = 'UTC'; SET extra_float_digits = 3; SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY {order}), '')) || ' ' || count(*) FROM {table} t"
    ))
    .lines()
    .last()
    .unwrap_or_default()
    .to_owned()
}

/// The entry of `name` in a report's list of tables.
fn table(list: &serde_json::Value, name: &str) -> serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

fn wait_for(ws: &Workspace, event: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ws.events(event).len() < n {
        assert!(Instant::now() < deadline, "never saw {n} `{event}` entries");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The whole migration: kill -9 mid-copy, a resume that copies only the chunks the ledger does
/// not hold, a clean verification with both hashes, values that round-trip exactly, sequences
/// ahead of every column; then a changed and a missing row planted on the target are found and
/// named by key, and the report says so.
#[test]
fn a_database_moves_verified_and_a_killed_copy_resumes_with_the_remaining_chunks() {
    let (src, dst, ws) = clusters(55441, 55442);
    ws.write("plans/move.yaml", &plan("move", ""));
    ws.plan_file("move")
        .expect_code(2)
        .stdout_has("migrate.copy");

    let mut child = ws.spawn(&["apply", "move.json"]);
    wait_for(&ws, "chunk_copied", 5);
    child.kill().unwrap();
    child.wait().unwrap();
    let planned = ws.events("chunks_planned");
    assert_eq!(planned.len(), 1);
    let chunks = planned[0]["detail"]["chunks"].as_array().unwrap().len();
    assert!(
        chunks > 60,
        "orders alone is 60 chunks of 1000 rows: {chunks}"
    );
    let before = ws.events("chunk_copied").len();
    assert!(before < chunks, "killed mid-copy: {before} of {chunks}");
    // Chunks start every 1000 rows in key order (rows 1001, 2001, ...: read from a cursor).
    let orders: Vec<&serde_json::Value> = planned[0]["detail"]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["table"] == "public.orders")
        .collect();
    assert_eq!(orders.len(), 60);
    assert_eq!(orders[0]["range"]["upper"], serde_json::json!(["1001"]));
    assert_eq!(orders[59]["range"]["lower"], serde_json::json!(["59001"]));
    // While it loads, the target's tables are kept from autovacuum.
    let autovacuum = |table: &str| {
        dst.sql(&format!(
            "SELECT coalesce(array_to_string(c.reloptions, ','), '') || '|' || coalesce(array_to_string(t.reloptions, ','), '') \
FROM pg_class c LEFT JOIN pg_class t ON t.oid = c.reltoastrelid WHERE c.oid = '{table}'::regclass"
        ))
    };
    assert_eq!(
        autovacuum("orders"),
        "autovacuum_enabled=false|autovacuum_enabled=false"
    );

    let r = ws.run(&["apply", "--resume", "move.json"]);
    r.expect_code(0);
    // Each chunk is recorded once across both runs: the resume copied only the others (or
    // adopted one whose transaction committed just before the kill).
    let copied = ws.events("chunk_copied");
    let mut ids: Vec<&str> = copied
        .iter()
        .map(|e| e["detail"]["chunk"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), chunks, "every chunk once");
    assert_eq!(copied.len(), chunks, "no chunk twice");
    assert_eq!(ws.events("chunks_planned").len(), 1, "chunks decided once");

    let verified = ws.events("migration_verified");
    let report = &verified.last().unwrap()["detail"]["report"];
    for t in report["tables"].as_array().unwrap() {
        assert_eq!(t["source_rows"], t["target_rows"], "{t}");
        assert_eq!(t["source_sha256"], t["target_sha256"], "{t}");
    }
    assert_eq!(report["tables"].as_array().unwrap().len(), 4);
    let checks_with = |flag: &str| {
        report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["chunk_checks"].as_array().cloned().unwrap_or_default())
            .filter(|c| c[flag] == true)
            .count()
    };
    // The source side of the copied chunks was hashed from the copy's own stream (no second
    // read of the source).
    let from_copy = checks_with("source_from_copy");
    assert!(from_copy > 50, "{from_copy} chunks hashed from the stream");
    // Their target side was read back as a COPY stream and hashed by ferry — only after the
    // target's database hashed a sample of each table's rows as ferry's stream hasher did (a
    // hasher that dropped its input would fail that sample and leave these to the database).
    let target_streamed = checks_with("target_from_stream");
    assert!(
        target_streamed > 50,
        "{target_streamed} chunks of the target hashed from a stream"
    );
    // Every stream hash the resumed run made was the one the target gave: none had to be
    // replaced by the source database's (a keyed chunk streams in key order, including `tags`,
    // whose text key's order is not the rows' physical order).
    let resumed = ws.events("apply_started").last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    let streamed: Vec<&str> = copied
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() > resumed)
        .filter(|e| e["detail"]["source_sha256"].is_string())
        .map(|e| e["detail"]["chunk"].as_str().unwrap())
        .filter(|c| !c.starts_with("public.events#"))
        .collect();
    assert!(
        streamed.iter().any(|c| c.starts_with("public.tags#")),
        "{streamed:?}"
    );
    for t in report["tables"].as_array().unwrap() {
        for c in t["chunk_checks"].as_array().unwrap() {
            if streamed.contains(&c["chunk"].as_str().unwrap()) {
                assert_eq!(c["source_from_copy"], true, "{c}");
            }
        }
    }
    // `events` has no key: copied in page ranges (all in the resumed run), verified whole, its
    // source side gathered from those chunks' streams — the source was not read again.
    let events = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "public.events")
        .expect("events verified");
    let pages = copied
        .iter()
        .filter(|e| e["detail"]["table"] == "public.events")
        .count();
    assert!(pages > 1, "events copied in {pages} page range(s)");
    assert_eq!(
        events["chunk_checks"][0]["source_from_copy"], true,
        "{events}"
    );
    assert_eq!(
        events["chunk_checks"][0]["target_from_stream"], true,
        "{events}"
    );
    assert_eq!(events["source_rows"], 3002, "{events}");

    for (table, order) in [
        ("orders", "id"),
        ("tags", "tag, order_id"),
        ("kinds", "id"),
        ("events", "t::text"),
    ] {
        assert_eq!(
            contents(&src, table, order),
            contents(&dst, table, order),
            "{table}"
        );
    }
    assert_eq!(
        dst.sql("SELECT q || '|' || n::text || '|' || encode(b, 'hex') FROM kinds WHERE id = 1"),
        "it's \"quoted\" \\ back|12345678901234567890.000000001|00ff10"
    );
    // The indexes step put autovacuum back as the source has it: the server's default, or the
    // source's own switch.
    assert_eq!(autovacuum("orders"), "|");
    assert_eq!(autovacuum("kinds"), "autovacuum_enabled=off|");
    // Indexes and keys were built after the data; the sequences hand out fresh values.
    assert_eq!(
        dst.sql("SELECT count(*) FROM pg_indexes WHERE tablename IN ('orders', 'tags', 'kinds')"),
        "4"
    );
    dst.sql("INSERT INTO orders (customer, total) VALUES ('new', 1)");
    dst.sql("INSERT INTO kinds (q) VALUES ('new')");
    assert_eq!(dst.sql("SELECT max(id) FROM orders"), "60001");
    let seq = ws
        .events("step_succeeded")
        .into_iter()
        .find(|e| e["to"] == "migrate.sequences")
        .expect("sequences set");
    assert_eq!(seq["detail"]["sequences"].as_array().unwrap().len(), 2);
    dst.sql("DELETE FROM orders WHERE customer = 'new'; DELETE FROM kinds WHERE q = 'new'");

    // Plant a changed and a missing row; verification finds both by key.
    dst.sql("UPDATE orders SET note = 'tampered' WHERE id = 31337");
    dst.sql("DELETE FROM tags WHERE order_id = 42");
    let r = ws.run(&["--output", "json", "migrate", "verify", "move.json"]);
    r.expect_code(5);
    let v = r.json();
    assert_eq!(v["passed"], false);
    assert!(
        !v.to_string().contains("source_from_copy")
            && !v.to_string().contains("target_from_stream"),
        "`migrate verify` has both databases hash their rows"
    );
    let diffs: Vec<(String, String, String)> = v["report"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["differences"].as_array().cloned().unwrap_or_default())
        .map(|d| {
            (
                d["table"].as_str().unwrap().to_owned(),
                d["key"].as_str().unwrap().to_owned(),
                d["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        diffs,
        vec![
            ("public.orders".into(), "31337".into(), "changed".into()),
            ("public.tags".into(), "tag0, 42".into(), "missing".into()),
        ]
    );
    ws.run(&["migrate", "report", "move.json"])
        .expect_code(0)
        .stdout_has("| `public.orders` | 31337 | changed |")
        .stdout_has("**no rule: fails**");
    let report = ws
        .run(&["--output", "json", "migrate", "report", "move.json"])
        .json();
    let orders = table(&report["report"]["copy"], "public.orders");
    assert_eq!(orders["rows"], 60000, "{orders}");
    assert_eq!(orders["chunks"], 60, "{orders}");

    // The DIBR guide's migration section: every table with both hashes, and the differences.
    ws.run(&["dibr", "-i", "inventory.yaml", "move.json", "-o", "dibr"])
        .expect_code(0);
    let md = std::fs::read_to_string(ws.path().join("dibr/dibr.md")).unwrap();
    let section = &md[md.find("## 21. Data migration").unwrap()..];
    let hash = report["report"]["verification"]["tables"][1]["target_sha256"]
        .as_str()
        .unwrap();
    assert!(section.contains(hash), "{section}");
    assert!(
        section.contains("| `public.orders` | 31337 | changed | none: the verification fails |"),
        "{section}"
    );
    assert!(section.contains("| `public.orders_id_seq` |"), "{section}");
    ws.run(&["ledger", "verify"]).expect_code(0);
}

/// The source stops mid-copy: the step fails naming that server, and once it is back a resume
/// finishes and verifies clean.
#[test]
fn a_source_that_stops_mid_copy_fails_the_step_by_name_and_a_resume_finishes() {
    let (src, _dst, ws) = clusters(55443, 55444);
    ws.write("plans/move.yaml", &plan("move", ""));
    ws.plan_file("move").expect_code(2);
    let child = ws.spawn(&["apply", "move.json"]);
    wait_for(&ws, "chunk_copied", 3);
    src.stop_now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PostgreSQL at 127.0.0.1:55443 (database `src`)"),
        "{err}"
    );
    src.restart();
    ws.run(&["apply", "--resume", "move.json"]).expect_code(0);
    let v = ws.events("migration_verified");
    assert_eq!(v.last().unwrap()["outcome"], "ok");
}

/// A target that holds tables is refused at plan time; `mode: replace` plans a manual step that
/// must be confirmed, and then the target's table is replaced. A column rule lets a column the
/// target rewrites differ, and the report names the rule.
#[test]
fn a_non_empty_target_is_refused_unless_replace_is_confirmed() {
    let (_src, dst, ws) = clusters(55445, 55446);
    dst.sql("CREATE TABLE orders (id int PRIMARY KEY, old text); INSERT INTO orders VALUES (1, 'old'); ALTER TABLE orders OWNER TO probe");
    ws.write("plans/move.yaml", &plan("move", ""));
    ws.plan_file("move")
        .expect_code(1)
        .stderr_has("the target is not empty: 1 relation(s) (public.orders)")
        .stderr_has("mode: replace");
    ws.write(
        "plans/replace.yaml",
        &plan(
            "replace",
            "mode: replace\nrules:\n  - { name: stamp, table: kinds, columns: [ts], reason: the target's clock }\n",
        ),
    );
    ws.plan_file("replace").expect_code(2);
    // A copy of the plan with its rule dropped, applied from another state directory with
    // --trust-plan-file: its body is not what its inputs produce, so it is refused.
    let edited = std::fs::read_to_string(ws.path().join("replace.json"))
        .unwrap()
        .replace("\"stamp\"", "\"stamp2\"");
    ws.write("edited.json", &edited);
    let out = ws
        .cmd(&["apply", "--trust-plan-file", "edited.json"])
        .env("FERRY_STATE_DIR", ws.path().join("other-state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(dst.sql("SELECT old FROM orders"), "old");
    ws.run(&["apply", "replace.json"])
        .stdout_has("confirm-replace");
    assert_eq!(
        dst.sql("SELECT old FROM orders"),
        "old",
        "nothing replaced yet"
    );
    ws.run(&[
        "apply",
        "--resume",
        "--confirm",
        "confirm-replace",
        "replace.json",
    ])
    .expect_code(0);
    assert_eq!(dst.sql("SELECT count(*) FROM orders"), "60000");
    dst.sql("UPDATE kinds SET ts = now()");
    ws.run(&["migrate", "verify", "replace.json"])
        .expect_code(0)
        .stdout_has("`public.kinds.ts` not compared: rule `stamp`");
}

/// An extension at another version on the target is a preflight finding before anything moves.
#[test]
fn an_extension_the_target_lacks_is_found_at_preflight() {
    let (src, dst, ws) = clusters(55447, 55448);
    src.sql("CREATE EXTENSION hstore VERSION '1.4'");
    ws.write("plans/move.yaml", &plan("move", ""));
    ws.plan_file("move")
        .expect_code(1)
        .stderr_has("extension `hstore` is 1.4 on the source, 1.8 on the target");
    assert_eq!(
        dst.sql("SELECT count(*) FROM pg_class WHERE relname = 'orders'"),
        "0"
    );
}

/// Bad plans, no server needed: every problem of the file at once, each located.
#[test]
fn bad_migration_plans_are_reported_at_once_with_their_lines() {
    let ws = Workspace::new();
    let mut inv = Workspace::inventory("");
    inv.push_str("databases:\n  - { id: a, engine: postgres, postgres: { host: 127.0.0.1, port: 5432, dbname: app, user: u, tls: disable } }\n");
    ws.write("inventory.yaml", &inv);
    ws.write(
        "plans/bad.yaml",
        "version: 1\nkind: migration\nname: bad\nsource: a\ntarget: a\nrules:\n  - { name: r, table: \"\", reason: because }\nexclude:\n  - { table: nope, reason: \"\" }\n",
    );
    ws.write(
        "plans/unknown.yaml",
        "version: 1\nkind: migration\nname: unknown\nsource: nowhere\ntarget: a\n",
    );
    let r = ws.run(&[
        "validate",
        "-i",
        "inventory.yaml",
        "plans/bad.yaml",
        "plans/unknown.yaml",
    ]);
    r.expect_code(1)
        .stderr_has("plans/bad.yaml:5")
        .stderr_has("the target is the source (`a`)")
        .stderr_has("plans/bad.yaml:7")
        .stderr_has("the rule names no table")
        .stderr_has("plans/bad.yaml:9")
        .stderr_has("say why the table is not copied")
        .stderr_has("plans/unknown.yaml:4")
        .stderr_has("database `nowhere` is not in the inventory");
}

/// A chunk whose marker row is on the target is adopted by the copy without copying it (what a
/// resume does after a kill between the chunk's commit and its ledger record) — and when its
/// rows are in fact not there, the verification, which hashes the target's own rows, finds them
/// missing by key: it does not trust the copy. (A chunk of orders that tags refer to would be
/// caught earlier, by the foreign key built after the data.)
#[test]
fn an_adopted_chunk_is_recorded_as_recovered_and_verification_does_not_trust_it() {
    let (_src, dst, ws) = clusters(55449, 55450);
    ws.write("plans/move.yaml", &plan("move", ""));
    ws.plan_file("move").expect_code(2);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path().join("move.json")).unwrap())
            .unwrap();
    let id = saved["id"].as_str().unwrap();
    dst.sql(&format!(
        "CREATE SCHEMA ferry_migration; CREATE TABLE ferry_migration.chunks (plan_id text NOT NULL, chunk text NOT NULL, rows bigint NOT NULL, bytes bigint NOT NULL, PRIMARY KEY (plan_id, chunk)); INSERT INTO ferry_migration.chunks VALUES ('{id}', 'public.orders#10', 1000, 1); ALTER SCHEMA ferry_migration OWNER TO probe; ALTER TABLE ferry_migration.chunks OWNER TO probe"
    ));
    let r = ws.run(&["apply", "move.json"]);
    r.expect_code(5)
        .stderr_has("key 10001 missing on the target");
    let adopted: Vec<_> = ws
        .events("chunk_copied")
        .into_iter()
        .filter(|e| e["detail"]["recovered"] == true)
        .collect();
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    assert_eq!(adopted[0]["detail"]["chunk"], "public.orders#10");
    assert_eq!(
        dst.sql("SELECT count(*) FROM orders WHERE id BETWEEN 10001 AND 11000"),
        "0"
    );
    let v = ws.events("migration_verified");
    let orders = &table(&v[0]["detail"]["report"]["tables"], "public.orders");
    assert_eq!(orders["target_rows"], 59000, "{orders}");
    assert_eq!(
        orders["differences"].as_array().unwrap().len() as u64
            + orders["differences_not_listed"].as_u64().unwrap_or(0),
        1000
    );
}

/// The target changes behind ferry's back between the copy and the verification (an event
/// trigger on the target rewrites a row when the indexes step creates an index): the target's
/// COPY stream of that chunk hashes differently from the copy's, so its database hashes the
/// chunk again (the report shows the database's hash, not the stream's) and the row is named.
/// Every other chunk's target side still comes from the stream.
#[test]
fn a_target_stream_hash_that_differs_is_hashed_again_by_the_database_and_the_row_named() {
    let (_src, dst, ws) = clusters(55453, 55454);
    dst.sql(
        "CREATE SCHEMA plant; \
CREATE FUNCTION plant.tamper() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN \
IF to_regclass('public.orders') IS NOT NULL THEN UPDATE public.orders SET note = 'tampered' WHERE id = 31337; END IF; END $$; \
CREATE EVENT TRIGGER tamper ON ddl_command_end WHEN TAG IN ('CREATE INDEX') EXECUTE FUNCTION plant.tamper()",
    );
    ws.write("plans/move.yaml", &plan("move", ""));
    ws.plan_file("move").expect_code(2);
    ws.run(&["apply", "move.json"])
        .expect_code(5)
        .stderr_has("its database hashed the chunk again");
    let v = ws.events("migration_verified");
    let orders = table(&v[0]["detail"]["report"]["tables"], "public.orders");
    let d = &orders["differences"];
    assert_eq!(d.as_array().unwrap().len(), 1, "{orders}");
    assert_eq!(
        (d[0]["key"].as_str(), d[0]["kind"].as_str()),
        (Some("31337"), Some("changed"))
    );
    let checks = orders["chunk_checks"].as_array().unwrap();
    let differing: Vec<&serde_json::Value> = checks
        .iter()
        .filter(|c| c["source_sha256"] != c["target_sha256"])
        .collect();
    assert_eq!(differing.len(), 1, "{orders}");
    assert_eq!(differing[0]["chunk"], "public.orders#31", "{orders}");
    assert_eq!(
        (
            differing[0].get("target_from_stream"),
            differing[0].get("source_from_copy")
        ),
        (None, None),
        "both sides of the differing chunk hashed again by their databases: {}",
        differing[0]
    );
    assert_eq!(
        checks
            .iter()
            .filter(|c| c["target_from_stream"] == true)
            .count(),
        checks.len() - 1,
        "{orders}"
    );
}

/// A migration's steps belong to its target database's site: they wait for that site's
/// maintenance window (exit 9, nothing done), and `--outside-window --reason` runs them,
/// recorded.
#[test]
fn a_migration_waits_for_its_target_sites_window() {
    let (_src, dst, ws) = clusters(55451, 55452);
    let at = chrono::Utc::now() + chrono::Duration::days(3);
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [chrono::Datelike::weekday(&at).num_days_from_monday() as usize];
    let inv = std::fs::read_to_string(ws.path().join("inventory.yaml"))
        .unwrap()
        .replace("{ id: dst,", "{ id: dst, site: clinic-a,")
        .replace(
            "  - { id: clinic-a, tier: sqa, clouds: [local] }",
            &format!("  - {{ id: clinic-a, tier: sqa, clouds: [local], maintenance_window: {{ days: [{day}], start: \"01:00\", duration_minutes: 60, timezone: UTC }} }}"),
        );
    ws.write("inventory.yaml", &inv);
    ws.write("plans/move.yaml", &plan("move", ""));
    ws.plan_file("move").expect_code(2);
    ws.run(&["apply", "move.json"])
        .expect_code(9)
        .stderr_has("clinic-a");
    assert_eq!(
        dst.sql("SELECT count(*) FROM pg_class WHERE relname = 'orders'"),
        "0"
    );
    ws.run(&[
        "apply",
        "--resume",
        "--outside-window",
        "--reason",
        "CAB-7: the move was approved for today",
        "move.json",
    ])
    .expect_code(0);
    assert_eq!(ws.events("window_overridden").len(), 1);
    assert_eq!(dst.sql("SELECT count(*) FROM orders"), "60000");
}

/// The indexes step fails half-way (a foreign key the copied rows break: the source holds an
/// orphan its own key never checked) and is resumed once the row is gone: what the failed run
/// built is kept — the same objects, not dropped and built again — and only the rest is built;
/// an index left invalid on the target (as a failed `CREATE INDEX CONCURRENTLY` leaves one) is
/// not taken for built.
#[test]
fn a_resumed_index_build_keeps_what_the_failed_run_built() {
    let (src, dst, ws) = clusters(55455, 55456);
    src.sql(
        "ALTER TABLE tags DISABLE TRIGGER ALL; INSERT INTO tags VALUES (999999, 'orphan'); \
ALTER TABLE tags ENABLE TRIGGER ALL",
    );
    ws.write("plans/move.yaml", &plan("move", ""));
    ws.plan_file("move").expect_code(2);
    ws.run(&["apply", "move.json"])
        .expect_code(5)
        .stderr_has("violates foreign key constraint");
    let objects = "SELECT coalesce(string_agg(relname || '=' || oid, ',' ORDER BY relname), '') \
FROM pg_class WHERE relkind = 'i' AND relnamespace = 'public'::regnamespace";
    let after_failure = dst.sql(objects);
    // The foreign key waits for the key it points to: that one at least was built.
    assert!(after_failure.contains("orders_pkey="), "{after_failure}");
    assert_eq!(
        dst.sql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"),
        "0"
    );

    src.sql("DELETE FROM tags WHERE order_id = 999999");
    dst.sql("DELETE FROM tags WHERE order_id = 999999");
    dst.sql("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'orders_pkey'::regclass");
    ws.run(&["apply", "--resume", "move.json"]).expect_code(0);
    let after_resume = dst.sql(objects);
    for kept in after_failure.split(',') {
        let rebuilt = !after_resume.split(',').any(|o| o == kept);
        assert_eq!(
            rebuilt,
            kept.starts_with("orders_pkey="),
            "{kept} after the resume: {after_resume}"
        );
    }
    assert_eq!(
        dst.sql("SELECT count(*) FROM pg_index WHERE NOT indisvalid"),
        "0"
    );
    assert_eq!(after_resume.split(',').count(), 4, "{after_resume}");
    assert_eq!(
        dst.sql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"),
        "1"
    );
    let v = ws.events("migration_verified");
    assert_eq!(v.last().unwrap()["outcome"], "ok");
}
