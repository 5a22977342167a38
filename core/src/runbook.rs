//! Runbooks to plans: parameters checked and typed, step arguments rendered (Tera), each step
//! turned into an [`Op`]. Pure: the runbook, the inventory and the `--param` values in, the
//! draft steps out. What needs the cloud (which snapshot is the latest before a time, the
//! engine version running now) is left in [`Draft::choose`] for the edge to fill in.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::load::{Diagnostics, Loaded, Problem};
use crate::model::{FORMAT_VERSION, Inventory, ParamType, Runbook};
use crate::ops::Op;

mod actions;

/// One runbook step, ready for the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub id: String,
    pub title: String,
    pub on_failure: Option<String>,
    pub op: Op,
    /// A restore whose snapshot is chosen from the cloud's list when the plan is made.
    pub choose: Option<Choose>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choose {
    pub named: Option<String>,
    pub before: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// Parameter values after defaults, as typed JSON (recorded in the plan for reviewers).
    pub params: BTreeMap<String, Value>,
    pub steps: Vec<Draft>,
}

const ACTIONS: &[(&str, &[&str])] = &[
    ("manual", &["instructions"]),
    (
        "rds.snapshot",
        &["database", "snapshot_id", "timeout_seconds"],
    ),
    (
        "rds.restore",
        &[
            "database",
            "snapshot",
            "before",
            "new_identifier",
            "instance_class",
        ],
    ),
    ("rds.wait", &["database", "identifier", "timeout_seconds"]),
    (
        "rds.verify",
        &[
            "database",
            "identifier",
            "engine_version",
            "probe",
            "timeout_seconds",
        ],
    ),
    ("rds.rename", &["database", "from", "to", "timeout_seconds"]),
    ("rds.delete", &["database", "identifier", "timeout_seconds"]),
    // The steps a release plan's waves have (crate::hooks), with their fields as arguments.
    // A probe is `database` + `query` (SQL), `url` (+ `status`, `field`), or `command` (sh -c);
    // `auth` is a secret reference sent as the `Authorization` header.
    (
        "wait_until",
        &[
            "database",
            "query",
            "url",
            "status",
            "field",
            "auth",
            "command",
            "equals",
            "at_most",
            "at_least",
            "every",
            "stable_for",
            "deadline",
            "on_timeout",
        ],
    ),
    (
        "http",
        &[
            "method",
            "url",
            "body",
            "content_type",
            "expect_status",
            "timeout",
            "auth",
            "undo_method",
            "undo_url",
            "undo_body",
        ],
    ),
    ("command", &["run", "undo"]),
    (
        "record",
        &[
            "database", "query", "url", "status", "field", "auth", "command",
        ],
    ),
];

fn cli_problem(message: String) -> Problem {
    Problem {
        file: "command line".into(),
        line: 0,
        column: 0,
        path: String::new(),
        message,
    }
}

/// Checks the runbook and the given parameters and renders every step.
pub fn compile(
    rb: &Loaded<Runbook>,
    inv: &Inventory,
    args: &BTreeMap<String, String>,
) -> Result<Compiled, Diagnostics> {
    let mut diags = Diagnostics::default();
    check_header(rb, args, &mut diags);
    let (params, database) = resolve_params(rb, inv, args, &mut diags);
    if !diags.is_empty() {
        diags.sort();
        return Err(diags);
    }
    let mut steps = Vec::new();
    for (n, s) in rb.value.steps.iter().enumerate() {
        let at = format!("steps[{n}]");
        let vars = Vars {
            params: &params,
            database: database.as_ref(),
        };
        let Some(with) = render_with(rb, &at, s, &vars, &mut diags) else {
            continue;
        };
        let mut arg = Args {
            rb,
            id: &s.id,
            at: &at,
            with: &with,
            diags: &mut diags,
        };
        let (op, choose) = step_op(&s.action, &mut arg, inv);
        for id in identifiers(&op) {
            if !is_rds_identifier(id) {
                arg.problem(
                    "",
                    format!("`{id}` is not a valid RDS identifier (a letter first, then letters, digits and single hyphens, at most 63)"),
                );
            }
        }
        steps.push(Draft {
            id: s.id.clone(),
            title: s.title.clone(),
            on_failure: s.on_failure.clone(),
            op,
            choose,
        });
    }
    diags.into_result()?;
    Ok(Compiled { params, steps })
}

