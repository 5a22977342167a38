//! A wave's `before`/`after` steps as written (`model::Hook`) compiled into operations
//! (`ops::Op`): durations parsed, exactly one kind chosen, the comparison formed. Validation
//! reports every problem with its field; the planner compiles what validation accepted.

use crate::gate::{Compare, parse_duration};
use crate::model::{Hook, HookAction, HttpCall, Inventory, WaitUntil};
use crate::ops::{Action, Op, Probe};

/// A problem in one hook: the field under the hook (`wait_until.every`) and what is wrong.
pub type HookProblem = (String, String);

/// The operation a hook performs, or every problem found in it.
pub fn compile(hook: &Hook, inv: &Inventory) -> Result<Op, Vec<HookProblem>> {
    let mut p = Vec::new();
    let kinds = [
        hook.wait_until.is_some(),
        hook.http.is_some(),
        hook.command.is_some(),
        hook.record.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        p.push((
            String::new(),
            "give exactly one of `wait_until`, `http`, `command` or `record`".into(),
        ));
        return Err(p);
    }
    if hook.undo.is_some() && hook.http.is_none() && hook.command.is_none() {
        p.push((
            "undo".into(),
            "only an `http` or `command` step has an undo".into(),
        ));
    }
    let op = if let Some(w) = &hook.wait_until {
        wait_until(w, inv, &mut p)
    } else if let Some(r) = &hook.record {
        probe_of(
            r.sql.as_ref(),
            r.http.as_ref(),
            r.command.as_ref(),
            "record",
            inv,
            &mut p,
        )
        .map(|probe| Op::Record {
            label: hook.name.clone(),
            probe,
        })
    } else {
        let call = action(hook.http.as_ref(), hook.command.as_ref(), "", &mut p);
        let undo = hook
            .undo
            .as_ref()
            .and_then(|u: &HookAction| action(u.http.as_ref(), u.command.as_ref(), "undo", &mut p));
        call.map(|call| Op::Call { call, undo })
    };
    match op {
        Some(op) if p.is_empty() => Ok(op),
        _ => Err(p),
    }
}

fn wait_until(w: &WaitUntil, inv: &Inventory, p: &mut Vec<HookProblem>) -> Option<Op> {
    let probe = probe_of(
        w.sql.as_ref(),
        w.http.as_ref(),
        w.command.as_ref(),
        "wait_until",
        inv,
        p,
    );
    let compare = match (&w.equals, w.at_most, w.at_least) {
        (None, None, None) => None,
        (Some(v), None, None) => Some(Compare::Equals(v.clone())),
        (None, Some(m), None) => Some(Compare::AtMost(m)),
        (None, None, Some(m)) => Some(Compare::AtLeast(m)),
        _ => {
            p.push((
                "wait_until".into(),
                "give at most one of `equals`, `at_most` or `at_least`".into(),
            ));
            None
        }
    };
    if compare.is_some() && w.http.as_ref().is_some_and(|h| h.field.is_none()) {
        p.push((
            "wait_until.http.field".into(),
            "a comparison needs the `field` of the JSON body it compares".into(),
        ));
    }
    let mut secs = |field: &str, text: &str| match parse_duration(text) {
        Ok(s) => Some(s),
        Err(e) => {
            p.push((format!("wait_until.{field}"), e));
            None
        }
    };
    let every = secs("every", &w.every);
    let stable = w.stable_for.as_deref().map(|s| secs("stable_for", s));
    let deadline = secs("deadline", &w.deadline);
    if let (Some(e), Some(d)) = (every, deadline)
        && d < e
    {
        p.push((
            "wait_until.deadline".into(),
            format!(
                "deadline `{}` is shorter than `every` `{}`: the gate could never poll twice",
                w.deadline, w.every
            ),
        ));
    }
    Some(Op::WaitUntil {
        probe: probe?,
        compare,
        every_seconds: every?,
        stable_for_seconds: match stable {
            Some(s) => s?,
            None => 0,
        },
        deadline_seconds: deadline?,
        on_timeout: w.on_timeout,
    })
}

