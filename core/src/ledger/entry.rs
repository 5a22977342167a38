//! One ledger entry, its canonical form and its hash.

use serde::{Deserialize, Serialize};

use crate::load::sha256_hex;

pub const LEDGER_FORMAT_VERSION: u32 = 1;
/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    PlanCreated,
    ApplyStarted,
    StepStarted,
    StepSucceeded,
    StepFailed,
    /// A step's undo began (back-out).
    UndoStarted,
    /// A step was undone and the previous release verified.
    StepBackedOut,
    UndoFailed,
    LockTaken,
    LockBroken,
    LockReleased,
    ApplyInterrupted,
    ApplyFinished,
    Approval,
    /// Apply stopped before a wave whose gate is not approved yet.
    GateWaiting,
    /// An SSH host key was recorded in a known_hosts file after confirmation.
    HostTrusted,
    /// An operation outside any plan began (`ferry snapshot create`).
    OperationStarted,
    /// It ended (`outcome` ok or failed; `detail` says what it made).
    OperationFinished,
    /// A run found it no longer holds the apply lock and stopped (the only entry a run that
    /// lost its lock may still write: it changes nothing, it says what happened).
    LockLost,
    /// `ferry ledger repair` set a torn last line aside (or completed it), with who and why.
    LedgerRepaired,
    /// A saved plan this ledger never recorded was applied with `--trust-plan-file`: its
    /// digest, from then on its seal here.
    PlanTrusted,
    /// Apply held the steps of a site whose maintenance window is closed, and stopped (with
    /// when it opens next).
    WindowClosed,
    /// Steps started on a site outside its maintenance window, by `--outside-window`: who
    /// and why.
    WindowOverridden,
    /// `ferry dibr` wrote a guide: the SHA-256 of each file and the ledger head it was built
    /// from, so the guide can be checked to be ferry's, unedited.
    DibrWritten,
    /// A condition gate was evaluated: the first and last evaluation of a run and every one
    /// whose value (or verdict) changed, with the gate's clock (not every poll: the ledger does
    /// not grow with the poll count).
    ConditionEvaluated,
    /// Apply stopped while a condition gate waits (without `--wait`): its last value and
    /// clock; `apply --resume` evaluates again and the deadline keeps counting.
    ConditionWaiting,
    /// A migration's copy decided its chunks (key or page ranges per table), once: a resumed
    /// copy reads them back.
    ChunksPlanned,
    /// One chunk of a migration's copy committed on the target (rows, bytes, time).
    ChunkCopied,
    /// A migration's verification ended: the report (per table rows and hashes of both sides,
    /// every difference and the rule that allowed it).
    MigrationVerified,
    /// A bucket copy began a multipart upload (its id, part size): a resumed copy continues it.
    UploadStarted,
    /// One part of a multipart upload stored on the target (its ETag and MD5).
    PartCopied,
    /// One object copied: source and target keys, size, SHA-256, both ETags.
    ObjectCopied,
    /// Objects only on the target deleted by a copy whose plan says so (after confirmation).
    ObjectsDeleted,
    /// A bucket copy's run ended: its manifest's root hash, objects and bytes.
    ManifestWritten,
    /// A bucket copy's verification ended: every missing, extra or different key.
    BucketVerified,
    /// A version catalog change (`ferry versions`): `app`, `to` (the id) and a
    /// `versions::Change` in `detail` with the reason; the catalog is replayed from these.
    VersionChanged,
    /// A signed checkpoint of the chain's head (`ledger::checkpoint::SignedCheckpoint` in
    /// `detail`), also written where the ledger's keeper cannot rewrite it.
    Checkpoint,
}

