//! Back-out, rollback and uninstall, planned as a library call: which release each target
//! returns to (the ledger's record, or the cluster's release history), as a saved plan that the
//! engine's apply then carries out.

use std::path::{Path, PathBuf};

use super::{Error, State};
use crate::drivers::Drivers;
use crate::ledger::{Entry, Event};
use crate::load::Loaded;
use crate::model::{App, Inventory, TargetKind};
use crate::plan::{self, InputFile, SavedPlan, StepAction};
use crate::target::{TargetRef, resolve};
use crate::workspace;

/// What a back-out or rollback asks for.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// A version to return to (instead of the previous one).
    pub to: Option<&'a str>,
    /// Kubernetes: a release revision to return to (`ferry rollback --to N`).
    pub revision: Option<u32>,
    /// Kubernetes: remove the app instead (cleaning up a failed first install).
    pub uninstall: bool,
    pub dry_run: bool,
}

/// Plans a back-out (or rollback, or uninstall) of `app` on `site` from what the targets run,
/// the ledger (which must verify) or, for Kubernetes, the cluster's own release history; writes
/// the saved plan under STATE_DIR/plans and records it. Nothing is applied or printed.
pub async fn plan(
    state: &State,
    inventory: &Path,
    app: &str,
    site: &str,
    req: &Request<'_>,
) -> Result<(SavedPlan, PathBuf), Error> {
    let (inv, a, targets) = app_on_site(inventory, app, site)?;
    let kube = a.target == TargetKind::Kubernetes;
    if (req.revision.is_some() || req.uninstall) && !kube {
        return Err(Error::Refused(format!(
            "app `{app}` runs on `{}`; revisions and uninstall are for kubernetes apps (use `ferry backout --to VERSION`)",
            a.target.as_str()
        )));
    }
    let base = workspace::base_dir(&inv.source.path);
    let specs = targets
        .iter()
        .map(|t| workspace::target_spec(&inv.value, &base, t, false))
        .collect::<Result<Vec<_>, _>>()?; // one app, a site's few targets
    let observed = workspace::observe_all(&Drivers::standard(), &specs).await?;
    // Kubernetes keeps its release history in the cluster: no ledger needed.
    let entries = if kube {
        Vec::new()
    } else {
        // A back-out decides from the ledger: only from one that verifies.
        state.ledger.read_verified()?
    };
    let mut changes = Vec::new();
    let mut pinned = std::collections::BTreeMap::new();
    for (t, spec) in targets.into_iter().zip(&specs) {
        let now = observed[&t.id].clone();
        if req.uninstall {
            pinned.insert(t.id.clone(), (None, true));
            changes.push((t, now, "(uninstalled)".to_owned()));
            continue;
        }
        if let Some(n) = req.revision {
            let history = cluster_history(spec).await?;
            let r = history.revision(n).ok_or_else(|| {
                Error::Refused(format!(
                    "{}: revision {n} is not in the release history (see `ferry history {app} --site {site}`)",
                    t.id
                ))
            })?;
            if !r.was_deployed() {
                return Err(Error::Refused(format!(
                    "{}: revision {n} ({}) never rolled out ({}); roll back to one that did",
                    t.id,
                    r.version,
                    r.status.as_str()
                )));
            }
            pinned.insert(t.id.clone(), (Some(n), false));
            changes.push((t, now, r.version.clone()));
            continue;
        }
        let Some(current) = now.current.clone() else {
            let hint = if kube {
                format!(
                    "; to clean up what a failed install left, run `ferry rollback {app} --site {site} --uninstall`"
                )
            } else {
                String::new()
            };
            return Err(Error::Refused(format!(
                "{} serves nothing; there is nothing to back out{hint}",
                t.id
            )));
        };
        let back_to = match (req.to, kube) {
            (Some(v), _) => v.to_owned(),
            (None, true) => {
                let v = now.facts.get("previous_version").cloned().ok_or_else(|| {
                    Error::Refused(format!(
                        "{}: the cluster's release history has no earlier rolled-out version (first install); see `ferry history {app} --site {site}`",
                        t.id
                    ))
                })?;
                let n = now
                    .facts
                    .get("previous_revision")
                    .and_then(|n| n.parse().ok());
                pinned.insert(t.id.clone(), (n, false));
                v
            }
            (None, false) => previous_recorded(&entries, &t.id, &current)?,
        };
        if !now.releases.contains(&back_to) {
            return Err(Error::Refused(format!(
                "release {back_to} is no longer on {} (it has: {})",
                t.id,
                now.releases.join(", ")
            )));
        }
        if back_to == current {
            return Err(Error::Refused(format!("{} already serves {back_to}", t.id)));
        }
        changes.push((t, now, back_to));
    }
    let what = if req.uninstall {
        "uninstall"
    } else if req.revision.is_some() {
        "rollback"
    } else {
        "backout"
    };
    let mut body = plan::plan_backout(&format!("{what} {app} on {site}"), changes);
    for step in &mut body.steps {
        if let Some((revision, uninstall)) = pinned.get(&step.target.id) {
            step.revision = *revision;
            if *uninstall {
                step.action = StepAction::Uninstall;
                step.undo = plan::Undo::Keep;
            }
        }
    }
    let inputs = vec![InputFile {
        role: "inventory".into(),
        path: std::fs::canonicalize(inventory)
            .unwrap_or_else(|_| inventory.to_owned())
            .display()
            .to_string(),
        sha256: inv.source.sha256.clone(),
    }];
    let saved = workspace::new_saved_plan(&state.actor, inputs, body);
    let path = state
        .state_dir
        .join("plans")
        .join(format!("{}.json", saved.id));
    workspace::write_plan(&path, &saved)?;
    super::plan::record_created(state, &saved, &path)?;
    Ok((saved, path))
}

