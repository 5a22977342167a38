//! Runbook actions that are a release plan's wave steps (`wait_until`, `http`, `command`,
//! `record`): their string arguments made into a `model::Hook` and compiled as a wave step is,
//! each problem reported on the argument it comes from.

use serde_json::Value;

use super::Args;
use crate::model::{
    Hook, HookAction, HttpCall, HttpProbe, Inventory, OnTimeout, ProbeSpec, SqlProbe, WaitUntil,
};
use crate::ops::Op;

/// The operation of a hook action; `None` for the other actions. A step with problems gives
/// a placeholder operation (its problems are in the diagnostics, so no plan is made).
pub(super) fn hook_op(action: &str, arg: &mut Args<'_>, inv: &Inventory) -> Option<Op> {
    let mut hook = Hook {
        name: arg.id.to_owned(),
        site: None,
        wait_until: None,
        http: None,
        command: None,
        undo: None,
        record: None,
    };
    match action {
        "wait_until" => hook.wait_until = Some(wait_until(arg)),
        "record" => hook.record = Some(probe(arg)),
        "http" => {
            hook.http = http(arg, "");
            hook.undo = http(arg, "undo_").map(|h| HookAction {
                http: Some(h),
                command: None,
            });
        }
        "command" => {
            hook.command = arg.optional("run").map(sh);
            hook.undo = arg.optional("undo").map(|u| HookAction {
                http: None,
                command: Some(sh(u)),
            });
        }
        _ => return None,
    }
    match crate::hooks::compile(&hook, inv) {
        Ok(op) => Some(op),
        Err(problems) => {
            for (field, msg) in problems {
                arg.problem(&argument(&field), msg);
            }
            Some(Op::Manual {
                instructions: String::new(),
            })
        }
    }
}

/// The runbook argument a wave-step field comes from (`wait_until.http.url` is `url`,
/// `undo.http.url` is `undo_url`, a secret header is `auth`).
fn argument(field: &str) -> String {
    if field.contains(".secret_headers.") {
        return "auth".into();
    }
    let key = field.rsplit('.').next().unwrap_or_default();
    if field.starts_with("undo.") {
        format!("undo_{key}")
    } else {
        key.to_owned()
    }
}

/// `auth` (a secret reference) as the `Authorization` header.
fn auth(arg: &Args<'_>) -> std::collections::BTreeMap<String, String> {
    arg.optional("auth")
        .map(|a| [("Authorization".to_owned(), a)].into())
        .unwrap_or_default()
}

fn sh(command: String) -> Vec<String> {
    vec!["sh".to_owned(), "-c".to_owned(), command]
}

/// A probe: `database` + `query`, `url` (+ `status`, `field`), or `command`.
fn probe(arg: &Args<'_>) -> ProbeSpec {
    ProbeSpec {
        sql: arg.optional("query").map(|query| SqlProbe {
            database: arg.optional("database").unwrap_or_default(),
            query,
        }),
        http: arg.optional("url").map(|url| HttpProbe {
            url,
            status: arg
                .optional("status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(200),
            field: arg.optional("field"),
            secret_headers: auth(arg),
        }),
        command: arg.optional("command").map(sh),
    }
}

fn wait_until(arg: &mut Args<'_>) -> WaitUntil {
    let ProbeSpec { sql, http, command } = probe(arg);
    let number = |k: &str| arg.optional(k).and_then(|v| v.parse::<f64>().ok());
    let (at_most, at_least) = (number("at_most"), number("at_least"));
    WaitUntil {
        sql,
        http,
        command,
        equals: arg
            .optional("equals")
            .map(|v| serde_json::from_str(&v).unwrap_or(Value::String(v))),
        at_most,
        at_least,
        every: arg.required("every"),
        stable_for: arg.optional("stable_for"),
        deadline: arg.required("deadline"),
        on_timeout: match arg.optional("on_timeout").as_deref() {
            Some("backout") => OnTimeout::Backout,
            _ => OnTimeout::Halt,
        },
    }
}

/// A call from `{prefix}method`, `{prefix}url`, `{prefix}body` (and the shared
/// `content_type`, `expect_status`, `timeout`); `None` without its URL.
fn http(arg: &Args<'_>, prefix: &str) -> Option<HttpCall> {
    Some(HttpCall {
        method: arg
            .optional(&format!("{prefix}method"))
            .unwrap_or_else(|| "POST".into()),
        url: arg.optional(&format!("{prefix}url"))?,
        body: arg.optional(&format!("{prefix}body")),
        content_type: arg.optional("content_type"),
        expect_status: arg.optional("expect_status").and_then(|s| s.parse().ok()),
        timeout: arg.optional("timeout").unwrap_or_else(|| "30s".into()),
        secret_headers: auth(arg),
    })
}
