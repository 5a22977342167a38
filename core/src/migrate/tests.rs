use super::report::{RowHash, diff_rows, rollup};
use super::sql::*;
use super::*;

fn col(name: &str, ty: &str, collatable: bool) -> Column {
    Column {
        name: name.into(),
        type_name: ty.into(),
        binary: true,
        oid: 20,
        collatable,
    }
}

fn orders() -> Table {
    Table {
        schema: "public".into(),
        name: "orders".into(),
        columns: vec![col("id", "bigint", false), col("note", "text", true)],
        key: vec!["id".into()],
        rows_estimate: 1000,
        pages: 10,
        bytes: 81920,
    }
}

#[test]
fn names_are_quoted_and_values_are_literals() {
    assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
    assert_eq!(quote_literal("o'brien\\"), r"'o''brien\'");
    let mut t = orders();
    t.name = "Order\"s".into();
    assert_eq!(t.quoted(), r#""public"."Order""s""#);
}

#[test]
fn key_ranges_compare_text_keys_in_the_c_collation() {
    let mut t = orders();
    t.key = vec!["note".into(), "id".into()];
    let range = Range::Key {
        lower: Some(vec!["a'b".into(), "7".into()]),
        upper: None,
    };
    assert_eq!(
        predicate(&t, &range),
        r#"ROW("note" COLLATE "C", "id") >= ROW('a''b'::text COLLATE "C", '7'::bigint)"#
    );
    let one = Range::Key {
        lower: Some(vec!["5".into()]),
        upper: Some(vec!["9".into()]),
    };
    assert_eq!(
        predicate(&orders(), &one),
        r#""id" >= '5'::bigint AND "id" < '9'::bigint"#
    );
}

#[test]
fn chunks_from_starts_cover_every_key_once() {
    let t = orders();
    let c = key_chunks(&t, &[vec!["100".into()], vec!["200".into()]]);
    assert_eq!(c.len(), 3);
    assert_eq!(
        c[0].range,
        Range::Key {
            lower: None,
            upper: Some(vec!["100".into()])
        }
    );
    assert_eq!(
        c[2].range,
        Range::Key {
            lower: Some(vec!["200".into()]),
            upper: None
        }
    );
    assert_eq!(c[1].id(), "public.orders#1");
    assert_eq!(key_chunks(&t, &[]), vec![whole(&t)]);
}

#[test]
fn page_chunks_end_open_and_small_tables_are_whole() {
    let mut t = orders();
    t.key.clear();
    t.rows_estimate = 1000;
    t.pages = 10;
    let c = page_chunks(&t, 300);
    assert_eq!(c.len(), 4, "{c:?}");
    assert_eq!(
        c[0].range,
        Range::Pages {
            from: 0,
            to: Some(3)
        }
    );
    assert_eq!(c[3].range, Range::Pages { from: 9, to: None });
    assert_eq!(page_chunks(&t, 5000), vec![whole(&t)]);
    assert_eq!(
        predicate(&t, &c[1].range),
        "ctid >= '(3,0)'::tid AND ctid < '(6,0)'::tid"
    );
}

#[test]
fn copy_is_binary_only_for_built_in_types() {
    let mut t = orders();
    assert!(copy_out(&t, &whole(&t)).ends_with("TO STDOUT (FORMAT binary)"));
    assert_eq!(
        copy_in(&t),
        r#"COPY "public"."orders" ("id", "note") FROM STDIN (FORMAT binary)"#
    );
    t.columns[1].binary = false;
    assert!(copy_in(&t).ends_with("(FORMAT text)"));
}

#[test]
fn a_keyed_range_is_hashed_in_key_order_and_a_keyless_one_as_sorted_row_hashes() {
    let t = orders();
    let sql = range_hash(&t, &Range::All, &["note".into()]);
    assert!(
        sql.contains(r#"SELECT record_send(ROW("id")) AS r"#),
        "{sql}"
    );
    assert!(sql.contains(r#"ORDER BY "id") s"#), "{sql}");
    assert!(sql.contains("FROM ONLY"), "{sql}");
    assert!(
        copy_out(&t, &whole(&t)).contains(r#"ORDER BY "id") TO STDOUT"#),
        "the copy streams rows in the order the hash takes them"
    );
    let mut keyless = orders();
    keyless.key.clear();
    let sql = range_hash(&keyless, &Range::All, &["note".into()]);
    assert!(sql.contains(r#"sha256(record_send(ROW("id")))"#), "{sql}");
    assert!(sql.contains("ORDER BY h"), "{sql}");
    assert!(!copy_out(&keyless, &whole(&keyless)).contains("ORDER BY"));
    let mut t = orders();
    t.columns[1].binary = false;
    assert!(row_bytes(&t, &[]).contains(r#"ROW("id", "note"::text)"#));
}

#[test]
fn wide_rows_make_smaller_chunks() {
    let mut t = orders();
    t.rows_estimate = 1 << 20;
    t.bytes = 100 << 20;
    assert_eq!(rows_per_chunk(&t, 250_000), 250_000, "100 bytes a row");
    t.bytes = 64 << 30;
    assert_eq!(
        rows_per_chunk(&t, 250_000),
        1_024,
        "64 KiB a row: 64 MiB a chunk"
    );
    t.rows_estimate = -1;
    assert_eq!(
        rows_per_chunk(&t, 250_000),
        250_000,
        "never analysed: as asked"
    );
}

fn row(k: &str, h: &str) -> RowHash {
    (k.into(), h.into(), format!("({k},{h})"))
}

#[test]
fn row_differences_are_named_by_key() {
    let s = vec![row("1", "a"), row("2", "b"), row("3", "c")];
    let t = vec![row("1", "a"), row("2", "X"), row("4", "d")];
    let d = diff_rows("public.orders", &s, &t);
    let got: Vec<(&str, DifferenceKind)> = d.iter().map(|d| (d.key.as_str(), d.kind)).collect();
    assert_eq!(
        got,
        vec![
            ("2", DifferenceKind::Changed),
            ("3", DifferenceKind::Missing),
            ("4", DifferenceKind::Extra)
        ]
    );
}

#[test]
fn rows_without_a_key_are_a_multiset() {
    let s = vec![row("", "a"), row("", "a"), row("", "b")];
    let t = vec![row("", "a"), row("", "b"), row("", "b")];
    let d = diff_rows("public.log", &s, &t);
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].kind, DifferenceKind::Missing);
    assert_eq!(d[1].kind, DifferenceKind::Extra);
    assert!(d.iter().all(|d| d.key.is_empty()));
}

#[test]
fn a_rollup_depends_on_every_chunk_and_its_order() {
    let a = rollup(["x", "y"]);
    assert_ne!(a, rollup(["y", "x"]));
    assert_ne!(a, rollup(["x"]));
    assert_eq!(a, rollup(["x", "y"]));
}

#[test]
fn catalogs_report_missing_changed_and_extra_objects() {
    let item = |k: &str, n: &str, d: &str| CatalogItem {
        kind: k.into(),
        name: n.into(),
        definition: d.into(),
    };
    let s = vec![
        item("column", "public.t.a", "integer"),
        item("column", "public.t.b", "text"),
        item("index", "public.t_pkey", "btree (a)"),
    ];
    let t = vec![
        item("column", "public.t.a", "bigint"),
        item("column", "public.t.c", "text"),
    ];
    let f = compare_catalogs(&s, &t, &["column"]);
    let m: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(m[0].contains("public.t.a differs"), "{m:?}");
    assert!(m[1].contains("public.t.b is missing"), "{m:?}");
    assert!(m[2].contains("public.t.c is on the target only"), "{m:?}");
}

#[test]
fn rules_and_exclusions_must_name_source_tables_and_columns() {
    let spec = MigrationSpec {
        source: "a".into(),
        target: "b".into(),
        mode: crate::model::MigrationMode::Empty,
        max_parallel: 2,
        chunk_rows: 1000,
        exclude: vec![crate::model::Exclusion {
            table: "cache".into(),
            reason: "rebuilt".into(),
        }],
        rules: vec![crate::model::DiffRule {
            name: "stamp".into(),
            table: "orders".into(),
            columns: vec!["nope".into()],
            reason: "trigger".into(),
        }],
    };
    let problems = spec.unknown_tables(&[orders()]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("`cache`"));
    assert!(problems[1].contains("column `nope`"));
    assert_eq!(
        spec.skipped_columns("public.orders"),
        vec!["nope".to_string()]
    );
}

#[test]
fn an_extension_missing_or_at_another_version_on_the_target_is_a_finding() {
    use std::collections::BTreeMap;
    let installed: BTreeMap<String, String> = [
        ("plpgsql", "1.0"),
        ("hstore", "1.8"),
        ("postgis", "3.4.2"),
        ("citext", "1.6"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    let mut available = catalog::Available::new();
    available.insert("hstore".into(), (Some("1.8".into()), None));
    available.insert("citext".into(), (Some("1.6".into()), Some("1.5".into())));
    let f = catalog::extension_findings(&installed, &available, "PostgreSQL at h:1 (database `b`)");
    let m: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(
        m,
        vec![
            "extension `citext` is 1.6 on the source, 1.5 on the target",
            "extension `postgis` (3.4.2 on the source) is not available on the target server (PostgreSQL at h:1 (database `b`))",
        ]
    );
}

/// A binary COPY stream of two rows (bigint, text; one NULL): hashed the same fed whole or a byte
/// at a time, as `record_send` bytes, and a broken stream is refused.
#[test]
fn a_copy_stream_is_hashed_as_record_send_bytes_however_it_is_split() {
    use sha2::{Digest, Sha256};
    let mut s = b"PGCOPY\n\xff\r\n\0".to_vec();
    s.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    let row = |id: i64, note: Option<&str>| {
        let mut r = 2i16.to_be_bytes().to_vec();
        r.extend_from_slice(&8i32.to_be_bytes());
        r.extend_from_slice(&id.to_be_bytes());
        match note {
            Some(n) => {
                r.extend_from_slice(&(n.len() as i32).to_be_bytes());
                r.extend_from_slice(n.as_bytes());
            }
            None => r.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        r
    };
    s.extend(row(1, Some("a")));
    s.extend(row(2, None));
    s.extend_from_slice(&(-1i16).to_be_bytes());
    let fields = vec![Some(20), Some(25)];
    let hashed = |ordered: bool| {
        let mut whole = stream::CopyHasher::new(fields.clone(), ordered);
        whole.feed(&s).unwrap();
        let whole = whole.finish().unwrap();
        let mut bytewise = stream::CopyHasher::new(fields.clone(), ordered);
        for b in &s {
            bytewise.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(bytewise.finish().unwrap(), whole);
        // As a server sends it: the header (19 bytes) with the first row (19), then a row (18)
        // and the trailer a message each; and cut in the middle of a field.
        for cuts in [vec![19 + 19, 19 + 19 + 18], vec![19 + 9, 19 + 25]] {
            let mut pieces = stream::CopyHasher::new(fields.clone(), ordered);
            let mut from = 0;
            for to in cuts.into_iter().chain([s.len()]) {
                pieces.feed(&s[from..to]).unwrap();
                from = to;
            }
            assert_eq!(pieces.finish().unwrap(), whole);
        }
        let mut rows = stream::CopyHasher::new(fields.clone(), ordered);
        rows.feed(&s).unwrap();
        let (n, digest, row_hashes) = rows.finish_rows().unwrap();
        assert_eq!((n, digest), whole, "finish_rows digests as finish does");
        assert_eq!(row_hashes.len(), if ordered { 0 } else { 2 });
        whole
    };
    // record_send of (1, 'a') and (2, NULL): column count, then OID, length, value.
    let rec = |id: i64, note: Option<&str>| {
        let mut r = 2i32.to_be_bytes().to_vec();
        r.extend_from_slice(&20u32.to_be_bytes());
        r.extend_from_slice(&8i32.to_be_bytes());
        r.extend_from_slice(&id.to_be_bytes());
        r.extend_from_slice(&25u32.to_be_bytes());
        match note {
            Some(n) => {
                r.extend_from_slice(&(n.len() as i32).to_be_bytes());
                r.extend_from_slice(n.as_bytes());
            }
            None => r.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        r
    };
    // Keyed: the records in stream (key) order, hashed as one sequence.
    let in_order = [rec(1, Some("a")), rec(2, None)].concat();
    assert_eq!(hashed(true), (2, hex::encode(Sha256::digest(&in_order))));
    // Keyless: each record hashed, the hashes sorted and hashed again.
    let mut hs = [
        Sha256::digest(rec(1, Some("a"))).to_vec(),
        Sha256::digest(rec(2, None)).to_vec(),
    ];
    hs.sort();
    assert_eq!(hashed(false), (2, hex::encode(Sha256::digest(hs.concat()))));
    let mut cut = stream::CopyHasher::new(vec![Some(20), Some(25)], true);
    cut.feed(&s[..s.len() - 2]).unwrap();
    assert!(cut.finish().is_err(), "no trailer");
    let mut wrong = stream::CopyHasher::new(vec![Some(20)], false);
    assert!(wrong.feed(&s).is_err(), "two fields where one is expected");
}

#[test]
fn chunk_starts_are_read_by_moving_a_cursor_over_the_raw_keys() {
    let mut t = orders();
    t.key = vec!["note".into(), "id".into()];
    assert_eq!(
        chunk_cursor(&t),
        r#"DECLARE ferry_chunk_starts NO SCROLL CURSOR FOR SELECT "note", "id" FROM ONLY "public"."orders" ORDER BY "note" COLLATE "C", "id""#
    );
    // Rows 101, 201, 301: the first move skips 100 rows, the others 99 past the row fetched.
    assert_eq!(
        chunk_steps(100, true, 2),
        "MOVE FORWARD 100 IN ferry_chunk_starts; FETCH 1 FROM ferry_chunk_starts; \
MOVE FORWARD 99 IN ferry_chunk_starts; FETCH 1 FROM ferry_chunk_starts;"
    );
    assert!(chunk_steps(100, false, 1).starts_with("MOVE FORWARD 99 IN"));
}

#[test]
fn autovacuum_is_switched_off_for_the_copy_and_back_to_the_source_s_setting() {
    let t = orders();
    assert_eq!(
        autovacuum_off(&t),
        r#"ALTER TABLE "public"."orders" SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)"#
    );
    assert_eq!(
        autovacuum_as(&t, None, None),
        r#"ALTER TABLE "public"."orders" RESET (autovacuum_enabled, toast.autovacuum_enabled)"#
    );
    assert_eq!(
        autovacuum_as(&t, Some("off"), None),
        r#"ALTER TABLE "public"."orders" SET (autovacuum_enabled = 'off'), RESET (toast.autovacuum_enabled)"#
    );
    assert_eq!(
        autovacuum_as(&t, Some("o'x"), Some("true")),
        r#"ALTER TABLE "public"."orders" SET (autovacuum_enabled = 'o''x', toast.autovacuum_enabled = 'true')"#
    );
}

#[test]
fn autovacuum_is_restored_only_where_the_target_differs_from_the_source() {
    let t = orders();
    let mut other = orders();
    other.name = "other".into();
    let off = || [Some("false".to_string()), Some("false".to_string())];
    let source: AutovacuumSwitches =
        [("public.other".to_string(), [Some("off".into()), None])].into();
    let target: AutovacuumSwitches = [("public.orders".to_string(), off())].into();
    assert_eq!(
        autovacuum_restores(&[t.clone(), other.clone()], &source, &target),
        vec![
            autovacuum_as(&t, None, None),
            autovacuum_as(&other, Some("off"), None)
        ]
    );
    // Already as the source has them (or a copy that could not switch them off): nothing.
    assert!(autovacuum_restores(&[t.clone(), other.clone()], &source, &source).is_empty());
    assert!(
        autovacuum_restores(&[t], &AutovacuumSwitches::new(), &AutovacuumSwitches::new())
            .is_empty()
    );
}
