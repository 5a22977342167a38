//! What each catalog change is allowed to do: the decisions behind `ferry versions` and the
//! plan-time check of a release.

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::{Action, AddHow, Catalog, Change, Decision, Offer, Policy, VState, Version};
use super::id::{self, VersionId};
use crate::ledger::{Entry, Event};

type Refusal = String;

impl Catalog {
    /// New content under an id: a new version (active unless the offer says inactive), the
    /// next revision of an existing one, the next major, or nothing (the same content again).
    pub fn add(&self, app: &str, p: Policy, o: &Offer) -> Result<Decision, Refusal> {
        let parsed = id::parse(p.scheme, o.id)?;
        if o.how == AddHow::NewMajor {
            let next = self.next_major(app, &parsed.lineage);
            let id = id::id_of_major(p.scheme, &parsed.lineage, next);
            let plain = Offer {
                id: &id,
                how: AddHow::Plain,
                ..o.clone()
            };
            return self.add(app, p, &plain);
        }
        let Some(v) = self.version(app, o.id) else {
            if let AddHow::RevisionOf(of) = &o.how {
                return Err(format!(
                    "`{of}` of {app} is not in the catalog: there is no revision to follow; add it without --revision-of"
                ));
            }
            let state = if o.inactive {
                VState::Inactive
            } else {
                VState::Active
            };
            if state == VState::Active {
                self.room_for(app, p, &parsed, o.id)?;
            }
            return Ok(Decision::Record(change(
                Action::Added,
                o.id,
                &parsed,
                state,
                o,
                1,
            )));
        };
        if let Some(r) = v.revision_with(o.sha256) {
            return match v.state {
                VState::Purged => self.bring_back(app, p, v, &parsed, o, r.number),
                VState::Trashed => Err(format!(
                    "`{}` of {app} is in the trash; `ferry versions restore` brings it back",
                    o.id
                )),
                _ => Ok(Decision::Unchanged(format!(
                    "`{}` of {app} already holds this content as revision {} ({})",
                    o.id,
                    r.number,
                    v.state.as_str()
                ))),
            };
        }
        match &o.how {
            AddHow::RevisionOf(of) if of == o.id => self.revise(app, p, v, &parsed, o),
            AddHow::RevisionOf(of) => Err(format!(
                "--revision-of names `{of}` but the content is offered as `{}`: a revision keeps its id",
                o.id
            )),
            _ => Err(ambiguous(
                app,
                p,
                v,
                o,
                self.next_major(app, &parsed.lineage),
            )),
        }
    }

    fn revise(
        &self,
        app: &str,
        p: Policy,
        v: &Version,
        parsed: &VersionId,
        o: &Offer,
    ) -> Result<Decision, Refusal> {
        let next = v.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
        match v.state {
            VState::Trashed => Err(format!(
                "`{}` of {app} is in the trash; restore it before revising it",
                o.id
            )),
            VState::Purged => self.bring_back(app, p, v, parsed, o, next),
            state => Ok(Decision::Record(change(
                Action::Revised,
                o.id,
                parsed,
                state,
                o,
                next,
            ))),
        }
    }

    /// A purged id's content again: back as it was, active unless the offer says inactive.
    fn bring_back(
        &self,
        app: &str,
        p: Policy,
        v: &Version,
        parsed: &VersionId,
        o: &Offer,
        revision: u32,
    ) -> Result<Decision, Refusal> {
        let state = if o.inactive {
            VState::Inactive
        } else {
            VState::Active
        };
        if state == VState::Active {
            self.room_for(app, p, parsed, &v.id)?;
        }
        Ok(Decision::Record(change(
            Action::Returned,
            o.id,
            parsed,
            state,
            o,
            revision,
        )))
    }

    pub fn activate(
        &self,
        app: &str,
        p: Policy,
        id: &str,
        reason: &str,
    ) -> Result<Decision, Refusal> {
        let v = self.known(app, id)?;
        match v.state {
            VState::Active => Ok(Decision::Unchanged(format!(
                "`{id}` of {app} is already active"
            ))),
            VState::Inactive => {
                self.room_for(app, p, &parsed_of(v), id)?;
                Ok(Decision::Record(plain(
                    Action::Activated,
                    v,
                    VState::Active,
                    reason,
                )))
            }
            VState::Trashed => Err(format!(
                "`{id}` of {app} is in the trash: restore it first (`ferry versions restore`)"
            )),
            VState::Purged => Err(purged(app, v)),
        }
    }