fn probe_of(
    sql: Option<&crate::model::SqlProbe>,
    http: Option<&crate::model::HttpProbe>,
    command: Option<&Vec<String>>,
    at: &str,
    inv: &Inventory,
    p: &mut Vec<HookProblem>,
) -> Option<Probe> {
    match (sql, http, command) {
        (Some(s), None, None) => {
            match inv.database(&s.database) {
                None => p.push((
                    format!("{at}.sql.database"),
                    format!("unknown database `{}`", s.database),
                )),
                Some(d) if d.postgres.is_none() => p.push((
                    format!("{at}.sql.database"),
                    format!(
                        "database `{}` has no `postgres` connection to query",
                        s.database
                    ),
                )),
                Some(_) => {}
            }
            if s.query.trim().is_empty() {
                p.push((format!("{at}.sql.query"), "the query is empty".into()));
            }
            Some(Probe::Sql {
                database: s.database.clone(),
                query: s.query.trim().trim_end_matches(';').trim().to_owned(),
            })
        }
        (None, Some(h), None) => {
            url_ok(&h.url, &format!("{at}.http.url"), p);
            headers_ok(&h.secret_headers, &format!("{at}.http.secret_headers"), p);
            Some(Probe::Http {
                url: h.url.clone(),
                status: h.status,
                field: h.field.clone(),
                secret_headers: h.secret_headers.clone(),
            })
        }
        (None, None, Some(argv)) => {
            argv_ok(argv, &format!("{at}.command"), p);
            Some(Probe::Command { argv: argv.clone() })
        }
        _ => {
            p.push((
                at.into(),
                "give exactly one probe: `sql`, `http` or `command`".into(),
            ));
            None
        }
    }
}

fn action(
    http: Option<&HttpCall>,
    command: Option<&Vec<String>>,
    at: &str,
    p: &mut Vec<HookProblem>,
) -> Option<Action> {
    let field = |f: &str| {
        if at.is_empty() {
            f.to_owned()
        } else {
            format!("{at}.{f}")
        }
    };
    match (http, command) {
        (Some(h), None) => {
            url_ok(&h.url, &field("http.url"), p);
            let method = h.method.to_ascii_uppercase();
            if !["POST", "PUT", "PATCH", "DELETE", "GET"].contains(&method.as_str()) {
                p.push((
                    field("http.method"),
                    format!("`{}` is not one of POST, PUT, PATCH, DELETE, GET", h.method),
                ));
            }
            let timeout = match parse_duration(&h.timeout) {
                Ok(s) => s,
                Err(e) => {
                    p.push((field("http.timeout"), e));
                    30
                }
            };
            headers_ok(&h.secret_headers, &field("http.secret_headers"), p);
            Some(Action::Http {
                method,
                url: h.url.clone(),
                body: h.body.clone(),
                content_type: h.content_type.clone(),
                expect_status: h.expect_status,
                timeout_seconds: timeout,
                secret_headers: h.secret_headers.clone(),
            })
        }
        (None, Some(argv)) => {
            argv_ok(argv, &field("command"), p);
            Some(Action::Command { argv: argv.clone() })
        }
        _ => {
            p.push((
                if at.is_empty() {
                    String::new()
                } else {
                    at.into()
                },
                "give exactly one of `http` or `command`".into(),
            ));
            None
        }
    }
}

fn url_ok(url: &str, at: &str, p: &mut Vec<HookProblem>) {
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok {
        p.push((
            at.into(),
            format!("`{url}` is not an http:// or https:// URL"),
        ));
    } else if url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|authority| authority.contains('@'))
    {
        p.push((
            at.into(),
            "credentials in a URL end up in plans, logs and the ledger: remove them".into(),
        ));
    }
}

/// Header names are HTTP tokens; values are secret references, never the secret.
fn headers_ok(
    headers: &std::collections::BTreeMap<String, String>,
    at: &str,
    p: &mut Vec<HookProblem>,
) {
    for (name, value) in headers {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            p.push((
                format!("{at}.{name}"),
                format!("`{name}` is not an HTTP header name"),
            ));
        }
        if crate::secret::SecretRef::parse(value).is_err() {
            p.push((
                format!("{at}.{name}"),
                "a secret header's value is a secret reference (`env:NAME` or `file:PATH`), never the secret itself".into(),
            ));
        }
    }
}

fn argv_ok(argv: &[String], at: &str, p: &mut Vec<HookProblem>) {
    if argv.is_empty() || argv[0].trim().is_empty() {
        p.push((at.into(), "the command is empty".into()));
    }
}