impl Event {
    /// Every kind of entry, in declaration order (tests and tools that must see them all).
    pub const ALL: [Event; 37] = [
        Event::PlanCreated,
        Event::ApplyStarted,
        Event::StepStarted,
        Event::StepSucceeded,
        Event::StepFailed,
        Event::UndoStarted,
        Event::StepBackedOut,
        Event::UndoFailed,
        Event::LockTaken,
        Event::LockBroken,
        Event::LockReleased,
        Event::ApplyInterrupted,
        Event::ApplyFinished,
        Event::Approval,
        Event::GateWaiting,
        Event::HostTrusted,
        Event::OperationStarted,
        Event::OperationFinished,
        Event::LockLost,
        Event::LedgerRepaired,
        Event::PlanTrusted,
        Event::WindowClosed,
        Event::WindowOverridden,
        Event::DibrWritten,
        Event::ConditionEvaluated,
        Event::ConditionWaiting,
        Event::ChunksPlanned,
        Event::ChunkCopied,
        Event::MigrationVerified,
        Event::UploadStarted,
        Event::PartCopied,
        Event::ObjectCopied,
        Event::ObjectsDeleted,
        Event::ManifestWritten,
        Event::BucketVerified,
        Event::VersionChanged,
        Event::Checkpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::PlanCreated => "plan_created",
            Event::ApplyStarted => "apply_started",
            Event::StepStarted => "step_started",
            Event::StepSucceeded => "step_succeeded",
            Event::StepFailed => "step_failed",
            Event::UndoStarted => "undo_started",
            Event::StepBackedOut => "step_backed_out",
            Event::UndoFailed => "undo_failed",
            Event::LockTaken => "lock_taken",
            Event::LockBroken => "lock_broken",
            Event::LockReleased => "lock_released",
            Event::ApplyInterrupted => "apply_interrupted",
            Event::ApplyFinished => "apply_finished",
            Event::Approval => "approval",
            Event::GateWaiting => "gate_waiting",
            Event::HostTrusted => "host_trusted",
            Event::OperationStarted => "operation_started",
            Event::OperationFinished => "operation_finished",
            Event::LockLost => "lock_lost",
            Event::LedgerRepaired => "ledger_repaired",
            Event::PlanTrusted => "plan_trusted",
            Event::WindowClosed => "window_closed",
            Event::WindowOverridden => "window_overridden",
            Event::DibrWritten => "dibr_written",
            Event::ConditionEvaluated => "condition_evaluated",
            Event::ConditionWaiting => "condition_waiting",
            Event::ChunksPlanned => "chunks_planned",
            Event::ChunkCopied => "chunk_copied",
            Event::MigrationVerified => "migration_verified",
            Event::UploadStarted => "upload_started",
            Event::PartCopied => "part_copied",
            Event::ObjectCopied => "object_copied",
            Event::ObjectsDeleted => "objects_deleted",
            Event::ManifestWritten => "manifest_written",
            Event::BucketVerified => "bucket_verified",
            Event::VersionChanged => "version_changed",
            Event::Checkpoint => "checkpoint",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    /// The apply stopped at a safe point with work left (halt policy or Ctrl-C).
    Halted,
    BackedOut,
    /// Finished, but some targets failed within the wave's tolerance.
    CompletedWithFailures,
}

/// An entry as stored: every field is covered by `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub v: u32,
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Event-specific data (sorted keys), e.g. the lock holder that was replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    pub prev: String,
    pub hash: String,
}

impl Entry {
    /// SHA-256 of the entry's canonical JSON with `hash` empty; `prev` is inside, which
    /// chains it to the entry before.
    pub fn compute_hash(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.hash = String::new();
        sha256_hex(&serde_json::to_vec(&unsealed).expect("entries serialize"))
    }
}

/// What callers fill in; the ledger adds version, sequence, time and the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub actor: String,
    pub event: Event,
    pub time: Option<String>,
    pub plan_id: Option<String>,
    pub step: Option<String>,
    pub target: Option<String>,
    pub site: Option<String>,
    pub app: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub outcome: Option<Outcome>,
    pub duration_ms: Option<u64>,
    pub message: Option<String>,
    pub detail: Option<serde_json::Value>,
}

impl NewEntry {
    pub fn new(actor: &str, event: Event) -> Self {
        Self {
            actor: actor.to_owned(),
            event,
            time: None,
            plan_id: None,
            step: None,
            target: None,
            site: None,
            app: None,
            from: None,
            to: None,
            outcome: None,
            duration_ms: None,
            message: None,
            detail: None,
        }
    }

    pub fn plan(mut self, id: &str) -> Self {
        self.plan_id = Some(id.to_owned());
        self
    }

    pub fn outcome(mut self, o: Outcome) -> Self {
        self.outcome = Some(o);
        self
    }

    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }

    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = Some(d);
        self
    }

    pub fn duration_ms(mut self, ms: u64) -> Self {
        self.duration_ms = Some(ms);
        self
    }

    pub fn seal(self, seq: u64, prev: String) -> Entry {
        let mut e = Entry {
            v: LEDGER_FORMAT_VERSION,
            seq,
            time: self.time.unwrap_or_else(now_rfc3339),
            actor: self.actor,
            event: self.event,
            plan_id: self.plan_id,
            step: self.step,
            target: self.target,
            site: self.site,
            app: self.app,
            from: self.from,
            to: self.to,
            outcome: self.outcome,
            duration_ms: self.duration_ms,
            message: self.message,
            detail: self.detail,
            prev,
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` names each kind once, and each kind's name is its serialized form (a kind added
    /// to the enum but not to `ALL` shows as a count that no longer matches `as_str`'s arms).
    #[test]
    fn every_kind_once_under_its_own_name() {
        let names: std::collections::BTreeSet<&str> =
            Event::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(names.len(), Event::ALL.len());
        for e in Event::ALL {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
    }
}
