//! Building the DIBR document, section by section: each function fills one part of [`Doc`]
//! from the plan, the inventory and the plan's ledger entries.

use super::procedure::{access, communications, configuration, installation, jobs, offline};
use super::{
    ApproverRow, CheckRow, DatabaseRow, DependencyRow, Doc, EntryRow, GateRow, HardwareRow,
    InputRow, Inputs, LedgerRow, ReleaseRow, Revision, RiskRow, RoleRow, SiteRow, SoftwareRow,
    VerifyRow, WaveRow, short,
};
use crate::approval::SignedApproval;
use crate::ledger::{Entry, Event, Outcome};
use crate::model::{Inventory, OnFailure, Site, TargetKind, Tier};
use crate::plan::{PlanBody, SavedPlan, SavedPlanKind, Step, Undo};

/// What every section reads: the plan, the inventory, the plan's own ledger entries and the
/// sites its waves name.
pub(super) struct Ctx<'a> {
    pub(super) plan: &'a SavedPlan,
    pub(super) inv: &'a Inventory,
    pub(super) body: &'a PlanBody,
    pub(super) mine: Vec<&'a Entry>,
    pub(super) sites: Vec<&'a str>,
    /// Every entry the guide is built from (other plans' included).
    pub(super) all: &'a [Entry],
    /// The plan's entries by step, each list oldest first (built once: a guide has a row per
    /// step).
    by_step: std::collections::HashMap<&'a str, Vec<&'a Entry>>,
    /// The same sites as a set, for lookups (estates have thousands).
    site_set: std::collections::HashSet<&'a str>,
    /// Everyone the inventory names (approvers, site roles), looked up once per row.
    people: std::collections::HashSet<&'a str>,
}

impl<'a> Ctx<'a> {
    fn new(i: &Inputs<'a>) -> Self {
        let body = &i.plan.body;
        let mine: Vec<&'a Entry> = i
            .entries
            .iter()
            .filter(|e| e.plan_id.as_deref() == Some(i.plan.id.as_str()))
            .collect();
        let mut by_step: std::collections::HashMap<&'a str, Vec<&'a Entry>> =
            std::collections::HashMap::new();
        for e in &mine {
            if let Some(step) = e.step.as_deref() {
                by_step.entry(step).or_default().push(e);
            }
        }
        Self {
            plan: i.plan,
            inv: i.inventory,
            body,
            mine,
            by_step,
            sites: body
                .waves
                .iter()
                .flat_map(|w| w.sites.iter().map(String::as_str))
                .collect(),
            all: i.entries,
            site_set: body
                .waves
                .iter()
                .flat_map(|w| w.sites.iter().map(String::as_str))
                .collect(),
            people: i
                .inventory
                .approvers
                .iter()
                .map(|a| a.name.as_str())
                .chain(
                    i.inventory
                        .sites
                        .iter()
                        .flat_map(|s| s.roles.iter().map(|r| r.name.as_str())),
                )
                .collect(),
        }
    }

    /// `time` (RFC 3339) in the site's own time zone, when its window names one.
    pub(super) fn local_time(&self, site: &str, time: &str) -> String {
        let tz = self
            .inv
            .site(site)
            .and_then(|s| s.maintenance_window.as_ref())
            .and_then(|w| crate::window::zone(&w.timezone).ok());
        match (tz, chrono::DateTime::parse_from_rfc3339(time)) {
            (Some(tz), Ok(t)) => t
                .with_timezone(&tz)
                .format("%a %Y-%m-%d %H:%M %Z")
                .to_string(),
            _ => String::new(),
        }
    }

    /// The plan's entries about one step, oldest first.
    pub(super) fn step_events(&self, id: &str) -> &[&'a Entry] {
        self.by_step.get(id).map_or(&[], Vec::as_slice)
    }

    /// `time` followed by the sites' own time, when they all keep the same time zone.
    pub(super) fn with_local(&self, sites: &[String], time: String) -> String {
        let locals: Vec<String> = sites.iter().map(|s| self.local_time(s, &time)).collect();
        match locals.first() {
            Some(l) if !l.is_empty() && locals.iter().all(|x| x == l) => format!("{time} ({l})"),
            _ => time,
        }
    }

