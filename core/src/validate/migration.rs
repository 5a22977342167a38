//! Checks of a migration plan: both databases in the inventory, reachable by SQL and distinct;
//! exclusions and rules that name a table; bucket copies between inventory buckets of `aws`
//! clouds that do not overlap; its `before`/`after` steps.

use std::collections::BTreeSet;

use crate::load::{Diagnostics, Loaded};
use crate::model::{BucketCopy, CloudKind, Inventory, MigrationPlan, qualified_table};

/// Every problem of a migration plan, each located by its field.
pub fn migration_plan(plan: &Loaded<MigrationPlan>, inv: &Inventory) -> Diagnostics {
    let mut out = Diagnostics::default();
    let p = &plan.value;
    let mut err = |path: String, msg: String| out.push(plan.problem(&path, msg));
    super::check_header(p.version, &p.name, &mut err);
    match (&p.source, &p.target) {
        (Some(source), Some(target)) => check_databases(source, target, inv, &mut err),
        (None, None) if p.buckets.is_empty() => err(
            "source".into(),
            "the plan moves nothing: name a `source` and `target` database, or `buckets`".into(),
        ),
        (None, None) => {}
        (Some(_), None) => err(
            "target".into(),
            "a `source` database needs a `target`".into(),
        ),
        (None, Some(_)) => err(
            "source".into(),
            "a `target` database needs a `source`".into(),
        ),
    }
    check_buckets(p, inv, &mut err);
    if p.max_parallel == 0 {
        err("max_parallel".into(), "must be at least 1".into());
    }
    if p.chunk_rows < 1000 {
        err(
            "chunk_rows".into(),
            format!(
                "{} is too small: at least 1000 rows per chunk",
                p.chunk_rows
            ),
        );
    }
    check_tables(p, &mut err);
    check_steps(p, inv, &mut err);
    out
}

fn check_databases(
    source: &str,
    target: &str,
    inv: &Inventory,
    err: &mut impl FnMut(String, String),
) {
    for (field, id) in [("source", source), ("target", target)] {
        match inv.database(id) {
            None => err(
                field.into(),
                format!("database `{id}` is not in the inventory"),
            ),
            Some(d) if d.postgres.is_none() => err(
                field.into(),
                format!("database `{id}` has no `postgres` connection: ferry copies data over SQL"),
            ),
            Some(d) if d.engine != "postgres" => err(
                field.into(),
                format!("database `{id}` is {}, not postgres", d.engine),
            ),
            Some(_) => {}
        }
    }
    if source == target {
        err(
            "target".into(),
            format!("the target is the source (`{source}`)"),
        );
    } else if let (Some(a), Some(b)) = (inv.database(source), inv.database(target))
        && let (Some(a), Some(b)) = (&a.postgres, &b.postgres)
        && (a.host.as_str(), a.port, a.dbname.as_str())
            == (b.host.as_str(), b.port, b.dbname.as_str())
    {
        err(
            "target".into(),
            format!(
                "`{source}` and `{target}` are the same database ({}:{}/{})",
                a.host, a.port, a.dbname
            ),
        );
    }
}

/// Exclusions and rules name a table (and rules a reason); a table is excluded once; a rule
/// does not name an excluded table.
fn check_tables(p: &MigrationPlan, err: &mut impl FnMut(String, String)) {
    let mut excluded = BTreeSet::new();
    for (n, x) in p.exclude.iter().enumerate() {
        if x.table.trim().is_empty() {
            err(format!("exclude[{n}].table"), "names no table".into());
        } else if !excluded.insert(qualified_table(&x.table)) {
            err(
                format!("exclude[{n}].table"),
                format!("`{}` is excluded twice", x.table),
            );
        }
        if x.reason.trim().is_empty() {
            err(
                format!("exclude[{n}].reason"),
                "say why the table is not copied".into(),
            );
        }
    }
    let mut names = BTreeSet::new();
    for (n, r) in p.rules.iter().enumerate() {
        if !names.insert(r.name.as_str()) || r.name.trim().is_empty() {
            err(
                format!("rules[{n}].name"),
                format!("rule name `{}` is empty or used twice", r.name),
            );
        }
        if r.table.trim().is_empty() {
            err(
                format!("rules[{n}].table"),
                "the rule names no table".into(),
            );
        } else if excluded.contains(&qualified_table(&r.table)) {
            err(
                format!("rules[{n}].table"),
                format!(
                    "`{}` is excluded: it is neither copied nor compared",
                    r.table
                ),
            );
        }
        if r.reason.trim().is_empty() {
            err(
                format!("rules[{n}].reason"),
                "say why the difference is allowed".into(),
            );
        }
        for (k, c) in r.columns.iter().enumerate() {
            if c.trim().is_empty() {
                err(format!("rules[{n}].columns[{k}]"), "is empty".into());
            }
        }
    }
}

