//! DIBR documents (Deployment, Installation, Back-out and Rollback guide): the data of the
//! document, built from the saved plan, the inventory and the ledger, and its rendering
//! through the Tera templates in `templates/dibr/`. Pure: the caller reads the files.
//!
//! Before apply the document is the plan for review; after, its checklist is filled from the
//! ledger, failures and back-outs included, each line with the ledger entry hash as evidence.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::approval::SignedApproval;
use crate::ledger::{Entry, Event};
use crate::model::Inventory;
use crate::plan::{SavedPlan, SavedPlanKind, Undo};

pub const MARKDOWN_TEMPLATE: &str = include_str!("../../templates/dibr/dibr.md.tera");
pub const HTML_TEMPLATE: &str = include_str!("../../templates/dibr/dibr.html.tera");

/// One row of the revision history, kept across runs in `revision-history.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub plan_id: String,
    pub name: String,
    pub planned_at: String,
    pub author: String,
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Doc {
    pub title: String,
    pub plan_id: String,
    pub plan_name: String,
    pub kind: String,
    pub planned_at: String,
    pub planned_by: String,
    pub ferry_version: String,
    /// `planned (not applied)`, `applied`, `halted`, `backed out`, ...
    pub status: String,
    pub applied: bool,
    pub revisions: Vec<Revision>,
    pub releases: Vec<ReleaseRow>,
    pub dependencies: Vec<DependencyRow>,
    pub databases: Vec<DatabaseRow>,
    pub constraints: Vec<String>,
    pub roles: Vec<RoleRow>,
    pub approvers: Vec<ApproverRow>,
    pub gates: Vec<GateRow>,
    pub timeline: Vec<WaveRow>,
    pub sites: Vec<SiteRow>,
    pub checklist: Vec<CheckRow>,
    pub backouts: Vec<CheckRow>,
    pub verification: Vec<VerifyRow>,
    pub backout_policy: String,
    pub backout_commands: Vec<String>,
    pub backout_authority: Vec<String>,
    pub rollback: Vec<String>,
    pub risks: Vec<RiskRow>,
    pub ledger: LedgerRow,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseRow {
    pub app: String,
    pub version: String,
    pub targets: usize,
    pub first_installs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DependencyRow {
    pub app: String,
    pub needs: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRow {
    pub id: String,
    pub engine: String,
    pub identifier: String,
    pub site: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleRow {
    pub site: String,
    pub role: String,
    pub name: String,
    pub contact: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApproverRow {
    pub name: String,
    pub roles: String,
    pub public_key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateRow {
    pub name: String,
    pub before_wave: String,
    pub role: String,
    /// `approved by NAME`, or `not approved`.
    pub status: String,
    pub when: String,
    pub comment: String,
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WaveRow {
    pub number: usize,
    pub name: String,
    pub sites: String,
    pub max_parallel: u32,
    pub failure_threshold: u32,
    pub windows: String,
    pub started: String,
    pub finished: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteRow {
    pub id: String,
    pub tier: String,
    pub location: String,
    pub window: String,
    pub topology: Vec<String>,
    pub hardware: Vec<HardwareRow>,
    pub software: Vec<SoftwareRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HardwareRow {
    pub endpoint: String,
    pub required: String,
    pub observed: String,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoftwareRow {
    pub target: String,
    pub app: String,
    pub running: String,
    pub planned: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub step: String,
    pub wave: String,
    pub target: String,
    pub action: String,
    /// `[x]` done, `[!]` failed, `[ ]` not done.
    pub mark: String,
    pub status: String,
    pub who: String,
    pub when: String,
    pub evidence: String,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyRow {
    pub app: String,
    pub check: String,
    pub deadline: String,
    pub results: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RiskRow {
    pub risk: String,
    pub mitigation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LedgerRow {
    pub path: String,
    pub entries: usize,
    pub head: String,
    pub verified: String,
}

/// What the document is built from.
pub struct Inputs<'a> {
    pub plan: &'a SavedPlan,
    pub inventory: &'a Inventory,
    /// Every ledger entry (the plan's are picked out).
    pub entries: &'a [Entry],
    pub ledger_path: &'a str,
    /// `verified` or the verification's finding.
    pub ledger_verified: &'a str,
    /// Rows from earlier runs; this plan's row is added or updated.
    pub history: Vec<Revision>,
}

fn short(h: &str) -> String {
    h.chars().take(16).collect()
}

pub fn build(i: Inputs<'_>) -> Doc {
    let plan = i.plan;
    let inv = i.inventory;
    let body = &plan.body;
    let mine: Vec<&Entry> = i
        .entries
        .iter()
        .filter(|e| e.plan_id.as_deref() == Some(plan.id.as_str()))
        .collect();
    let started = mine.iter().any(|e| e.event == Event::ApplyStarted);
    let last_end = mine.iter().rev().find(|e| {
        matches!(
            e.event,
            Event::ApplyFinished | Event::ApplyInterrupted | Event::ApplyStarted
        )
    });
    let status = match last_end {
        None => "planned (not applied)".to_owned(),
        Some(e) if e.event == Event::ApplyStarted => {
            "in progress, or stopped by a crash (resumable)".to_owned()
        }
        Some(e) if e.event == Event::ApplyInterrupted => "interrupted (resumable)".to_owned(),
        Some(e)
            if e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("stopped at gate")) =>
        {
            "stopped at an approval gate (resumable after approval)".to_owned()
        }
        Some(e) => match e.outcome {
            Some(crate::ledger::Outcome::Ok) => "applied".to_owned(),
            Some(crate::ledger::Outcome::BackedOut) => "failed and backed out".to_owned(),
            Some(crate::ledger::Outcome::Halted) => "halted after a failure (resumable)".to_owned(),
            Some(crate::ledger::Outcome::CompletedWithFailures) => {
                "applied with failures within tolerance".to_owned()
            }
            _ => "finished".to_owned(),
        },
    };

    // Revision history: one row per plan (build), kept across runs.
    let mut revisions = i.history;
    let row = Revision {
        plan_id: plan.id.clone(),
        name: body.name.clone(),
        planned_at: plan.created_at.clone(),
        author: plan.actor.clone(),
        status: status.clone(),
    };
    match revisions.iter_mut().find(|r| r.plan_id == plan.id) {
        Some(r) => *r = row,
        None => revisions.push(row),
    }

    let mut releases: Vec<ReleaseRow> = Vec::new();
    for s in &body.steps {
        match releases
            .iter_mut()
            .find(|r| r.app == s.target.app && r.version == s.to)
        {
            Some(r) => {
                r.targets += 1;
                r.first_installs += usize::from(s.from.is_none());
            }
            None => releases.push(ReleaseRow {
                app: s.target.app.clone(),
                version: s.to.clone(),
                targets: 1,
                first_installs: usize::from(s.from.is_none()),
            }),
        }
    }
    let apps: Vec<&str> = releases.iter().map(|r| r.app.as_str()).collect();
    let sites: Vec<&str> = body
        .waves
        .iter()
        .flat_map(|w| w.sites.iter().map(String::as_str))
        .collect();

    let dependencies = inv
        .apps
        .iter()
        .filter(|a| apps.contains(&a.id.as_str()))
        .map(|a| DependencyRow {
            app: a.id.clone(),
            needs: if a.depends_on.is_empty() {
                "none".into()
            } else {
                a.depends_on.join(", ")
            },
        })
        .collect();
    let databases = inv
        .databases
        .iter()
        .filter(|d| d.site.as_deref().is_none_or(|s| sites.contains(&s)))
        .map(|d| DatabaseRow {
            id: d.id.clone(),
            engine: d.engine.clone(),
            identifier: d.identifier.clone(),
            site: d.site.clone().unwrap_or_else(|| "all".into()),
        })
        .collect::<Vec<_>>();

    let window_of = |site: &str| -> String {
        inv.site(site)
            .and_then(|s| s.maintenance_window.as_ref())
            .map(|w| {
                let days: Vec<String> = w
                    .days
                    .iter()
                    .map(|d| {
                        serde_json::to_value(d)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    })
                    .collect();
                format!(
                    "{} {} for {} min ({})",
                    days.join(","),
                    w.start,
                    w.duration_minutes,
                    w.timezone
                )
            })
            .unwrap_or_else(|| "none set".into())
    };

    let mut constraints = vec![format!(
        "On failure: `{}`.",
        match body.on_failure {
            crate::model::OnFailure::Halt => "halt (stop, leave everything as it is, resume later)",
            crate::model::OnFailure::Backout =>
                "backout (undo the failed target, and every completed step when a wave crosses its threshold)",
        }
    )];
    for w in &body.waves {
        constraints.push(format!(
            "Wave `{}`: at most {} target(s) at once; {} failure(s) tolerated.",
            w.name, w.max_parallel, w.failure_threshold
        ));
    }
    for s in &sites {
        constraints.push(format!("Site `{s}` maintenance window: {}.", window_of(s)));
    }
    for r in &body.readiness {
        if let Some(w) = &r.waived {
            constraints.push(format!("Waiver for endpoint `{}`: {w}", r.endpoint));
        }
    }

    let roles = inv
        .sites
        .iter()
        .filter(|s| sites.contains(&s.id.as_str()))
        .flat_map(|s| {
            s.roles.iter().map(|r| RoleRow {
                site: s.id.clone(),
                role: r.role.clone(),
                name: r.name.clone(),
                contact: r.contact.clone().unwrap_or_default(),
            })
        })
        .collect();
    let approvers = inv
        .approvers
        .iter()
        .map(|a| ApproverRow {
            name: a.name.clone(),
            roles: a.roles.join(", "),
            public_key: a.public_key.clone(),
        })
        .collect();

    let digest = crate::approval::plan_digest(plan);
    let gates = body
        .gates
        .iter()
        .map(|g| {
            let ok = mine.iter().find_map(|e| {
                if e.event != Event::Approval {
                    return None;
                }
                let a: SignedApproval = serde_json::from_value(e.detail.clone()?).ok()?;
                (a.payload.gate == g.name
                    && a.payload.role == g.role
                    && a.payload.plan_sha256 == digest
                    && crate::approval::verify(&a, Some(&inv.approvers)).is_ok())
                .then_some((a, *e))
            });
            let wave = body
                .waves
                .get(g.wave)
                .map(|w| w.name.clone())
                .unwrap_or_default();
            match ok {
                Some((a, e)) => GateRow {
                    name: g.name.clone(),
                    before_wave: wave,
                    role: g.role.clone(),
                    status: format!("approved by {} (signature verified)", a.payload.approver),
                    when: a.payload.signed_at.clone(),
                    comment: a.payload.comment.clone().unwrap_or_default(),
                    evidence: short(&e.hash),
                },
                None => GateRow {
                    name: g.name.clone(),
                    before_wave: wave,
                    role: g.role.clone(),
                    status: "not approved".into(),
                    when: String::new(),
                    comment: String::new(),
                    evidence: String::new(),
                },
            }
        })
        .collect();

    // Step events, latest first per step.
    let step_events = |id: &str| -> Vec<&Entry> {
        mine.iter()
            .filter(|e| e.step.as_deref() == Some(id))
            .copied()
            .collect()
    };
    let timeline = body
        .waves
        .iter()
        .enumerate()
        .map(|(w, wave)| {
            let ids: Vec<&str> = body
                .steps
                .iter()
                .filter(|s| s.wave == w)
                .map(|s| s.id.as_str())
                .collect();
            let times: Vec<&str> = mine
                .iter()
                .filter(|e| e.step.as_deref().is_some_and(|s| ids.contains(&s)))
                .map(|e| e.time.as_str())
                .collect();
            WaveRow {
                number: w + 1,
                name: wave.name.clone(),
                sites: wave.sites.join(", "),
                max_parallel: wave.max_parallel,
                failure_threshold: wave.failure_threshold,
                windows: wave
                    .sites
                    .iter()
                    .map(|s| format!("{s}: {}", window_of(s)))
                    .collect::<Vec<_>>()
                    .join("; "),
                started: times
                    .iter()
                    .min()
                    .map(|t| (*t).to_owned())
                    .unwrap_or_else(|| "-".into()),
                finished: times
                    .iter()
                    .max()
                    .map(|t| (*t).to_owned())
                    .unwrap_or_else(|| "-".into()),
            }
        })
        .collect();

    let site_rows = sites
        .iter()
        .filter_map(|id| inv.site(id))
        .map(|s| {
            let mut topology: Vec<String> = s
                .clouds
                .iter()
                .filter_map(|c| inv.cloud(c))
                .map(|c| format!("cloud `{}` ({})", c.id, c.kind.as_str()))
                .collect();
            topology.extend(s.endpoints.iter().filter_map(|e| inv.endpoint(e)).map(|e| {
                format!(
                    "endpoint `{}` at {} (ssh as {})",
                    e.id, e.address, e.connection.user
                )
            }));
            if let Some(j) = &s.jump {
                topology.push(format!("reached through jump host `{j}`"));
            }
            let hardware = body
                .readiness
                .iter()
                .filter(|r| r.site == s.id)
                .map(|r| HardwareRow {
                    endpoint: r.endpoint.clone(),
                    required: r
                        .checks
                        .iter()
                        .map(|c| format!("{} {}", c.fact, c.required))
                        .collect::<Vec<_>>()
                        .join(", "),
                    observed: r
                        .checks
                        .iter()
                        .map(|c| format!("{} {}", c.fact, c.observed))
                        .collect::<Vec<_>>()
                        .join(", "),
                    verdict: if r.ready {
                        "ready".into()
                    } else if r.waived.is_some() {
                        "waived".into()
                    } else {
                        "NOT ready".into()
                    },
                })
                .collect();
            let software = body
                .targets
                .iter()
                .filter(|t| t.target.site == s.id)
                .map(|t| SoftwareRow {
                    target: t.target.id.clone(),
                    app: t.target.app.clone(),
                    running: t
                        .observed
                        .current
                        .clone()
                        .unwrap_or_else(|| "(none)".into()),
                    planned: body
                        .steps
                        .iter()
                        .find(|st| st.target == t.target)
                        .map(|st| st.to.clone())
                        .unwrap_or_else(|| "unchanged".into()),
                })
                .collect();
            SiteRow {
                id: s.id.clone(),
                tier: serde_json::to_value(s.tier)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                location: s.location.clone().unwrap_or_default(),
                window: window_of(&s.id),
                topology,
                hardware,
                software,
            }
        })
        .collect();

    let mut checklist = Vec::new();
    let mut backouts = Vec::new();
    for s in &body.steps {
        let ev = step_events(&s.id);
        let wave = body
            .waves
            .get(s.wave)
            .map(|w| w.name.clone())
            .unwrap_or_default();
        let action = match (&body.kind, &s.from) {
            (SavedPlanKind::Backout, _) => format!(
                "switch back {} -> {}",
                s.from.as_deref().unwrap_or("(none)"),
                s.to
            ),
            (_, Some(f)) => format!("upgrade {f} -> {}", s.to),
            (_, None) => format!("install {}", s.to),
        };
        let last = ev.iter().rev().find(|e| {
            matches!(
                e.event,
                Event::StepSucceeded | Event::StepFailed | Event::StepStarted
            )
        });
        let (mark, status) = match last.map(|e| e.event) {
            Some(Event::StepSucceeded) => ("[x]", "done, verified healthy"),
            Some(Event::StepFailed) => ("[!]", "FAILED"),
            Some(Event::StepStarted) => ("[ ]", "started, not finished"),
            _ => ("[ ]", "not done"),
        };
        checklist.push(CheckRow {
            step: s.id.clone(),
            wave: wave.clone(),
            target: s.target.id.clone(),
            action,
            mark: mark.into(),
            status: status.into(),
            who: last.map(|e| e.actor.clone()).unwrap_or_default(),
            when: last.map(|e| e.time.clone()).unwrap_or_default(),
            evidence: last.map(|e| short(&e.hash)).unwrap_or_default(),
            note: last
                .filter(|e| e.event == Event::StepFailed)
                .and_then(|e| e.message.clone())
                .unwrap_or_default(),
        });
        let undo_ev = ev.iter().rev().find(|e| {
            matches!(
                e.event,
                Event::StepBackedOut | Event::UndoFailed | Event::UndoStarted
            )
        });
        let kube = s.target.kind == crate::model::TargetKind::Kubernetes;
        let undo_text = match (&s.undo, kube) {
            (Undo::SwitchTo { version, .. }, false) => format!("switch back to {version}"),
            (Undo::SwitchTo { version, .. }, true) => format!(
                "re-apply the last rolled-out revision of {version} from the cluster's release history (`ferry backout --app {} --site {}`, or `ferry rollback {} --site {} --to REVISION`; `ferry history` lists revisions)",
                s.target.app, s.target.site, s.target.app, s.target.site
            ),
            (Undo::Uninstall, false) => "uninstall (first install)".into(),
            (Undo::Uninstall, true) => format!(
                "uninstall (first install): `ferry rollback {} --site {} --uninstall`",
                s.target.app, s.target.site
            ),
            (Undo::Keep, _) => "nothing to undo (kept)".into(),
        };
        let (mark, status) = match undo_ev.map(|e| e.event) {
            Some(Event::StepBackedOut) => ("[x]", "backed out, previous release verified"),
            Some(Event::UndoFailed) => ("[!]", "BACK-OUT FAILED: needs attention"),
            Some(Event::UndoStarted) => ("[ ]", "back-out started, not finished"),
            _ => ("[ ]", "not needed so far"),
        };
        backouts.push(CheckRow {
            step: s.id.clone(),
            wave,
            target: s.target.id.clone(),
            action: undo_text,
            mark: mark.into(),
            status: status.into(),
            who: undo_ev.map(|e| e.actor.clone()).unwrap_or_default(),
            when: undo_ev.map(|e| e.time.clone()).unwrap_or_default(),
            evidence: undo_ev.map(|e| short(&e.hash)).unwrap_or_default(),
            note: undo_ev
                .filter(|e| e.event == Event::UndoFailed)
                .and_then(|e| e.message.clone())
                .unwrap_or_default(),
        });
    }

    let verification = releases
        .iter()
        .filter_map(|r| inv.app(&r.app).map(|a| (r, a)))
        .map(|(r, a)| {
            let check = match (
                &a.health_check.http,
                a.docker.as_ref().and_then(|d| d.healthcheck.as_ref()),
            ) {
                (Some(url), _) => format!("HTTP GET {url} answers 2xx"),
                (None, _) if !a.health_check.command.is_empty() => {
                    format!("`{}` exits 0", a.health_check.command.join(" "))
                }
                (None, Some(h)) => {
                    format!("Docker health check `{}` reports healthy", h.test.join(" "))
                }
                _ => "the release runs".into(),
            };
            let ok = checklist
                .iter()
                .filter(|c| c.target.ends_with(&format!("/{}", r.app)) && c.mark == "[x]")
                .count();
            let bad = checklist
                .iter()
                .filter(|c| c.target.ends_with(&format!("/{}", r.app)) && c.mark == "[!]")
                .count();
            VerifyRow {
                app: r.app.clone(),
                check,
                deadline: format!(
                    "{} s, every {} ms",
                    a.health_check.timeout_seconds, a.health_check.interval_ms
                ),
                results: if started {
                    format!("{ok} of {} target(s) passed, {bad} failed", r.targets)
                } else {
                    "not run yet".into()
                },
            }
        })
        .collect();

    let backout_commands = {
        let mut v = Vec::new();
        for r in &releases {
            for s in body.steps.iter().filter(|s| s.target.app == r.app) {
                let line = format!(
                    "ferry backout -i INVENTORY --app {} --site {}",
                    r.app, s.target.site
                );
                if !v.contains(&line) {
                    v.push(line);
                }
            }
        }
        v
    };
    let mut backout_authority: Vec<String> = inv
        .sites
        .iter()
        .filter(|s| sites.contains(&s.id.as_str()))
        .flat_map(|s| {
            s.roles
                .iter()
                .filter(|r| {
                    r.role.contains("release")
                        || r.role.contains("backout")
                        || r.role.contains("change")
                })
                .map(move |r| format!("{} ({}, {})", r.name, r.role, s.id))
        })
        .collect();
    backout_authority.extend(
        inv.approvers
            .iter()
            .filter(|a| body.gates.iter().any(|g| a.roles.contains(&g.role)))
            .map(|a| format!("{} ({})", a.name, a.roles.join(", "))),
    );
    backout_authority.dedup();

    let mut rollback = Vec::new();
    if databases.is_empty() {
        rollback.push("No database in the inventory belongs to these sites: rollback is the back-out above (the previous release is kept on every target).".into());
    } else {
        for d in &databases {
            // The pre-change snapshot this plan took, as the ledger records it.
            let taken = mine.iter().rev().find(|e| {
                e.event == Event::StepSucceeded
                    && e.to.as_deref() == Some("rds.snapshot")
                    && e.detail
                        .as_ref()
                        .is_some_and(|x| x["database"] == d.id.as_str())
            });
            let snapshot =
                taken.and_then(|e| e.detail.as_ref()?["snapshot"].as_str().map(str::to_owned));
            rollback.push(match (snapshot, taken) {
                (Some(id), Some(e)) => format!(
                    "Database `{}` ({} `{}`): pre-change snapshot `{id}` (ledger entry #{}, {}). Restore it with the on-call runbook `runbooks/restore-rds-snapshot.yaml`: `ferry runbook run restore-rds-snapshot -i INVENTORY --param database={} --param snapshot={id}`.",
                    d.id, d.engine, d.identifier, e.seq, short(&e.hash), d.id
                ),
                _ => format!(
                    "Database `{}` ({} `{}`): restore from an RDS snapshot with the on-call runbook `runbooks/restore-rds-snapshot.yaml` (`ferry runbook run restore-rds-snapshot -i INVENTORY --param database={} --param before=TIME`).",
                    d.id, d.engine, d.identifier, d.id
                ),
            });
        }
    }
    for e in mine
        .iter()
        .filter(|e| e.message.as_deref().is_some_and(|m| m.contains("snapshot")))
    {
        rollback.push(format!(
            "Ledger entry #{} ({}): {}",
            e.seq,
            short(&e.hash),
            e.message.clone().unwrap_or_default()
        ));
    }

    let mut risks = Vec::new();
    for r in &releases {
        if r.first_installs > 0 {
            risks.push(RiskRow {
                risk: format!("{} is installed for the first time on {} target(s): there is no earlier release to go back to.", r.app, r.first_installs),
                mitigation: "Back-out uninstalls it; keep the site's previous process documented until the release is accepted.".into(),
            });
        }
    }
    for t in &body.targets {
        for d in &t.observed.drift {
            risks.push(RiskRow {
                risk: format!("Drift on {} when planned: {d}", t.target.id),
                mitigation: "The plan repairs it; find out who changed it by hand before applying."
                    .into(),
            });
        }
    }
    for r in &body.readiness {
        if !r.ready {
            risks.push(RiskRow {
                risk: format!(
                    "Endpoint {} is short of its hardware requirements.",
                    r.endpoint
                ),
                mitigation: r.waived.clone().map_or_else(
                    || "Not waived: the plan is blocked until it is fixed.".into(),
                    |w| format!("Waived: {w}"),
                ),
            });
        }
    }
    for s in &sites {
        if inv
            .site(s)
            .is_some_and(|x| x.maintenance_window.is_none() && x.tier == crate::model::Tier::Prod)
        {
            risks.push(RiskRow {
                risk: format!("Production site {s} has no maintenance window in the inventory."),
                mitigation: "Agree the time with the site contact before applying.".into(),
            });
        }
    }
    for c in checklist.iter().filter(|c| c.mark == "[!]") {
        risks.push(RiskRow {
            risk: format!(
                "Step {} on {} failed during apply: {}",
                c.step, c.target, c.note
            ),
            mitigation: "See the back-out checklist for what was undone; fix and make a new plan."
                .into(),
        });
    }
    if risks.is_empty() {
        risks.push(RiskRow {
            risk: "No specific risk found in the plan, the inventory or the ledger.".into(),
            mitigation: "Follow the checklist; the back-out procedure below applies.".into(),
        });
    }

    let last = i.entries.last();
    Doc {
        title: format!("{} — Deployment, Installation, Back-out and Rollback Guide", body.name),
        plan_id: plan.id.clone(),
        plan_name: body.name.clone(),
        kind: match body.kind {
            SavedPlanKind::Release => "release".into(),
            SavedPlanKind::Backout => "back-out".into(),
            SavedPlanKind::Runbook => "runbook".into(),
        },
        planned_at: plan.created_at.clone(),
        planned_by: plan.actor.clone(),
        ferry_version: plan.ferry_version.clone(),
        applied: started,
        status,
        revisions,
        releases,
        dependencies,
        databases,
        constraints,
        roles,
        approvers,
        gates,
        timeline,
        sites: site_rows,
        checklist,
        backouts,
        verification,
        backout_policy: match body.on_failure {
            crate::model::OnFailure::Halt => "halt: a failure stops the apply; an operator decides to resume or back out".into(),
            crate::model::OnFailure::Backout => "backout: a failed target is returned to its previous release at once; when a wave crosses its threshold every completed step is undone, newest first".into(),
        },
        backout_commands,
        backout_authority,
        rollback,
        risks,
        ledger: LedgerRow {
            path: i.ledger_path.to_owned(),
            entries: i.entries.len(),
            head: last.map(|e| e.hash.clone()).unwrap_or_else(|| "-".into()),
            verified: i.ledger_verified.to_owned(),
        },
    }
}

/// Renders the document with a template (`markdown` or `html` escaping).
pub fn render(doc: &Doc, name: &str, template: &str) -> Result<String, crate::render::RenderError> {
    let mut t = crate::render::sandboxed_tera();
    t.autoescape_on(vec![".html.tera"]);
    t.register_filter(
        "cell",
        |v: &tera::Value, _: &std::collections::HashMap<String, tera::Value>| {
            let s = match v {
                tera::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(tera::Value::String(
                s.replace('|', "\\|").replace(['\n', '\r'], " "),
            ))
        },
    );
    let wrap = |e: tera::Error| crate::render::tera_error(name, &e);
    t.add_raw_template(name, template).map_err(wrap)?;
    let ctx = tera::Context::from_serialize(doc).map_err(wrap)?;
    t.render(name, &ctx).map_err(wrap)
}

/// Tally for the document's status line, by step status (used by tests and the CLI summary).
pub fn tally(doc: &Doc) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in &doc.checklist {
        *m.entry(c.status.clone()).or_default() += 1;
    }
    m
}