    /// The person behind a ledger actor: `Name (actor)` from the inventory's `actors`, the
    /// actor itself when it names an approver or a site role's person, `None` otherwise.
    pub(super) fn person(&self, actor: &str) -> Option<String> {
        if let Some(name) = self.inv.actors.get(actor) {
            return Some(format!("{name} ({actor})"));
        }
        self.people.contains(actor).then(|| actor.to_owned())
    }

    /// The inventory's sites this plan touches.
    pub(super) fn touched_sites(&self) -> impl Iterator<Item = &'a Site> + '_ {
        self.inv
            .sites
            .iter()
            .filter(|s| self.site_set.contains(s.id.as_str()))
    }

    pub(super) fn wave_name(&self, wave: usize) -> String {
        self.body
            .waves
            .get(wave)
            .map(|w| w.name.clone())
            .unwrap_or_default()
    }
}

/// Builds the document from the saved plan, the inventory and the ledger.
pub fn build(i: Inputs<'_>) -> Doc {
    let c = Ctx::new(&i);
    let (plan, body) = (c.plan, c.body);
    let started = c.mine.iter().any(|e| e.event == Event::ApplyStarted);
    let status = status(&c.mine);
    let revisions = revisions(&c, i.history, &status);
    let mut releases = releases(body);
    for r in &mut releases {
        r.artifact = artifact_digest(&c, r);
    }
    let databases = databases(&c);
    let (checklist, backouts) = checklists(&c);
    let configuration = configuration(&c, &releases);
    let (access_rows, skills) = access(&c);
    let last = i.entries.last();
    let created = c
        .mine
        .iter()
        .rev()
        .find(|e| matches!(e.event, Event::PlanCreated | Event::PlanTrusted));
    Doc {
        title: format!("{} — Deployment, Installation, Back-out and Rollback Guide", body.name),
        plan_id: plan.id.clone(),
        plan_name: body.name.clone(),
        kind: match body.kind {
            SavedPlanKind::Release => "release".into(),
            SavedPlanKind::Backout => "back-out".into(),
            SavedPlanKind::Runbook => "runbook".into(),
            SavedPlanKind::Migration => "migration".into(),
        },
        planned_at: plan.created_at.clone(),
        planned_by: plan.actor.clone(),
        ferry_version: plan.ferry_version.clone(),
        applied: started,
        status,
        revisions,
        dependencies: dependencies(&c, &releases),
        constraints: constraints(&c),
        roles: roles(&c),
        approvers: approvers(c.inv),
        gates: gates(&c),
        timeline: timeline(&c),
        timeline_svg: super::cutover::timeline_svg(&c),
        cutover: super::cutover::rows(&c),
        migration: super::migration::section(&c),
        sites: c.sites.iter().filter_map(|id| c.inv.site(id)).map(|s| site_row(&c, s)).collect(),
        verification: verification(&c, &releases, &checklist, started),
        backout_policy: match body.on_failure {
            OnFailure::Halt => "halt: a failure stops the apply; an operator decides to resume or back out".into(),
            OnFailure::Backout => "backout: a failed target is returned to its previous release at once; when a wave crosses its threshold every completed step is undone, newest first".into(),
        },
        backout_commands: backout_commands(body, &releases),
        backout_authority: backout_authority(&c),
        rollback: rollback(&c, &databases),
        risks: risks(&c, &releases, &checklist),
        releases,
        catalog: body.versions.clone(),
        databases,
        checklist,
        backouts,
        ledger: LedgerRow {
            path: i.ledger_path.to_owned(),
            entries: i.entries.len(),
            head: last.map(|e| e.hash.clone()).unwrap_or_else(|| "-".into()),
            verified: i.ledger_verified.to_owned(),
        },
        inputs: plan
            .inputs
            .iter()
            .map(|x| InputRow {
                role: x.role.clone(),
                path: x.path.clone(),
                sha256: x.sha256.clone(),
            })
            .collect(),
        plan_sha256: created
            .and_then(|e| e.detail.as_ref()?["plan_sha256"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "not recorded in this ledger".into()),
        plan_created: created.map_or_else(
            || "not recorded in this ledger".into(),
            |e| format!("#{} ({}, {})", e.seq, e.event.as_str(), e.hash),
        ),
        offline: offline(&c, last),
        installation: installation(&c, created),
        configuration,
        communications: communications(&c),
        access: access_rows,
        skills,
        jobs: jobs(&c),
        entries: c
            .mine
            .iter()
            .map(|e| EntryRow {
                seq: e.seq,
                time: e.time.clone(),
                event: e.event.as_str().to_owned(),
                actor: e.actor.clone(),
                hash: e.hash.clone(),
                prev: e.prev.clone(),
            })
            .collect(),
    }
}

/// Where the plan stands, from the last apply event the ledger has for it.
fn status(mine: &[&Entry]) -> String {
    let last_end = mine.iter().rev().find(|e| {
        matches!(
            e.event,
            Event::ApplyFinished | Event::ApplyInterrupted | Event::ApplyStarted
        )
    });
    match last_end {
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
        Some(e)
            if e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("stopped outside a maintenance window")) =>
        {
            "stopped outside a maintenance window (resumable inside it)".to_owned()
        }
        Some(e) => match e.outcome {
            Some(Outcome::Ok) => "applied".to_owned(),
            Some(Outcome::BackedOut) => "failed and backed out".to_owned(),
            Some(Outcome::Halted) => "halted after a failure (resumable)".to_owned(),
            Some(Outcome::CompletedWithFailures) => {
                "applied with failures within tolerance".to_owned()
            }
            _ => "finished".to_owned(),
        },
    }
}