/// The inventory, app `app` in it and its targets on `site`, or why not.
pub fn app_on_site(
    inventory: &Path,
    app: &str,
    site: &str,
) -> Result<(Loaded<Inventory>, App, Vec<TargetRef>), Error> {
    let (inv, _) = workspace::load(inventory, &[]).map_err(Error::Invalid)?;
    let a =
        inv.value.app(app).cloned().ok_or_else(|| {
            Error::Refused(format!("app `{app}` is not in {}", inventory.display()))
        })?;
    if inv.value.site(site).is_none() {
        return Err(Error::Refused(format!(
            "site `{site}` is not in {}",
            inventory.display()
        )));
    }
    let targets = resolve(&inv.value, &a, site);
    if targets.is_empty() {
        return Err(Error::Refused(format!(
            "app `{app}` is not installed on site `{site}`"
        )));
    }
    Ok((inv, a, targets))
}

/// The release history a Kubernetes app has in its cluster, per target of the site.
pub async fn history(
    inventory: &Path,
    app: &str,
    site: &str,
) -> Result<Vec<(String, crate::kubernetes::release::History)>, Error> {
    let (inv, a, targets) = app_on_site(inventory, app, site)?;
    if a.target != crate::model::TargetKind::Kubernetes {
        return Err(Error::Refused(format!(
            "app `{app}` runs on `{}`; release history in the cluster is kept for kubernetes apps (see `ferry ledger show`)",
            a.target.as_str()
        )));
    }
    let base = workspace::base_dir(&inv.source.path);
    let mut out = Vec::new();
    for t in &targets {
        let spec = workspace::target_spec(&inv.value, &base, t, false)?;
        out.push((t.id.clone(), cluster_history(&spec).await?));
    }
    Ok(out)
}

/// The release records of a Kubernetes app's target, read from its cluster.
#[cfg(feature = "kubernetes")]
pub async fn cluster_history(
    spec: &crate::drivers::TargetSpec,
) -> Result<crate::kubernetes::release::History, Error> {
    crate::drivers::kube::KubeDriver::new()
        .releases(spec)
        .await
        .map_err(|e| Error::Refused(e.to_string()))
}

#[cfg(not(feature = "kubernetes"))]
pub async fn cluster_history(
    spec: &crate::drivers::TargetSpec,
) -> Result<crate::kubernetes::release::History, Error> {
    Err(Error::Refused(format!(
        "{}: kubernetes apps need a build with the `kubernetes` feature",
        spec.target.id
    )))
}

