//! A wave's steps besides its releases: the `before`/`after` steps (gates, calls, records) and
//! the retirement of app lines.

use super::{PlanError, Planner, Step, StepAction, StepOp, Undo, op_step};
use crate::model::{Hook, ReleasePlan, TargetKind, Wave};
use crate::target::{TargetRef, resolve};

/// What a retired target's step deploys: nothing.
pub const RETIRED: &str = "(retired)";

impl Planner<'_> {
    /// Whether a wave retires a line that some target of it still runs (or was not observed).
    pub(super) fn wave_retires(&self, rp: &ReleasePlan, wave: &Wave) -> bool {
        wave.sites.iter().any(|site| {
            rp.retire.iter().any(|r| {
                self.inv.app(&r.app).is_some_and(|app| {
                    resolve(self.inv, app, site)
                        .iter()
                        .any(|t| self.observed.get(&t.id).is_none_or(|o| o.current.is_some()))
                })
            })
        })
    }

    /// Steps for `hooks`, run one after another: the first waits for `first_deps`, each next
    /// one for the one before. Returns their ids.
    pub(super) fn hook_steps(
        &mut self,
        w: usize,
        wave: &Wave,
        hooks: &[Hook],
        first_deps: Vec<String>,
    ) -> Result<Vec<String>, PlanError> {
        let mut ids: Vec<String> = Vec::new();
        for hook in hooks {
            let op = crate::hooks::compile(hook, self.inv).map_err(|p| {
                let msg = p.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; ");
                PlanError::InvalidStep(hook.name.clone(), msg)
            })?;
            let site = hook
                .site
                .clone()
                .unwrap_or_else(|| match wave.sites.as_slice() {
                    [only] => only.clone(),
                    _ => "-".into(),
                });
            let depends_on = match ids.last() {
                Some(prev) => vec![prev.clone()],
                None => first_deps.clone(),
            };
            let id = self.next_id();
            let step = op_step(
                id.clone(),
                w,
                TargetRef::new(&site, "-", &hook.name, TargetKind::Local),
                StepOp {
                    title: hook.name.clone(),
                    op,
                    on_failure: None,
                },
                depends_on,
            );
            self.steps.push(step);
            ids.push(id);
        }
        Ok(ids)
    }

    /// A step for each target of `site` running a line the plan retires: it is uninstalled
    /// after the wave's `before` steps and after this site's releases of the wave.
    pub(super) fn retire_steps(
        &mut self,
        w: usize,
        site: &str,
        rp: &ReleasePlan,
        prereq: &[String],
    ) -> Result<(), PlanError> {
        let site_releases: Vec<String> = self
            .steps
            .iter()
            .filter(|s| s.wave == w && s.target.site == site && s.op.is_none())
            .map(|s| s.id.clone())
            .collect();
        for r in &rp.retire {
            let app = self
                .inv
                .app(&r.app)
                .ok_or_else(|| PlanError::UnknownApp(r.app.clone()))?;
            for target in resolve(self.inv, app, site) {
                let obs = self.observe(&target)?;
                let Some(current) = &obs.current else {
                    continue;
                };
                let id = self.next_id();
                self.steps.push(Step {
                    id,
                    wave: w,
                    target,
                    from: Some(current.clone()),
                    to: RETIRED.into(),
                    action: StepAction::Uninstall,
                    // A retired line is not reinstalled by a back-out: releasing it again is a
                    // release plan's work (its artifact, checks and gates).
                    undo: Undo::Keep,
                    depends_on: prereq.iter().chain(&site_releases).cloned().collect(),
                    op: None,
                    revision: None,
                });
            }
        }
        Ok(())
    }
}