/// The revision history: every build of this plan's name that the ledger recorded
/// (`plan_created`), with the rows an earlier guide kept, and this plan's row up to date. Each
/// row is numbered (the document version) and says which inputs changed since the build
/// before it.
fn revisions(c: &Ctx<'_>, mut history: Vec<Revision>, status: &str) -> Vec<Revision> {
    let plan = c.plan;
    let mut previous: Option<&serde_json::Value> = None;
    for e in c.all.iter().filter(|e| e.event == Event::PlanCreated) {
        let Some(d) = e
            .detail
            .as_ref()
            .filter(|d| d["name"] == plan.body.name.as_str())
        else {
            continue;
        };
        let Some(id) = e.plan_id.clone() else {
            continue;
        };
        let changes = changed_inputs(previous.map(|p| &p["inputs"]), &d["inputs"]);
        previous = Some(d);
        let known = history.iter_mut().find(|r| r.plan_id == id);
        match known {
            Some(r) => r.changes = changes,
            None => history.push(Revision {
                plan_id: id,
                name: plan.body.name.clone(),
                planned_at: e.time.clone(),
                author: e.actor.clone(),
                status: "built".into(),
                version: 0,
                changes,
            }),
        }
    }
    let row = Revision {
        plan_id: plan.id.clone(),
        name: plan.body.name.clone(),
        planned_at: plan.created_at.clone(),
        author: plan.actor.clone(),
        status: status.to_owned(),
        version: 0,
        changes: String::new(),
    };
    match history.iter_mut().find(|r| r.plan_id == plan.id) {
        Some(r) => {
            let changes = std::mem::take(&mut r.changes);
            *r = Revision { changes, ..row };
        }
        None => history.push(row),
    }
    history.sort_by(|a, b| a.planned_at.cmp(&b.planned_at));
    for (n, r) in history.iter_mut().enumerate() {
        r.version = n + 1;
    }
    history
}

/// Which inputs differ between two builds' recorded inputs (`[{role, path, sha256}]`).
fn changed_inputs(before: Option<&serde_json::Value>, now: &serde_json::Value) -> String {
    let Some(before) = before else {
        return "first build".into();
    };
    let list = |v: &serde_json::Value| -> Vec<(String, String)> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        let key = format!(
                            "{} {}",
                            x["role"].as_str().unwrap_or_default(),
                            x["path"].as_str().unwrap_or_default()
                        );
                        (key, x["sha256"].as_str().unwrap_or_default().to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (old, new) = (list(before), list(now));
    let mut changed: Vec<String> = new
        .iter()
        .filter(|(k, d)| {
            old.iter()
                .find(|(o, _)| o == k)
                .is_none_or(|(_, od)| od != d)
        })
        .map(|(k, _)| k.clone())
        .collect();
    changed.extend(
        old.iter()
            .filter(|(k, _)| !new.iter().any(|(n, _)| n == k))
            .map(|(k, _)| format!("{k} (removed)")),
    );
    if changed.is_empty() {
        "no input changed".into()
    } else {
        changed.join("; ")
    }
}

/// What a release deploys, as the plan recorded it: the artifact's digest, or where a Docker
/// image's or a manifest's digests are (section 13, the cluster's release record).
fn artifact_digest(c: &Ctx<'_>, r: &ReleaseRow) -> String {
    let Some(app) = c.inv.app(&r.app) else {
        return String::new();
    };
    if app.docker.is_some() {
        return "image id in section 13 (located when the plan was made)".into();
    }
    if app.kubernetes.is_some() {
        return "manifests in section 13; objects' digest in the cluster's release record".into();
    }
    let want = app.artifact.replace("{version}", &r.version);
    let want = want.trim_start_matches("./");
    c.plan
        .inputs
        .iter()
        .find(|x| x.role == "artifact" && x.path.ends_with(want))
        .map_or_else(|| "not recorded".into(), |x| x.sha256.clone())
}

/// One row per app and version the plan installs, with its number of targets.
fn releases(body: &PlanBody) -> Vec<ReleaseRow> {
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
                artifact: String::new(),
            }),
        }
    }
    releases
}