/// Each copy has a unique name, names inventory buckets of `aws` clouds, and does not copy a
/// prefix onto itself (or into a prefix inside it, which would copy its own copies).
fn check_buckets(p: &MigrationPlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    let mut names = BTreeSet::new();
    for (n, b) in p.buckets.iter().enumerate() {
        let at = format!("buckets[{n}]");
        let name_ok = !b.name.is_empty()
            && b.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok || !names.insert(b.name.as_str()) {
            err(
                format!("{at}.name"),
                format!(
                    "copy name `{}` is empty, used twice, or not made of letters, digits, `-` and `_`",
                    b.name
                ),
            );
        }
        for (field, id) in [("source", &b.source), ("target", &b.target)] {
            match inv.bucket(id).map(|x| inv.cloud(&x.cloud)) {
                None => err(
                    format!("{at}.{field}"),
                    format!("bucket `{id}` is not in the inventory's `buckets`"),
                ),
                Some(Some(c)) if c.kind == CloudKind::Aws && c.aws.is_some() => {}
                Some(_) => err(
                    format!("{at}.{field}"),
                    format!("bucket `{id}` is not in a cloud with an `aws` section"),
                ),
            }
        }
        if b.max_parallel == 0 {
            err(format!("{at}.max_parallel"), "must be at least 1".into());
        }
        if !(5..=5120).contains(&b.part_size_mib) {
            err(
                format!("{at}.part_size_mib"),
                format!("{} MiB: S3 parts are 5 to 5120 MiB", b.part_size_mib),
            );
        }
        if let Some(why) = overlap(b, inv) {
            err(format!("{at}.target"), why);
        }
    }
}

/// Why a copy would read what it writes: the same bucket, one prefix inside the other.
fn overlap(b: &BucketCopy, inv: &Inventory) -> Option<String> {
    let (s, t) = (inv.bucket(&b.source)?, inv.bucket(&b.target)?);
    let same_place = |x: &crate::model::Cloud, y: &crate::model::Cloud| {
        let (x, y) = (x.aws.as_ref()?, y.aws.as_ref()?);
        Some(x.endpoint_url == y.endpoint_url && x.account == y.account)
    };
    let same_bucket =
        s.name == t.name && same_place(inv.cloud(&s.cloud)?, inv.cloud(&t.cloud)?).unwrap_or(false);
    let tp = b.target_prefix.as_deref().unwrap_or(&b.prefix);
    (same_bucket && (tp.starts_with(&b.prefix) || b.prefix.starts_with(tp))).then(|| {
        format!(
            "`{}` prefix `{tp}` overlaps the source prefix `{}` in the same bucket `{}`",
            b.target, b.prefix, s.name
        )
    })
}