/// The release a target served before `current`, according to the ledger.
///
/// Successes and back-outs are certain. A failure is certain when its entry says what the
/// target served afterwards; when that was unknown (the endpoint was unreachable), the step's
/// target release is only *tentative*: it counts if the target is observed serving it now.
fn previous_recorded(entries: &[Entry], target: &str, current: &str) -> Result<String, Error> {
    let mut history: Vec<(Option<String>, bool)> = Vec::new();
    let push = |history: &mut Vec<(Option<String>, bool)>, v: Option<String>, tentative: bool| {
        if let Some(last) = history.last_mut()
            && last.0 == v
        {
            last.1 &= tentative;
            return;
        }
        history.push((v, tentative));
    };
    for e in entries
        .iter()
        .filter(|e| e.target.as_deref() == Some(target))
    {
        if history.is_empty() && matches!(e.event, Event::StepSucceeded | Event::StepFailed) {
            push(&mut history, e.from.clone(), false);
        }
        match e.event {
            Event::StepSucceeded => push(&mut history, e.to.clone(), false),
            Event::StepBackedOut => push(&mut history, e.from.clone(), false),
            Event::StepFailed => match e.detail.as_ref().and_then(|d| d.get("serving_after")) {
                Some(serde_json::Value::String(v)) if v != "unknown" => {
                    push(&mut history, Some(v.clone()), false)
                }
                Some(serde_json::Value::Null) => push(&mut history, None, false),
                _ => push(&mut history, e.to.clone(), true),
            },
            // An undo that failed may have left the step's target release in place.
            Event::UndoFailed => push(&mut history, e.to.clone(), true),
            _ => {}
        }
    }
    // Tentative entries that the target does not confirm did not happen.
    while history
        .last()
        .is_some_and(|(v, t)| *t && v.as_deref() != Some(current))
    {
        history.pop();
    }
    match history.last() {
        None => {
            return Err(Error::Refused(format!(
                "the ledger has no release recorded for {target}; name one with --to VERSION"
            )));
        }
        Some((last, _)) if last.as_deref() != Some(current) => {
            return Err(Error::Refused(format!(
                "{target} serves {current}, but the ledger's last record for it is {}: it was changed outside ferry; name the release with --to VERSION",
                last.as_deref().unwrap_or("(none)")
            )));
        }
        Some(_) => {}
    }
    match history
        .iter()
        .rev()
        .skip(1)
        .find(|(v, t)| !t && v.as_deref() != Some(current))
    {
        Some((Some(v), _)) => Ok(v.clone()),
        _ => Err(Error::Refused(format!(
            "{target} has no earlier release recorded (first install); name one with --to VERSION"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{GENESIS, NewEntry};

    const T: &str = "site/host/app";

    fn e(
        event: Event,
        from: Option<&str>,
        to: &str,
        serving_after: Option<serde_json::Value>,
    ) -> Entry {
        let mut n = NewEntry::new("t", event).plan("p");
        n.target = Some(T.into());
        n.from = from.map(str::to_owned);
        n.to = Some(to.into());
        n.detail = serving_after.map(|v| serde_json::json!({ "serving_after": v }));
        n.seal(0, GENESIS.into())
    }

    fn prev(entries: &[Entry], current: &str) -> Result<String, String> {
        previous_recorded(entries, T, current).map_err(|e| e.to_string())
    }

    #[test]
    fn history_cases() {
        use Event::*;
        let ok = |f: Option<&str>, t: &str| e(StepSucceeded, f, t, None);
        type Case<'a> = (&'a str, Vec<Entry>, &'a str, Result<&'a str, &'a str>);
        let cases: Vec<Case> = vec![
            (
                "upgrade",
                vec![ok(None, "1"), ok(Some("1"), "2")],
                "2",
                Ok("1"),
            ),
            (
                "back and forth",
                vec![
                    ok(None, "1"),
                    ok(Some("1"), "2"),
                    e(StepBackedOut, Some("1"), "2", None),
                ],
                "1",
                Ok("2"),
            ),
            (
                "failed after the switch",
                vec![
                    ok(None, "1"),
                    e(StepFailed, Some("1"), "2", Some("2".into())),
                ],
                "2",
                Ok("1"),
            ),
            (
                "failed before the switch",
                vec![
                    ok(None, "1"),
                    ok(Some("1"), "2"),
                    e(StepFailed, Some("2"), "3", Some("2".into())),
                ],
                "2",
                Ok("1"),
            ),
            (
                "unknown outcome, target confirms the switch",
                vec![
                    ok(None, "1"),
                    e(StepFailed, Some("1"), "2", Some("unknown".into())),
                ],
                "2",
                Ok("1"),
            ),
            (
                "unknown outcome, target shows no switch",
                vec![
                    ok(None, "1"),
                    ok(Some("1"), "2"),
                    e(StepFailed, Some("2"), "3", Some("unknown".into())),
                ],
                "2",
                Ok("1"),
            ),
            (
                "changed outside ferry",
                vec![ok(None, "1")],
                "7",
                Err("changed outside ferry"),
            ),
            (
                "first install",
                vec![ok(None, "1")],
                "1",
                Err("first install"),
            ),
            ("nothing recorded", vec![], "1", Err("no release recorded")),
        ];
        for (name, entries, current, want) in cases {
            match (prev(&entries, current), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{name}"),
                (Err(got), Err(w)) => assert!(got.contains(w), "{name}: {got}"),
                (got, w) => panic!("{name}: got {got:?}, want {w:?}"),
            }
        }
    }
}