fn dependencies(c: &Ctx<'_>, releases: &[ReleaseRow]) -> Vec<DependencyRow> {
    let apps: Vec<&str> = releases.iter().map(|r| r.app.as_str()).collect();
    c.inv
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
        .collect()
}

/// The inventory's databases of the plan's sites (or of every site).
fn databases(c: &Ctx<'_>) -> Vec<DatabaseRow> {
    c.inv
        .databases
        .iter()
        .filter(|d| d.site.as_deref().is_none_or(|s| c.site_set.contains(s)))
        .map(|d| DatabaseRow {
            id: d.id.clone(),
            engine: d.engine.clone(),
            identifier: d.identifier.clone(),
            site: d.site.clone().unwrap_or_else(|| "all".into()),
        })
        .collect()
}

/// A site's maintenance window in words ("sat,sun 22:00 for 240 min (America/Chicago)").
fn window_of(inv: &Inventory, site: &str) -> String {
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
}

/// The failure policy, each wave's limits, each site's window and every waiver.
fn constraints(c: &Ctx<'_>) -> Vec<String> {
    let body = c.body;
    let mut constraints = vec![format!(
        "On failure: `{}`.",
        match body.on_failure {
            OnFailure::Halt => "halt (stop, leave everything as it is, resume later)",
            OnFailure::Backout =>
                "backout (undo the failed target, and every completed step when a wave crosses its threshold)",
        }
    )];
    for w in &body.waves {
        constraints.push(format!(
            "Wave `{}`: at most {} target(s) at once; {} failure(s) tolerated.",
            w.name, w.max_parallel, w.failure_threshold
        ));
    }
    for s in &c.sites {
        constraints.push(format!(
            "Site `{s}` maintenance window: {}.",
            window_of(c.inv, s)
        ));
    }
    for r in &body.readiness {
        if let Some(w) = &r.waived {
            constraints.push(format!("Waiver for endpoint `{}`: {w}", r.endpoint));
        }
    }
    constraints
}

fn roles(c: &Ctx<'_>) -> Vec<RoleRow> {
    c.touched_sites()
        .flat_map(|s| {
            s.roles.iter().map(|r| RoleRow {
                site: s.id.clone(),
                role: r.role.clone(),
                name: r.name.clone(),
                contact: r.contact.clone().unwrap_or_default(),
            })
        })
        .collect()
}

fn approvers(inv: &Inventory) -> Vec<ApproverRow> {
    inv.approvers
        .iter()
        .map(|a| ApproverRow {
            name: a.name.clone(),
            roles: a.roles.join(", "),
            public_key: a.public_key.clone(),
        })
        .collect()
}

/// Each gate with the approval that opened it: signed for this plan's digest by an inventory
/// approver of the gate's role, its signature verified.
fn gates(c: &Ctx<'_>) -> Vec<GateRow> {
    let digest = crate::approval::plan_digest(c.plan);
    c.body
        .gates
        .iter()
        .map(|g| {
            let ok = c.mine.iter().find_map(|e| {
                if e.event != Event::Approval {
                    return None;
                }
                let a: SignedApproval = serde_json::from_value(e.detail.clone()?).ok()?;
                (a.payload.gate == g.name
                    && a.payload.role == g.role
                    && a.payload.plan_sha256 == digest
                    && crate::approval::verify(&a, Some(&c.inv.approvers)).is_ok())
                .then_some((a, *e))
            });
            let row = GateRow {
                name: g.name.clone(),
                before_wave: c.wave_name(g.wave),
                role: g.role.clone(),
                status: "not approved".into(),
                when: String::new(),
                comment: String::new(),
                evidence: String::new(),
                seq: String::new(),
                digest: String::new(),
            };
            match ok {
                Some((a, e)) => GateRow {
                    status: format!("approved by {} (signature verified)", a.payload.approver),
                    when: a.payload.signed_at.clone(),
                    comment: a.payload.comment.clone().unwrap_or_default(),
                    evidence: short(&e.hash),
                    seq: e.seq.to_string(),
                    digest: a.payload.plan_sha256.clone(),
                    ..row
                },
                None => row,
            }
        })
        .collect()
}

