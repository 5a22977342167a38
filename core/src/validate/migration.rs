//! Checks of a migration plan: both databases in the inventory, reachable by SQL and distinct;
//! exclusions and rules that name a table; its `before`/`after` steps.

use std::collections::BTreeSet;

use crate::load::{Diagnostics, Loaded};
use crate::model::{Inventory, MigrationPlan, qualified_table};

/// Every problem of a migration plan, each located by its field.
pub fn migration_plan(plan: &Loaded<MigrationPlan>, inv: &Inventory) -> Diagnostics {
    let mut out = Diagnostics::default();
    let p = &plan.value;
    let mut err = |path: String, msg: String| out.push(plan.problem(&path, msg));
    super::check_header(p.version, &p.name, &mut err);
    check_databases(p, inv, &mut err);
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

fn check_databases(p: &MigrationPlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    for (field, id) in [("source", &p.source), ("target", &p.target)] {
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
    if p.source == p.target {
        err(
            "target".into(),
            format!("the target is the source (`{}`)", p.source),
        );
    } else if let (Some(a), Some(b)) = (inv.database(&p.source), inv.database(&p.target))
        && let (Some(a), Some(b)) = (&a.postgres, &b.postgres)
        && (a.host.as_str(), a.port, a.dbname.as_str())
            == (b.host.as_str(), b.port, b.dbname.as_str())
    {
        err(
            "target".into(),
            format!(
                "`{}` and `{}` are the same database ({}:{}/{})",
                p.source, p.target, a.host, a.port, a.dbname
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

fn check_steps(p: &MigrationPlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    let mut names = BTreeSet::new();
    for (list, hooks) in [("before", &p.before), ("after", &p.after)] {
        for (k, hook) in hooks.iter().enumerate() {
            let at = format!("{list}[{k}]");
            if hook.name.trim().is_empty() || !names.insert(hook.name.as_str()) {
                err(
                    format!("{at}.name"),
                    format!("step name `{}` is empty or used twice", hook.name),
                );
            }
            super::lines::hook_problems(hook, inv, &at, err);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::{self, SourceFile};

    const INV: &str = "version: 1\nsites: [{ id: s, tier: sqa, clouds: [l] }]\nclouds: [{ id: l, kind: local, local: { root: r } }]\napps: []\ndatabases:\n  - { id: a, engine: postgres, postgres: { host: h, port: 5432, dbname: x, user: u, password: \"env:P\" } }\n  - { id: b, engine: postgres, postgres: { host: h, port: 5432, dbname: x, user: v, password: \"env:P\" } }\n  - { id: r, engine: postgres, cloud: c, identifier: i }\n";

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