fn check_steps(p: &MigrationPlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    let mut names = BTreeSet::new();
    let reserved: Vec<String> = p
        .buckets
        .iter()
        .flat_map(|b| {
            ["bucket-copy-", "bucket-verify-", "confirm-delete-"].map(|s| format!("{s}{}", b.name))
        })
        .chain(
            [
                "preflight",
                "confirm-replace",
                "schema",
                "copy",
                "indexes",
                "verify",
                "sequences",
            ]
            .map(String::from),
        )
        .collect();
    for (list, hooks) in [("before", &p.before), ("after", &p.after)] {
        for (k, hook) in hooks.iter().enumerate() {
            let at = format!("{list}[{k}]");
            if hook.name.trim().is_empty() || !names.insert(hook.name.as_str()) {
                err(
                    format!("{at}.name"),
                    format!("step name `{}` is empty or used twice", hook.name),
                );
            } else if reserved.contains(&hook.name) {
                err(
                    format!("{at}.name"),
                    format!(
                        "step name `{}` is the name of one of the migration's own steps",
                        hook.name
                    ),
                );
            }
            super::lines::hook_problems(hook, inv, &at, err);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::{self, SourceFile};

    const INV: &str = "version: 1\nsites: [{ id: s, tier: sqa, clouds: [l] }]\nclouds: [{ id: l, kind: local, local: { root: r } }, { id: c, kind: aws, aws: { account: '111111111111', region: r1 } }, { id: c2, kind: aws, aws: { account: '222222222222', region: r1 } }]\napps: []\ndatabases:\n  - { id: a, engine: postgres, postgres: { host: h, port: 5432, dbname: x, user: u, password: \"env:P\" } }\n  - { id: b, engine: postgres, postgres: { host: h, port: 5432, dbname: x, user: v, password: \"env:P\" } }\n  - { id: r, engine: postgres, cloud: c, identifier: i }\nbuckets:\n  - { id: b1, cloud: c, name: docs }\n  - { id: b2, cloud: c2, name: docs }\n  - { id: bl, cloud: l, name: docs }\n";

    fn problems(plan: &str) -> Vec<(usize, String, String)> {
        let inv = load::parse_inventory(SourceFile::new("i.yaml", INV)).unwrap();
        let p = load::parse_migration_plan(SourceFile::new("m.yaml", plan)).unwrap();
        let mut d = super::migration_plan(&p, &inv.value);
        d.sort();
        d.problems
            .iter()
            .map(|p| (p.line, p.path.clone(), p.message.clone()))
            .collect()
    }

    #[test]
    fn every_problem_of_a_migration_plan_is_located() {
        let got = problems(
            "version: 1\nkind: migration\nname: m\nsource: nowhere\ntarget: r\nchunk_rows: 10\nrules:\n  - { name: x, table: \"\", reason: \"\" }\n",
        );
        let paths: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "source",
                "target",
                "chunk_rows",
                "rules[0].table",
                "rules[0].reason"
            ],
            "{got:?}"
        );
        assert_eq!(got[0].0, 4);
        assert!(got[1].2.contains("no `postgres` connection"), "{got:?}");
    }

    /// Bucket copies name inventory buckets in `aws` clouds, unique names, parts S3 accepts,
    /// and never a prefix onto itself; a plan must move something.
    #[test]
    fn every_problem_of_a_bucket_copy_is_located() {
        let got = problems(
            "version: 1\nkind: migration\nname: m\nbuckets:\n  - { name: d, source: b1, target: nowhere, part_size_mib: 4 }\n  - { name: d, source: b1, target: b1, prefix: a/, target_prefix: a/b/, max_parallel: 0 }\n  - { name: ok, source: b1, target: b2 }\n  - { name: l, source: bl, target: b2 }\nafter:\n  - { name: bucket-copy-ok, command: [\"true\"] }\n",
        );
        let paths: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "buckets[0].target",
                "buckets[0].part_size_mib",
                "buckets[1].name",
                "buckets[1].target",
                "buckets[1].max_parallel",
                "buckets[3].source",
                "after[0].name",
            ],
            "{got:?}"
        );
        assert!(got[3].2.contains("overlaps the source prefix"), "{got:?}");
        assert!(
            got[5].2.contains("not in a cloud with an `aws` section"),
            "{got:?}"
        );
        let none = problems("version: 1\nkind: migration\nname: m\n");
        assert!(none[0].2.contains("moves nothing"), "{none:?}");
    }

    #[test]
    fn two_entries_for_the_same_database_are_the_same_database() {
        let got = problems("version: 1\nkind: migration\nname: m\nsource: a\ntarget: b\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].2.contains("are the same database (h:5432/x)"),
            "{got:?}"
        );
    }
}