/// Each wave with its sites, limits, windows and when its steps were recorded.
fn timeline(c: &Ctx<'_>) -> Vec<WaveRow> {
    let body = c.body;
    body.waves
        .iter()
        .enumerate()
        .map(|(w, wave)| {
            let ids: Vec<&str> = body
                .steps
                .iter()
                .filter(|s| s.wave == w)
                .map(|s| s.id.as_str())
                .collect();
            let times: Vec<&str> = c
                .mine
                .iter()
                .filter(|e| e.step.as_deref().is_some_and(|s| ids.contains(&s)))
                .map(|e| e.time.as_str())
                .collect();
            let or_dash = |t: Option<&&str>| t.map_or_else(|| "-".into(), |t| (*t).to_owned());
            WaveRow {
                number: w + 1,
                name: wave.name.clone(),
                sites: wave.sites.join(", "),
                max_parallel: wave.max_parallel,
                failure_threshold: wave.failure_threshold,
                windows: wave
                    .sites
                    .iter()
                    .map(|s| format!("{s}: {}", window_of(c.inv, s)))
                    .collect::<Vec<_>>()
                    .join("; "),
                started: c.with_local(&wave.sites, or_dash(times.iter().min())),
                finished: c.with_local(&wave.sites, or_dash(times.iter().max())),
                in_window: in_window(c, &ids),
            }
        })
        .collect()
}

/// Whether a wave's steps started inside their sites' maintenance windows: `yes`, the sites
/// started outside (and the entries that overrode them), `no window set`, or `-` before apply.
fn in_window(c: &Ctx<'_>, ids: &[&str]) -> String {
    let starts: Vec<(&str, &Entry)> = c
        .mine
        .iter()
        .filter(|e| e.event == Event::StepStarted)
        .filter_map(|e| Some((e.step.as_deref()?, *e)))
        .filter(|(s, _)| ids.contains(s))
        .collect();
    if starts.is_empty() {
        return "-".into();
    }
    let mut windowed = false;
    let mut outside: Vec<String> = Vec::new();
    for (_, e) in &starts {
        let site = e.site.as_deref().unwrap_or_default();
        let Some(w) = c.inv.site(site).and_then(|s| s.maintenance_window.as_ref()) else {
            continue;
        };
        windowed = true;
        let Ok(t) = chrono::DateTime::parse_from_rfc3339(&e.time) else {
            continue;
        };
        let open = matches!(
            crate::window::state(w, t.with_timezone(&chrono::Utc)),
            Some(crate::window::State::Open(_))
        );
        if !open && !outside.iter().any(|o| o.starts_with(site)) {
            let by = c
                .mine
                .iter()
                .find(|o| o.event == Event::WindowOverridden && o.site.as_deref() == Some(site))
                .map_or_else(
                    || "not overridden".to_owned(),
                    |o| format!("overridden by {}, entry #{}", o.actor, o.seq),
                );
            outside.push(format!("{site} ({by})"));
        }
    }
    match (windowed, outside.is_empty()) {
        (false, _) => "no window set".into(),
        (true, true) => "yes".into(),
        (true, false) => format!("no: {}", outside.join(", ")),
    }
}

/// A site: its topology, hardware readiness and the software on each target.
fn site_row(c: &Ctx<'_>, s: &Site) -> SiteRow {
    let inv = c.inv;
    let mut topology: Vec<String> = s
        .clouds
        .iter()
        .filter_map(|id| inv.cloud(id))
        .map(|cl| format!("cloud `{}` ({})", cl.id, cl.kind.as_str()))
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
    SiteRow {
        id: s.id.clone(),
        tier: serde_json::to_value(s.tier)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        location: s.location.clone().unwrap_or_default(),
        window: window_of(inv, &s.id),
        topology,
        hardware: hardware_rows(c, s),
        software: software_rows(c.body, &s.id),
    }
}

