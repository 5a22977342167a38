//! Checks of app lines (majors side by side), SQL-reachable databases, and a release plan's
//! lines, retirements and wave steps (`before`/`after`: gates, calls, records).

use std::collections::BTreeSet;

use crate::model::{Inventory, ReleasePlan, major_of};
use crate::secret::SecretRef;

/// An app's `lines`: each major once, and the version of record on one of them.
pub(super) fn check_lines(i: &Inventory, err: &mut impl FnMut(String, String)) {
    for (n, app) in i.apps.iter().enumerate() {
        if app.lines.is_empty() {
            continue;
        }
        let mut seen = BTreeSet::new();
        for (k, l) in app.lines.iter().enumerate() {
            if !seen.insert(l.major) {
                err(
                    format!("apps[{n}].lines[{k}].major"),
                    format!("major {} is listed twice", l.major),
                );
            }
        }
        match major_of(&app.version) {
            Some(m) if seen.contains(&m) => {}
            _ => err(
                format!("apps[{n}].version"),
                format!(
                    "version `{}` is on none of the app's lines ({})",
                    app.version,
                    majors(&seen)
                ),
            ),
        }
    }
}

fn majors(set: &BTreeSet<u64>) -> String {
    set.iter()
        .map(|m| format!("{m}.x"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A database is RDS (`cloud` and `identifier`), reachable by SQL (`postgres`), or both; a
/// connection's password is a secret reference, never a literal.
pub(super) fn check_databases(i: &Inventory, err: &mut impl FnMut(String, String)) {
    for (n, d) in i.databases.iter().enumerate() {
        let at = format!("databases[{n}]");
        if d.is_rds() && d.identifier.trim().is_empty() {
            err(
                format!("{at}.identifier"),
                "an RDS database needs its instance `identifier`".into(),
            );
        }
        if !d.is_rds() && d.postgres.is_none() {
            err(
                at.clone(),
                "give the RDS instance (`cloud` and `identifier`), a `postgres` connection, or both"
                    .into(),
            );
        }
        let Some(pg) = &d.postgres else { continue };
        let at = format!("{at}.postgres");
        for (field, value) in [
            ("host", &pg.host),
            ("dbname", &pg.dbname),
            ("user", &pg.user),
        ] {
            if value.trim().is_empty() {
                err(format!("{at}.{field}"), "is empty".into());
            } else if value.contains("://")
                || value.contains('=')
                || value.contains(char::is_whitespace)
            {
                err(
                    format!("{at}.{field}"),
                    format!(
                        "`{value}` looks like a connection string: give the {field} alone (the password is a secret reference in `password`)"
                    ),
                );
            }
        }
        if pg.port == 0 {
            err(format!("{at}.port"), "must be at least 1".into());
        }
        if let Some(p) = &pg.password
            && SecretRef::parse(p).is_err()
        {
            err(
                format!("{at}.password"),
                "a password is a secret reference (`env:NAME` or `file:PATH`), never the password itself: it would end up in plans and the ledger".into(),
            );
        }
        if let Err(e) = crate::gate::parse_duration(&pg.timeout) {
            err(format!("{at}.timeout"), e);
        }
        if pg.ca_file.is_some() && pg.tls == crate::model::PgTls::Disable {
            err(
                format!("{at}.ca_file"),
                "`ca_file` checks the server's certificate: it needs `tls: verify-full`".into(),
            );
        }
    }
}

/// A release names an app of the inventory: an app with lines is named by line
/// (`ecrnow@3`), and the version's major is the line's.
pub(super) fn check_release_app(
    at: &str,
    app: &str,
    version: Option<&str>,
    inv: &Inventory,
    err: &mut impl FnMut(String, String),
) {
    let Some(a) = inv.app(app) else {
        let lines: Vec<&str> = inv
            .apps
            .iter()
            .filter(|a| a.line.is_some() && a.base_id() == app)
            .map(|a| a.id.as_str())
            .collect();
        let msg = if lines.is_empty() {
            format!("app `{app}` is not in the inventory's `apps`")
        } else {
            format!(
                "app `{app}` runs side by side in lines: name one ({})",
                lines.join(", ")
            )
        };
        err(format!("{at}.app"), msg);
        return;
    };
    if let (Some(line), Some(v)) = (a.line, version)
        && major_of(v) != Some(line)
    {
        err(
            format!("{at}.version"),
            format!("version `{v}` is not on line `{}` (major {line})", a.id),
        );
    }
}

/// Retirements: apps of the inventory, not released by the same plan.
pub(super) fn check_retire(p: &ReleasePlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    for (n, r) in p.retire.iter().enumerate() {
        let at = format!("retire[{n}]");
        check_release_app(&at, &r.app, None, inv, err);
        if p.releases.iter().any(|x| x.app == r.app) {
            err(
                format!("{at}.app"),
                format!("app `{}` is both released and retired by this plan", r.app),
            );
        }
    }
}

/// The waves' `before`/`after` steps: each compiles (one kind, durations, probes), names are
/// unique in the plan, and a step's site is one of its wave's.
pub(super) fn check_hooks(p: &ReleasePlan, inv: &Inventory, err: &mut impl FnMut(String, String)) {
    let mut names = BTreeSet::new();
    for (w, wave) in p.waves.iter().enumerate() {
        for (list, hooks) in [("before", &wave.before), ("after", &wave.after)] {
            for (k, hook) in hooks.iter().enumerate() {
                let at = format!("waves[{w}].{list}[{k}]");
                if !names.insert(hook.name.as_str()) {
                    err(
                        format!("{at}.name"),
                        format!("step name `{}` is used twice in this plan", hook.name),
                    );
                }
                if hook.name.trim().is_empty() {
                    err(format!("{at}.name"), "is empty".into());
                }
                if let Some(s) = &hook.site
                    && !wave.sites.contains(s)
                {
                    err(
                        format!("{at}.site"),
                        format!("site `{s}` is not in wave `{}`", wave.name),
                    );
                }
                hook_problems(hook, inv, &at, err);
            }
        }
    }
}

/// A wave step's own problems (kind, durations, probe...), each at its field under `at`.
pub(super) fn hook_problems(
    hook: &crate::model::Hook,
    inv: &Inventory,
    at: &str,
    err: &mut impl FnMut(String, String),
) {
    if let Err(problems) = crate::hooks::compile(hook, inv) {
        for (field, msg) in problems {
            let path = if field.is_empty() {
                at.to_owned()
            } else {
                format!("{at}.{field}")
            };
            err(path, msg);
        }
    }
}
