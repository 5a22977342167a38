//! The version catalog: every app's versions, their revisions, states and history, replayed
//! from the ledger's `version_changed` entries (so it is exactly as tamper-evident as the
//! ledger), and the rules that decide each change. Pure: the caller reads the ledger, hashes
//! the content and appends the [`Change`] a decision returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::id::Scheme;
use crate::ledger::{Entry, Event};

/// A version's state. Only an active version is deployed by a release plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VState {
    Active,
    Inactive,
    /// Logically deleted, with all its revisions; `restore` brings it back, `purge` removes
    /// its content for good.
    Trashed,
    /// Content removed; the id, its revisions' digests and its history stay (a tombstone).
    Purged,
}

impl VState {
    pub fn as_str(self) -> &'static str {
        match self {
            VState::Active => "active",
            VState::Inactive => "inactive",
            VState::Trashed => "trashed",
            VState::Purged => "purged",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new id, revision 1.
    Added,
    /// New content under an existing id, said to be its next revision.
    Revised,
    /// A purged id's content added again: back as it was.
    Returned,
    Activated,
    Deactivated,
    Trashed,
    Restored,
    Purged,
}

/// One lifecycle change, as the `detail` of its `version_changed` ledger entry (the entry's
/// `app` names the app, `to` the id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub action: Action,
    pub id: String,
    pub lineage: String,
    pub major: u64,
    /// The version's state after the change.
    pub state: VState,
    /// The revision the change is about (added, revised, returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub reason: String,
    /// A purge: the ledger entry of the signed approval it was made under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_seq: Option<u64>,
    /// A deactivation or trashing of a deployed version: the saved plan that moves its sites off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_plan: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revision {
    pub number: u32,
    pub sha256: String,
    pub size: u64,
    /// Its content was removed by a purge (and not added again since).
    pub purged: bool,
}

/// Who changed a version, when, how and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mark {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub action: Action,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    pub id: String,
    pub lineage: String,
    pub major: u64,
    pub state: VState,
    pub revisions: Vec<Revision>,
    pub history: Vec<Mark>,
}

impl Version {
    pub(super) fn revision_with(&self, sha256: &str) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.sha256 == sha256)
    }

    /// The last change, for messages: "deactivated by dana at ...: reason".
    pub fn last_change(&self) -> String {
        self.history.last().map_or_else(String::new, |m| {
            format!(
                "{} by {} at {} (ledger entry {}): {}",
                action_word(m.action),
                m.actor,
                m.time,
                m.seq,
                m.reason
            )
        })
    }

    /// The digest that a purge approval signs: every revision's content, in order.
    pub fn content_digest(&self) -> String {
        let all: Vec<String> = self
            .revisions
            .iter()
            .map(|r| format!("{}:{}", r.number, r.sha256))
            .collect();
        crate::load::sha256_hex(all.join("\n").as_bytes())
    }
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Added => "added",
        Action::Revised => "revised",
        Action::Returned => "added again after its purge",
        Action::Activated => "activated",
        Action::Deactivated => "deactivated",
        Action::Trashed => "trashed",
        Action::Restored => "restored",
        Action::Purged => "purged",
    }
}

/// An app's lifecycle rules, from its inventory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub scheme: Scheme,
    pub max_active_majors: u32,
}

/// What a change request comes to: a change to record, or nothing to do (and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Record(Change),
    Unchanged(String),
}

/// How new content under an id is meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddHow {
    /// A new id, or the same content again.
    Plain,
    /// The next revision of this id (it must be the id added).
    RevisionOf(String),
    /// The next major of the id's lineage, whatever id was given.
    NewMajor,
}

/// Content offered to `add`.
#[derive(Debug, Clone)]
pub struct Offer<'a> {
    pub id: &'a str,
    pub sha256: &'a str,
    pub size: u64,
    pub how: AddHow,
    /// Added inactive (not counted against `max_active_majors`).
    pub inactive: bool,
    pub reason: &'a str,
}

/// Every app's versions, by app then id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Catalog {
    pub apps: BTreeMap<String, BTreeMap<String, Version>>,
}

impl Catalog {
    /// Replays the `version_changed` entries of a verified ledger, in order.
    pub fn replay<'e>(entries: impl IntoIterator<Item = &'e Entry>) -> Result<Self, String> {
        let mut c = Catalog::default();
        for e in entries {
            c.apply_entry(e)?;
        }
        Ok(c)
    }

    /// Folds one ledger entry in (others than `version_changed` change nothing).
    pub fn apply_entry(&mut self, e: &Entry) -> Result<(), String> {
        if e.event != Event::VersionChanged {
            return Ok(());
        }
        let bad = |m: &str| format!("ledger entry {}: {m}", e.seq);
        let app = e.app.clone().ok_or_else(|| bad("names no app"))?;
        let change: Change = e
            .detail
            .clone()
            .ok_or_else(|| bad("has no detail"))
            .and_then(|d| serde_json::from_value(d).map_err(|x| bad(&x.to_string())))?;
        let mark = Mark {
            seq: e.seq,
            time: e.time.clone(),
            actor: e.actor.clone(),
            action: change.action,
            reason: change.reason.clone(),
            revision: change.revision,
        };
        let versions = self.apps.entry(app).or_default();
        let v = versions
            .entry(change.id.clone())
            .or_insert_with(|| Version {
                id: change.id.clone(),
                lineage: change.lineage.clone(),
                major: change.major,
                state: change.state,
                revisions: Vec::new(),
                history: Vec::new(),
            });
        fold(v, &change);
        v.history.push(mark);
        Ok(())
    }

    pub fn version(&self, app: &str, id: &str) -> Option<&Version> {
        self.apps.get(app).and_then(|m| m.get(id))
    }

    pub(super) fn lineage<'a>(
        &'a self,
        app: &str,
        lineage: &'a str,
    ) -> impl Iterator<Item = &'a Version> {
        self.apps
            .get(app)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(move |v| v.lineage == lineage)
    }
}

/// One change folded into its version.
fn fold(v: &mut Version, c: &Change) {
    v.state = c.state;
    match c.action {
        Action::Added | Action::Revised | Action::Returned => {
            let (Some(number), Some(sha256)) = (c.revision, &c.sha256) else {
                return;
            };
            if let Some(r) = v.revisions.iter_mut().find(|r| r.number == number) {
                r.purged = false;
            } else {
                v.revisions.push(Revision {
                    number,
                    sha256: sha256.clone(),
                    size: c.size.unwrap_or(0),
                    purged: false,
                });
            }
        }
        Action::Purged => v.revisions.iter_mut().for_each(|r| r.purged = true),
        _ => {}
    }
}