/// Every endpoint of the site: declared requirements against what the plan observed, or the
/// declaration alone when the plan has no step on it.
fn hardware_rows(c: &Ctx<'_>, s: &Site) -> Vec<HardwareRow> {
    let mut rows = assessed_rows(c.body, &s.id);
    for e in s.endpoints.iter().filter_map(|e| c.inv.endpoint(e)) {
        if rows.iter().any(|r| r.endpoint == e.id) {
            continue;
        }
        let h = &e.hardware;
        rows.push(HardwareRow {
            endpoint: e.id.clone(),
            required: format!(
                "cpus {}, memory_mb {}, disk_gb {}, os {}",
                h.cpus, h.memory_mb, h.disk_gb, h.os
            ),
            observed: "not observed: the plan has no step on it".into(),
            verdict: "-".into(),
        });
    }
    rows
}

/// The endpoints the plan touches, as readiness assessed them.
fn assessed_rows(body: &PlanBody, site: &str) -> Vec<HardwareRow> {
    let facts = |f: &dyn Fn(&crate::readiness::Check) -> String,
                 r: &crate::readiness::Readiness| {
        r.checks.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    body.readiness
        .iter()
        .filter(|r| r.site == site)
        .map(|r| HardwareRow {
            endpoint: r.endpoint.clone(),
            required: facts(&|c| format!("{} {}", c.fact, c.required), r),
            observed: facts(&|c| format!("{} {}", c.fact, c.observed), r),
            verdict: if r.ready {
                "ready".into()
            } else if r.waived.is_some() {
                "waived".into()
            } else {
                "NOT ready".into()
            },
        })
        .collect()
}

fn software_rows(body: &PlanBody, site: &str) -> Vec<SoftwareRow> {
    body.targets
        .iter()
        .filter(|t| t.target.site == site)
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
            platform: platform(t),
        })
        .collect()
}

/// What a target runs on, from its observation: the endpoint's OS, the Docker engine, the
/// Kubernetes API server; "not reported" where the driver says nothing.
fn platform(t: &crate::plan::TargetObservation) -> String {
    let f = &t.observed.facts;
    match t.target.kind {
        TargetKind::Local => "a local directory of the machine running ferry".into(),
        TargetKind::Ssh => f
            .get("os")
            .map_or_else(|| "not reported".into(), |os| os.clone()),
        TargetKind::Docker => f
            .get("engine")
            .cloned()
            .unwrap_or_else(|| "Docker Engine (version not reported)".into()),
        TargetKind::Kubernetes => f.get("server").map_or_else(
            || "Kubernetes (API server not reported)".into(),
            |s| format!("Kubernetes API server {s}"),
        ),
        TargetKind::Rds => "AWS RDS".into(),
    }
}

/// The deployment checklist and the back-out checklist: a row per step each, filled from the
/// step's last recorded event.
fn checklists(c: &Ctx<'_>) -> (Vec<CheckRow>, Vec<CheckRow>) {
    c.body
        .steps
        .iter()
        .map(|s| {
            let ev = c.step_events(&s.id);
            let wave = c.wave_name(s.wave);
            let mut rows = (
                check_row(c.body, s, ev, wave.clone()),
                backout_row(s, ev, wave),
            );
            for r in [&mut rows.0, &mut rows.1] {
                r.when_local = c.local_time(&s.target.site, &r.when);
                if let Some(p) = c.person(&r.who) {
                    r.who = p;
                }
            }
            rows
        })
        .unzip()
}

/// A checklist row from the step's last event among `events`, with `marks` saying what each
/// means (`[x]`, `[!]`, `[ ]`) and `bad` the event whose message becomes the row's note.
fn row_of(
    s: &Step,
    wave: String,
    action: String,
    last: Option<&Entry>,
    (mark, status): (&str, &str),
    bad: Event,
) -> CheckRow {
    CheckRow {
        step: s.id.clone(),
        wave,
        target: s.target.id.clone(),
        action,
        mark: mark.into(),
        status: status.into(),
        who: last.map(|e| e.actor.clone()).unwrap_or_default(),
        when: last.map(|e| e.time.clone()).unwrap_or_default(),
        when_local: String::new(),
        seq: last.map(|e| e.seq.to_string()).unwrap_or_default(),
        evidence: last.map(|e| short(&e.hash)).unwrap_or_default(),
        note: last
            .filter(|e| e.event == bad)
            .and_then(|e| e.message.clone())
            .unwrap_or_default(),
    }
}