    /// Deactivation, refused while `deployed_on` (targets serving it that no plan moves off)
    /// is not empty.
    pub fn deactivate(
        &self,
        app: &str,
        id: &str,
        deployed_on: &[String],
        reason: &str,
    ) -> Result<Decision, Refusal> {
        let v = self.known(app, id)?;
        match v.state {
            VState::Inactive => Ok(Decision::Unchanged(format!(
                "`{id}` of {app} is already inactive"
            ))),
            VState::Active => {
                still_deployed(app, id, "deactivated", deployed_on)?;
                Ok(Decision::Record(plain(
                    Action::Deactivated,
                    v,
                    VState::Inactive,
                    reason,
                )))
            }
            VState::Trashed => Err(format!("`{id}` of {app} is in the trash")),
            VState::Purged => Err(purged(app, v)),
        }
    }

    pub fn trash(
        &self,
        app: &str,
        id: &str,
        deployed_on: &[String],
        reason: &str,
    ) -> Result<Decision, Refusal> {
        let v = self.known(app, id)?;
        match v.state {
            VState::Trashed => Ok(Decision::Unchanged(format!(
                "`{id}` of {app} is already in the trash"
            ))),
            VState::Purged => Err(purged(app, v)),
            _ => {
                still_deployed(app, id, "trashed", deployed_on)?;
                Ok(Decision::Record(plain(
                    Action::Trashed,
                    v,
                    VState::Trashed,
                    reason,
                )))
            }
        }
    }

    /// Out of the trash, inactive: activating it again is a decision of its own.
    pub fn restore(&self, app: &str, id: &str, reason: &str) -> Result<Decision, Refusal> {
        let v = self.known(app, id)?;
        match v.state {
            VState::Trashed => Ok(Decision::Record(plain(
                Action::Restored,
                v,
                VState::Inactive,
                reason,
            ))),
            VState::Purged => Err(purged(app, v)),
            s => Err(format!(
                "`{id}` of {app} is not in the trash (it is {})",
                s.as_str()
            )),
        }
    }

    /// A purge: only from the trash, with the id typed again exactly, under an approval (the
    /// ledger entry the caller found and checked).
    pub fn purge(
        &self,
        app: &str,
        id: &str,
        confirm: &str,
        approval_seq: u64,
        reason: &str,
    ) -> Result<Decision, Refusal> {
        let v = self.known(app, id)?;
        if v.state != VState::Trashed {
            return Err(format!(
                "`{id}` of {app} is {}: only a version in the trash can be purged (`ferry versions trash` first)",
                v.state.as_str()
            ));
        }
        if confirm != id {
            return Err(format!(
                "--confirm `{confirm}` is not `{id}`: a purge names the id again, exactly"
            ));
        }
        let mut c = plain(Action::Purged, v, VState::Purged, reason);
        c.approval_seq = Some(approval_seq);
        Ok(Decision::Record(c))
    }

    /// The ledger entry after which a purge approval counts: the version's last trashing.
    pub fn trashed_at(&self, app: &str, id: &str) -> Option<u64> {
        let v = self.version(app, id)?;
        v.history
            .iter()
            .rev()
            .find(|m| m.action == Action::Trashed)
            .map(|m| m.seq)
    }

    fn known(&self, app: &str, id: &str) -> Result<&Version, Refusal> {
        self.version(app, id).ok_or_else(|| {
            let known: Vec<&str> = self
                .apps
                .get(app)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            format!(
                "`{id}` of {app} is not in the catalog (it holds: {})",
                if known.is_empty() {
                    "nothing yet".into()
                } else {
                    known.join(", ")
                }
            )
        })
    }