/// The format version, parameters given that the runbook does not declare, step ids
/// (identifiers, each once), and at least one step.
fn check_header(rb: &Loaded<Runbook>, args: &BTreeMap<String, String>, diags: &mut Diagnostics) {
    let r = &rb.value;
    if r.version != FORMAT_VERSION {
        diags.push(rb.problem(
            "version",
            format!(
                "unsupported runbook format version {} (this ferry reads version {FORMAT_VERSION})",
                r.version
            ),
        ));
    }
    let declared: BTreeSet<&str> = r.params.iter().map(|p| p.name.as_str()).collect();
    for name in args.keys() {
        if !declared.contains(name.as_str()) {
            diags.push(cli_problem(format!(
                "--param {name}: runbook `{}` has no parameter `{name}` (it has: {})",
                r.name,
                declared.iter().copied().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let mut seen = BTreeSet::new();
    for (n, s) in r.steps.iter().enumerate() {
        if !crate::validate::is_identifier(&s.id) {
            diags.push(rb.problem(
                &format!("steps[{n}].id"),
                format!(
                    "`{}` is not an identifier (letters, digits, `-`, `_`)",
                    s.id
                ),
            ));
        }
        if !seen.insert(s.id.as_str()) {
            diags.push(rb.problem(
                &format!("steps[{n}].id"),
                format!("step id `{}` is used twice", s.id),
            ));
        }
    }
    if r.steps.is_empty() {
        diags.push(rb.problem("steps", "the runbook has no steps"));
    }
}

/// Parameters in order, typed: given on the command line, or defaulted (a default may use
/// earlier parameters and the database). The first `database` parameter's inventory entry is
/// what templates see as `database`.
fn resolve_params(
    rb: &Loaded<Runbook>,
    inv: &Inventory,
    args: &BTreeMap<String, String>,
    diags: &mut Diagnostics,
) -> (BTreeMap<String, Value>, Option<Value>) {
    let r = &rb.value;
    let mut params: BTreeMap<String, Value> = BTreeMap::new();
    let mut database: Option<Value> = None;
    for (n, p) in r.params.iter().enumerate() {
        let at = format!("params[{n}]");
        let (raw, from_cli) = match (args.get(&p.name), &p.default) {
            (Some(v), _) => (v.clone(), true),
            (None, Some(d)) => match render(d, &params, database.as_ref()) {
                Ok(v) => (v, false),
                Err(e) => {
                    diags.push(rb.problem(&format!("{at}.default"), e));
                    continue;
                }
            },
            (None, None) => {
                diags.push(cli_problem(format!(
                    "runbook `{}` needs --param {}=<{}>{}",
                    r.name,
                    p.name,
                    p.ty.as_str(),
                    p.description
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )));
                continue;
            }
        };
        match typed(p.ty, &raw, inv) {
            Ok(v) => {
                if p.ty == ParamType::Database && database.is_none() {
                    let db = inv.database(&raw).expect("typed checked it");
                    database = Some(serde_json::to_value(db).expect("databases serialize"));
                }
                params.insert(p.name.clone(), v);
            }
            Err(e) => {
                let message = format!("parameter `{}`: {e}", p.name);
                if from_cli {
                    diags.push(cli_problem(format!("--param {}", message)));
                } else {
                    diags.push(rb.problem(&format!("{at}.default"), message));
                }
            }
        }
    }
    (params, database)
}

/// What a step's arguments are rendered with.
struct Vars<'a> {
    params: &'a BTreeMap<String, Value>,
    database: Option<&'a Value>,
}

/// The step's arguments rendered, each one its action takes; `None` for an unknown action.
fn render_with<'s>(
    rb: &Loaded<Runbook>,
    at: &str,
    s: &'s crate::model::RunbookStep,
    vars: &Vars<'_>,
    diags: &mut Diagnostics,
) -> Option<BTreeMap<&'s str, String>> {
    let Some((_, allowed)) = ACTIONS.iter().find(|(a, _)| *a == s.action) else {
        diags.push(rb.problem(
            &format!("{at}.action"),
            format!(
                "unknown action `{}` (one of: {})",
                s.action,
                ACTIONS.iter().map(|(a, _)| *a).collect::<Vec<_>>().join(", ")
            ),
        ));
        return None;
    };
    let mut with = BTreeMap::new();
    for (k, v) in &s.with {
        if !allowed.contains(&k.as_str()) {
            diags.push(rb.problem(
                &format!("{at}.with.{k}"),
                format!(
                    "`{}` takes no argument `{k}` (it takes: {})",
                    s.action,
                    allowed.join(", ")
                ),
            ));
            continue;
        }
        match render(v, vars.params, vars.database) {
            Ok(text) => {
                with.insert(k.as_str(), text.trim().to_owned());
            }
            Err(e) => diags.push(rb.problem(&format!("{at}.with.{k}"), e)),
        }
    }
    Some(with)
}

/// The operation a step of a known `action` performs, from its rendered arguments (and, for a
/// restore, how its snapshot is to be chosen when the plan is made).
fn step_op(action: &str, arg: &mut Args<'_>, inv: &Inventory) -> (Op, Option<Choose>) {
    if let Some(op) = actions::hook_op(action, arg, inv) {
        return (op, None);
    }
    let database_id = if action == "manual" {
        String::new()
    } else {
        arg.database(inv)
    };
    let db = inv.database(&database_id);
    let ident = db.map(|d| d.identifier.clone()).unwrap_or_default();
    let timeout = arg.seconds("timeout_seconds", 3600);
    let mut choose = None;
    let op = match action {
        "manual" => Op::Manual {
            instructions: arg.required("instructions"),
        },
        "rds.snapshot" => Op::RdsSnapshot {
            database: database_id,
            identifier: ident,
            snapshot_id: arg.optional("snapshot_id"),
            timeout_seconds: timeout,
        },
        "rds.restore" => {
            let before = arg.optional("before");
            if let Some(b) = &before
                && chrono::DateTime::parse_from_rfc3339(b).is_err()
            {
                arg.problem("before", format!("`{b}` is not an RFC 3339 time"));
            }
            choose = Some(Choose {
                named: arg.optional("snapshot"),
                before,
            });
            Op::RdsRestore {
                database: database_id,
                snapshot_id: String::new(),
                snapshot_type: None,
                chosen: String::new(),
                new_identifier: arg.required("new_identifier"),
                instance_class: arg.optional("instance_class"),
                settings: None,
            }
        }
        "rds.wait" => Op::RdsWait {
            database: database_id,
            identifier: arg.optional("identifier").unwrap_or(ident),
            timeout_seconds: timeout,
        },
        "rds.verify" => Op::RdsVerify {
            identifier: arg.optional("identifier").unwrap_or(ident),
            engine: db.map(|d| d.engine.clone()).unwrap_or_default(),
            database: database_id,
            engine_version: arg.optional("engine_version"),
            probe: arg
                .optional("probe")
                .map(|p| p.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            timeout_seconds: timeout,
            settings: None,
        },
        "rds.rename" => Op::RdsRename {
            database: database_id,
            from: arg.required("from"),
            to: arg.required("to"),
            timeout_seconds: timeout,
        },
        "rds.delete" => Op::RdsDelete {
            database: database_id,
            identifier: arg.required("identifier"),
            timeout_seconds: timeout,
        },
        _ => unreachable!("actions are checked before"),
    };
    (op, choose)
}

fn identifiers(op: &Op) -> Vec<&str> {
    match op {
        Op::RdsRestore { new_identifier, .. } => vec![new_identifier],
        Op::RdsRename { from, to, .. } => vec![from, to],
        Op::RdsWait { identifier, .. }
        | Op::RdsVerify { identifier, .. }
        | Op::RdsDelete { identifier, .. } => vec![identifier],
        _ => vec![],
    }
}

/// RDS DB instance identifiers: 1–63 letters, digits or hyphens, a letter first, no double
/// hyphen, not ending in one.
pub fn is_rds_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.contains("--")
        && !s.ends_with('-')
}

struct Args<'a> {
    rb: &'a Loaded<Runbook>,
    /// The step's id (what a gate, call or record is named by).
    id: &'a str,
    at: &'a str,
    with: &'a BTreeMap<&'a str, String>,
    diags: &'a mut Diagnostics,
}

impl Args<'_> {
    fn problem(&mut self, key: &str, message: String) {
        let path = if key.is_empty() {
            self.at.to_owned()
        } else {
            format!("{}.with.{key}", self.at)
        };
        self.diags.push(self.rb.problem(&path, message));
    }
    fn optional(&self, key: &str) -> Option<String> {
        self.with.get(key).filter(|v| !v.is_empty()).cloned()
    }
    fn required(&mut self, key: &str) -> String {
        match self.optional(key) {
            Some(v) => v,
            None => {
                self.problem(key, format!("`{key}` is required and is empty"));
                String::new()
            }
        }
    }
    fn seconds(&mut self, key: &str, default: u64) -> u64 {
        match self.optional(key) {
            None => default,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => {
                    self.problem(key, format!("`{v}` is not a number of seconds (1 or more)"));
                    default
                }
            },
        }
    }
    fn database(&mut self, inv: &Inventory) -> String {
        let id = self.required("database");
        if !id.is_empty() && inv.database(&id).is_none() {
            self.problem(
                "database",
                format!("database `{id}` is not in the inventory's `databases`"),
            );
        }
        id
    }
}