fn check_row(body: &PlanBody, s: &Step, ev: &[&Entry], wave: String) -> CheckRow {
    let action = match (&body.kind, &s.from) {
        (SavedPlanKind::Backout, _) => format!(
            "switch back {} -> {}",
            s.from.as_deref().unwrap_or("(none)"),
            s.to
        ),
        (_, Some(f)) => format!("upgrade {f} -> {}", s.to),
        (_, None) => format!("install {}", s.to),
    };
    let last = ev.iter().rev().copied().find(|e| {
        matches!(
            e.event,
            Event::StepSucceeded | Event::StepFailed | Event::StepStarted
        )
    });
    let marks = match last.map(|e| e.event) {
        Some(Event::StepSucceeded) => ("[x]", "done, verified healthy"),
        Some(Event::StepFailed) => ("[!]", "FAILED"),
        Some(Event::StepStarted) => ("[ ]", "started, not finished"),
        _ => ("[ ]", "not done"),
    };
    row_of(s, wave, action, last, marks, Event::StepFailed)
}

fn backout_row(s: &Step, ev: &[&Entry], wave: String) -> CheckRow {
    let last = ev.iter().rev().copied().find(|e| {
        matches!(
            e.event,
            Event::StepBackedOut | Event::UndoFailed | Event::UndoStarted
        )
    });
    let marks = match last.map(|e| e.event) {
        Some(Event::StepBackedOut) => ("[x]", "backed out, previous release verified"),
        Some(Event::UndoFailed) => ("[!]", "BACK-OUT FAILED: needs attention"),
        Some(Event::UndoStarted) => ("[ ]", "back-out started, not finished"),
        _ => ("[ ]", "not needed so far"),
    };
    row_of(s, wave, undo_text(s), last, marks, Event::UndoFailed)
}

/// What undoing a step does, in words (with the commands for a Kubernetes app).
fn undo_text(s: &Step) -> String {
    let kube = s.target.kind == TargetKind::Kubernetes;
    let (app, site) = (&s.target.app, &s.target.site);
    match (&s.undo, kube) {
        (Undo::SwitchTo { version, .. }, false) => format!("switch back to {version}"),
        (Undo::SwitchTo { version, .. }, true) => format!(
            "re-apply the last rolled-out revision of {version} from the cluster's release history (`ferry backout --app {app} --site {site}`, or `ferry rollback {app} --site {site} --to REVISION`; `ferry history` lists revisions)"
        ),
        (Undo::Uninstall, false) => "uninstall (first install)".into(),
        (Undo::Uninstall, true) => {
            format!("uninstall (first install): `ferry rollback {app} --site {site} --uninstall`")
        }
        (Undo::Keep, _) => "nothing to undo (kept)".into(),
    }
}

/// How each release is verified, and (once applied) how many targets passed.
fn verification(
    c: &Ctx<'_>,
    releases: &[ReleaseRow],
    checklist: &[CheckRow],
    started: bool,
) -> Vec<VerifyRow> {
    releases
        .iter()
        .filter_map(|r| c.inv.app(&r.app).map(|a| (r, a)))
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
            let count = |mark: &str| {
                checklist
                    .iter()
                    .filter(|c| c.target.ends_with(&format!("/{}", r.app)) && c.mark == mark)
                    .count()
            };
            let (ok, bad) = (count("[x]"), count("[!]"));
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
        .collect()
}