    /// The next major of a lineage: one past every major it ever had (purged ones included:
    /// a major number is never given twice).
    fn next_major(&self, app: &str, lineage: &str) -> u64 {
        self.lineage(app, lineage)
            .map(|v| v.major)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// Activating `id` keeps the lineage within `max_active_majors`, or the refusal names the
    /// oldest active major to deactivate first.
    fn room_for(&self, app: &str, p: Policy, parsed: &VersionId, id: &str) -> Result<(), Refusal> {
        let active: BTreeMap<u64, Vec<&str>> = self
            .lineage(app, &parsed.lineage)
            .filter(|v| v.state == VState::Active)
            .fold(BTreeMap::new(), |mut m, v| {
                m.entry(v.major)
                    .or_insert_with(Vec::new)
                    .push(v.id.as_str());
                m
            });
        if active.contains_key(&parsed.major) || active.len() < p.max_active_majors as usize {
            return Ok(());
        }
        let (oldest, ids) = active.iter().next().expect("a full lineage is not empty");
        let majors: Vec<String> = active.keys().map(u64::to_string).collect();
        Err(format!(
            "`{id}` of {app} would make {} majors active; at most {} may be (now active: major {}): deactivate {} (major {oldest}, the oldest) first",
            active.len() + 1,
            p.max_active_majors,
            majors.join(" and "),
            ids.iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// A release plan may deploy `id` of `app`: it is in the catalog, active, and the artifact
/// (when there is one to hash) is one of its revisions. Returns that revision's number.
pub fn deployable(
    c: &Catalog,
    app: &str,
    id: &str,
    sha256: Option<&str>,
) -> Result<Option<u32>, Refusal> {
    let Some(v) = c.version(app, id) else {
        return Err(format!(
            "`{id}` of {app} is not in its version catalog: `ferry versions add {app} {id} --reason ...` first"
        ));
    };
    if v.state != VState::Active {
        return Err(format!(
            "`{id}` of {app} is {}: {}",
            v.state.as_str(),
            v.last_change()
        ));
    }
    let Some(sha) = sha256 else {
        return Ok(None);
    };
    match v.revisions.iter().find(|r| r.sha256 == sha && !r.purged) {
        Some(r) => Ok(Some(r.number)),
        None => Err(format!(
            "the artifact of `{id}` of {app} (sha256 {sha}) is none of its revisions ({}): a revision cannot change under its id; add it with `--revision-of {id}` if it is one",
            v.revisions
                .iter()
                .map(|r| format!("{} = {}", r.number, &r.sha256[..12.min(r.sha256.len())]))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// What each target of `app` may be serving, by the ledger's step records: a success serves
/// its `to`, a back-out its `from`; a failure whose aftermath is unknown may serve either.
/// Keys are target ids; values the possible versions (a retirement is not a version).
pub fn serving<'e>(
    entries: impl IntoIterator<Item = &'e Entry>,
    app: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in entries
        .into_iter()
        .filter(|e| e.app.as_deref() == Some(app))
    {
        let Some(target) = &e.target else { continue };
        let now: Vec<Option<&String>> = match e.event {
            Event::StepSucceeded => vec![e.to.as_ref()],
            Event::StepBackedOut => vec![e.from.as_ref()],
            Event::StepFailed => match e.detail.as_ref().and_then(|d| d.get("serving_after")) {
                Some(serde_json::Value::String(v)) if v != "unknown" => vec![Some(v)],
                Some(serde_json::Value::Null) => vec![None],
                _ => vec![e.from.as_ref(), e.to.as_ref()],
            },
            Event::UndoFailed => vec![e.from.as_ref(), e.to.as_ref()],
            _ => continue,
        };
        let set = out.entry(target.clone()).or_default();
        set.clear();
        set.extend(
            now.into_iter()
                .flatten()
                .filter(|v| *v != crate::plan::RETIRED)
                .cloned(),
        );
    }
    out.retain(|_, v| !v.is_empty());
    out
}

fn still_deployed(app: &str, id: &str, what: &str, on: &[String]) -> Result<(), Refusal> {
    if on.is_empty() {
        return Ok(());
    }
    Err(format!(
        "`{id}` of {app} cannot be {what}: it is deployed on {} (by the ledger); release those to another version first, or pass the saved plan that does (--plan)",
        on.join(", ")
    ))
}

fn ambiguous(app: &str, p: Policy, v: &Version, o: &Offer, next: u64) -> Refusal {
    format!(
        "`{}` of {app} already holds other content (revisions {}); this content (sha256 {}) is ambiguous: say `--revision-of {}` for its revision {}, or `--new-major` for `{}`",
        o.id,
        v.revisions
            .iter()
            .map(|r| r.number.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        o.sha256,
        o.id,
        v.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1,
        id::id_of_major(p.scheme, &v.lineage, next)
    )
}

fn purged(app: &str, v: &Version) -> Refusal {
    format!(
        "`{}` of {app} was purged ({}); adding its content again brings it back",
        v.id,
        v.last_change()
    )
}

fn parsed_of(v: &Version) -> VersionId {
    VersionId {
        lineage: v.lineage.clone(),
        major: v.major,
    }
}

fn change(
    action: Action,
    id: &str,
    p: &VersionId,
    state: VState,
    o: &Offer,
    revision: u32,
) -> Change {
    Change {
        action,
        id: id.to_owned(),
        lineage: p.lineage.clone(),
        major: p.major,
        state,
        revision: Some(revision),
        sha256: Some(o.sha256.to_owned()),
        size: Some(o.size),
        reason: o.reason.to_owned(),
        approval_seq: None,
        moving_plan: None,
    }
}

fn plain(action: Action, v: &Version, state: VState, reason: &str) -> Change {
    Change {
        action,
        id: v.id.clone(),
        lineage: v.lineage.clone(),
        major: v.major,
        state,
        revision: None,
        sha256: None,
        size: None,
        reason: reason.to_owned(),
        approval_seq: None,
        moving_plan: None,
    }
}