fn typed(ty: ParamType, raw: &str, inv: &Inventory) -> Result<Value, String> {
    match ty {
        ParamType::String => Ok(Value::String(raw.to_owned())),
        ParamType::Integer => raw
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("`{raw}` is not an integer")),
        ParamType::Boolean => match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("`{raw}` is not `true` or `false`")),
        },
        ParamType::Timestamp if raw.is_empty() => Ok(Value::String(String::new())),
        ParamType::Timestamp => chrono::DateTime::parse_from_rfc3339(raw)
            .map(|t| {
                Value::String(
                    t.with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                )
            })
            .map_err(|e| format!("`{raw}` is not an RFC 3339 time ({e})")),
        ParamType::Database => match inv.database(raw) {
            Some(_) => Ok(Value::String(raw.to_owned())),
            None => Err(format!(
                "database `{raw}` is not in the inventory (it has: {})",
                inv.databases
                    .iter()
                    .map(|d| d.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
    }
}

fn render(
    text: &str,
    params: &BTreeMap<String, Value>,
    database: Option<&Value>,
) -> Result<String, String> {
    let mut ctx = tera::Context::new();
    ctx.insert("params", params);
    if let Some(db) = database {
        ctx.insert("database", db);
    }
    crate::render::render_one_off("value", text, &ctx)
        .map_err(|e| crate::render::tera_error("value", &e).message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{self, SourceFile};

    const INV: &str = r#"version: 1
sites: [{ id: a, tier: prod }]
clouds: [{ id: aws1, kind: aws, aws: { account: "123456789012", region: us-east-1 } }]
databases: [{ id: ehr, cloud: aws1, engine: postgres, identifier: ehr-prod, site: a }]
"#;

    fn inv() -> Inventory {
        load::parse_inventory(SourceFile::new("i.yaml", INV))
            .unwrap()
            .value
    }

    fn book() -> Loaded<Runbook> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../runbooks/restore-rds-snapshot.yaml"
        ))
        .unwrap();
        load::parse_runbook(SourceFile::new("runbooks/restore-rds-snapshot.yaml", text)).unwrap()
    }

    fn args(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_restore_runbook_compiles_with_defaults_from_the_database() {
        let c = compile(&book(), &inv(), &args(&[("database", "ehr")])).unwrap();
        let restore = c
            .steps
            .iter()
            .find_map(|d| match &d.op {
                Op::RdsRestore { new_identifier, .. } => {
                    Some((new_identifier.clone(), d.choose.clone()))
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(restore.0, "ehr-prod-restored");
        assert_eq!(
            restore.1,
            Some(Choose {
                named: None,
                before: None
            })
        );
        let renames: Vec<(String, String)> = c
            .steps
            .iter()
            .filter_map(|d| match &d.op {
                Op::RdsRename { from, to, .. } => Some((from.clone(), to.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            renames,
            [
                ("ehr-prod".to_owned(), "ehr-prod-retired".to_owned()),
                ("ehr-prod-restored".to_owned(), "ehr-prod".to_owned())
            ]
        );
        // The old instance is only deleted after an explicit manual decommission gate.
        let n = c.steps.len();
        assert!(matches!(c.steps[n - 2].op, Op::Manual { .. }));
        assert!(
            matches!(c.steps[n - 1].op, Op::RdsDelete { ref identifier, .. } if identifier == "ehr-prod-retired")
        );
    }

    #[test]
    fn parameters_are_typed_and_unknown_ones_refused() {
        let e = compile(
            &book(),
            &inv(),
            &args(&[
                ("database", "nope"),
                ("before", "last tuesday"),
                ("colour", "red"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--param parameter `database`: database `nope` is not in the inventory (it has: ehr)"), "{e}");
        assert!(e.contains("`last tuesday` is not an RFC 3339 time"), "{e}");
        assert!(e.contains("has no parameter `colour`"), "{e}");
        let e = compile(&book(), &inv(), &args(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --param database=<database>"), "{e}");
    }

    #[test]
    fn step_errors_name_the_runbook_line_and_field() {
        let text = r#"version: 1
kind: runbook
name: t
params: [{ name: db, type: database }]
steps:
  - id: one
    title: one
    action: rds.wait
    with: { database: "{{ params.db }}", timeout_seconds: soon }
  - id: two
    title: two
    action: rds.explode
  - id: three
    title: three
    action: rds.rename
    with: { database: "{{ params.db }}", from: "{{ params.nope }}", to: "Bad_Name" }
"#;
        let rb = load::parse_runbook(SourceFile::new("rb.yaml", text)).unwrap();
        let e = compile(&rb, &inv(), &args(&[("db", "ehr")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "rb.yaml:9:59: steps[0].with.timeout_seconds: `soon` is not a number of seconds"
            ),
            "{e}"
        );
        assert!(
            e.contains("rb.yaml:12:13: steps[1].action: unknown action `rds.explode`"),
            "{e}"
        );
        assert!(
            e.contains("steps[2].with.from: ") && e.contains("params.nope"),
            "{e}"
        );
        assert!(
            e.contains("`Bad_Name` is not a valid RDS identifier"),
            "{e}"
        );
    }
}