/// One `ferry backout` command per app and site the plan touches.
fn backout_commands(body: &PlanBody, releases: &[ReleaseRow]) -> Vec<String> {
    let mut v = Vec::new();
    for r in releases {
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
}

/// Who may order a back-out, per site, as the inventory declares it (never guessed).
fn backout_authority(c: &Ctx<'_>) -> Vec<String> {
    c.touched_sites()
        .map(|s| {
            if s.backout_authority.is_empty() {
                format!(
                    "{}: not declared in the inventory (sites[].backout_authority)",
                    s.id
                )
            } else {
                format!("{}: {}", s.id, s.backout_authority.join(", "))
            }
        })
        .collect()
}

/// How to roll back each database (the pre-change snapshot this plan took, when the ledger
/// has it), and every snapshot the ledger mentions for this plan.
fn rollback(c: &Ctx<'_>, databases: &[DatabaseRow]) -> Vec<String> {
    let mut rollback = Vec::new();
    if databases.is_empty() {
        rollback.push("No database in the inventory belongs to these sites: rollback is the back-out above (the previous release is kept on every target).".into());
    }
    for d in databases {
        let taken = c.mine.iter().rev().find(|e| {
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
    for e in c
        .mine
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
    rollback
}

/// What the plan, the inventory and the ledger show to be risky, each with its mitigation.
fn risks(c: &Ctx<'_>, releases: &[ReleaseRow], checklist: &[CheckRow]) -> Vec<RiskRow> {
    let row = |risk: String, mitigation: String| RiskRow { risk, mitigation };
    let mut risks = Vec::new();
    for r in releases.iter().filter(|r| r.first_installs > 0) {
        risks.push(row(
            format!("{} is installed for the first time on {} target(s): there is no earlier release to go back to.", r.app, r.first_installs),
            "Back-out uninstalls it; keep the site's previous process documented until the release is accepted.".into(),
        ));
    }
    for t in &c.body.targets {
        for d in &t.observed.drift {
            risks.push(row(
                format!("Drift on {} when planned: {d}", t.target.id),
                "The plan repairs it; find out who changed it by hand before applying.".into(),
            ));
        }
    }
    for r in c.body.readiness.iter().filter(|r| !r.ready) {
        risks.push(row(
            format!(
                "Endpoint {} is short of its hardware requirements.",
                r.endpoint
            ),
            r.waived.clone().map_or_else(
                || "Not waived: the plan is blocked until it is fixed.".into(),
                |w| format!("Waived: {w}"),
            ),
        ));
    }
    for s in &c.sites {
        if c.inv
            .site(s)
            .is_some_and(|x| x.maintenance_window.is_none() && x.tier == Tier::Prod)
        {
            risks.push(row(
                format!("Production site {s} has no maintenance window in the inventory."),
                "Agree the time with the site contact before applying.".into(),
            ));
        }
    }
    for e in c.mine.iter().filter(|e| e.event == Event::WindowOverridden) {
        risks.push(row(
            format!(
                "Ledger entry #{} ({}): {}",
                e.seq,
                short(&e.hash),
                e.message.clone().unwrap_or_default()
            ),
            "Confirm with the site contact that work outside the window was agreed.".into(),
        ));
    }
    let mut actors: Vec<&str> = c.mine.iter().map(|e| e.actor.as_str()).collect();
    actors.sort_unstable();
    actors.dedup();
    for a in actors.into_iter().filter(|a| c.person(a).is_none()) {
        risks.push(row(
            format!("The ledger records actor `{a}`, who is not a named person in the inventory."),
            format!("Map `{a}` to the person accountable in the inventory's `actors`, or apply with `--actor NAME`."),
        ));
    }
    for site in c.touched_sites().filter(|s| s.backout_authority.is_empty()) {
        risks.push(row(
            format!(
                "Site {} declares nobody with authority to order a back-out.",
                site.id
            ),
            "Name them in the inventory (`sites[].backout_authority`) before applying.".into(),
        ));
    }
    for (w, wave) in c.body.waves.iter().enumerate() {
        let prod = wave
            .sites
            .iter()
            .any(|s| c.inv.site(s).is_some_and(|x| x.tier == Tier::Prod));
        let changes = c.body.steps.iter().any(|s| s.wave == w);
        if prod && changes && !c.body.gates.iter().any(|g| g.wave == w) {
            risks.push(row(
                format!("Wave `{}` changes production sites without an approval gate.", wave.name),
                "Add a gate before it in the release plan (`gates: [{name, before_wave, role}]`), so a named approver signs the plan first.".into(),
            ));
        }
    }
    for ch in checklist.iter().filter(|ch| ch.mark == "[!]") {
        risks.push(row(
            format!(
                "Step {} on {} failed during apply: {}",
                ch.step, ch.target, ch.note
            ),
            "See the back-out checklist for what was undone; fix and make a new plan.".into(),
        ));
    }
    if risks.is_empty() {
        risks.push(row(
            "No specific risk found in the plan, the inventory or the ledger.".into(),
            "Follow the checklist; the back-out procedure below applies.".into(),
        ));
    }
    risks
}
