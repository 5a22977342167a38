//! An in-memory RDS for unit tests: instances and snapshots go through scripted states (moto
//! makes everything `available` at once, so slow transitions are tested here), and calls can be
//! throttled on demand.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use super::api::{AwsError, AwsErrorKind, InstanceInfo, InstanceSettings, RdsApi, SnapshotInfo};

/// A snapshot, its tags, and the states it goes through next.
type FakeSnapshot = (SnapshotInfo, BTreeMap<String, String>, VecDeque<String>);

#[derive(Default)]
struct State {
    instances: BTreeMap<String, (InstanceInfo, VecDeque<String>)>,
    /// What describing a renamed instance's new id answers, one per describe, before the
    /// instance itself (see `rename`).
    renaming: BTreeMap<String, VecDeque<Option<InstanceInfo>>>,
    snapshots: BTreeMap<String, FakeSnapshot>,
    throttle_next: u32,
    /// Mutating calls whose answer is lost after they took effect.
    lose_next: u32,
    calls: Vec<String>,
}

#[derive(Default)]
pub struct FakeRds {
    state: Mutex<State>,
    /// States a new snapshot or restored instance goes through, one per describe, before
    /// `available`.
    pub transitions: Vec<String>,
}

impl FakeRds {
    pub fn with_instance(id: &str) -> Self {
        let f = Self::default();
        f.add_instance(id, "available");
        f
    }

    /// New snapshots and restored instances go through `states` before `available`.
    pub fn with_transitions(states: &[&str]) -> Self {
        Self {
            transitions: states.iter().map(|s| (*s).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// The settings of an instance (network, groups, protection) as AWS would describe them.
    pub fn set_settings(&self, id: &str, settings: InstanceSettings) {
        if let Some((i, _)) = self.state.lock().unwrap().instances.get_mut(id) {
            i.tags = settings.tags.clone();
            i.settings = InstanceSettings {
                tags: BTreeMap::new(),
                ..settings
            };
        }
    }

    /// The tags an instance has now.
    pub fn instance_tags(&self, id: &str) -> BTreeMap<String, String> {
        self.state
            .lock()
            .unwrap()
            .instances
            .get(id)
            .map(|(i, _)| i.tags.clone())
            .unwrap_or_default()
    }

    pub fn add_instance(&self, id: &str, status: &str) {
        self.state.lock().unwrap().instances.insert(
            id.into(),
            (
                InstanceInfo {
                    identifier: id.into(),
                    status: status.into(),
                    engine: "postgres".into(),
                    engine_version: "15.4".into(),
                    endpoint: Some((format!("{id}.example"), 5432)),
                    tags: BTreeMap::new(),
                    pending_identifier: None,
                    settings: InstanceSettings::default(),
                },
                VecDeque::new(),
            ),
        );
    }

    /// The engine version a snapshot was taken at (15.4 unless set).
    pub fn set_snapshot_version(&self, id: &str, version: &str) {
        if let Some((i, _, _)) = self.state.lock().unwrap().snapshots.get_mut(id) {
            i.engine_version = version.into();
        }
    }

    pub fn add_snapshot(&self, id: &str, instance: &str, created: &str) {
        self.add_snapshot_of_kind(id, instance, created, "manual");
    }

    /// A snapshot of a `SnapshotType`: `automated` (named `rds:...` by AWS), `awsbackup`.
    pub fn add_snapshot_of_kind(&self, id: &str, instance: &str, created: &str, kind: &str) {
        self.state.lock().unwrap().snapshots.insert(
            id.into(),
            (
                SnapshotInfo {
                    id: id.into(),
                    instance: instance.into(),
                    status: "available".into(),
                    created: created.into(),
                    kind: kind.into(),
                    engine_version: "15.4".into(),
                },
                BTreeMap::new(),
                VecDeque::new(),
            ),
        );
    }

    /// The next `n` mutating calls take effect but their answer is lost (a timeout).
    pub fn lose_answers(&self, n: u32) {
        self.state.lock().unwrap().lose_next = n;
    }

    /// The next `n` calls answer `Throttling`.
    pub fn throttle(&self, n: u32) {
        self.state.lock().unwrap().throttle_next = n;
    }

    /// The calls made, as `name arg`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn instance_ids(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .instances
            .keys()
            .cloned()
            .collect()
    }

    /// Sets the states an existing instance goes through next (e.g. stuck in `creating`).
    pub fn script_instance(&self, id: &str, states: &[&str]) {
        let mut s = self.state.lock().unwrap();
        let (i, q) = s.instances.get_mut(id).unwrap();
        let mut states: VecDeque<String> = states.iter().map(|s| (*s).to_owned()).collect();
        i.status = states.pop_front().unwrap_or_else(|| i.status.clone());
        *q = states;
    }

    fn enter(&self, call: String) -> Result<std::sync::MutexGuard<'_, State>, AwsError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(call);
        if s.throttle_next > 0 {
            s.throttle_next -= 1;
            return Err(AwsError::new(
                AwsErrorKind::Throttled,
                "Throttling",
                "Rate exceeded",
            ));
        }
        Ok(s)
    }

    fn pending(&self) -> VecDeque<String> {
        self.transitions
            .iter()
            .cloned()
            .chain(["available".to_owned()])
            .collect()
    }
}

/// A mutating call that took effect answers a timeout when an answer is to be lost.
fn lost(s: &mut State) -> Result<(), AwsError> {
    if s.lose_next > 0 {
        s.lose_next -= 1;
        return Err(AwsError::new(
            AwsErrorKind::Unreachable,
            "",
            "timed out waiting for the answer",
        ));
    }
    Ok(())
}

/// Whether describing a snapshot by id finds it: "If this identifier is for an automated
/// snapshot, the SnapshotType parameter must also be specified" (RDS API reference,
/// DescribeDBSnapshots); without it AWS answers that there is no such snapshot.
fn described(i: &SnapshotInfo, kind: Option<&str>) -> bool {
    i.kind == "manual" || kind == Some(i.kind.as_str())
}

fn advance(status: &mut String, q: &mut VecDeque<String>) {
    if let Some(next) = q.pop_front() {
        *status = next;
    }
}

#[async_trait]
impl RdsApi for FakeRds {
    async fn instance(&self, id: &str) -> Result<Option<InstanceInfo>, AwsError> {
        let mut s = self.enter(format!("describe-instance {id}"))?;
        if let Some(step) = s.renaming.get_mut(id).and_then(VecDeque::pop_front) {
            return Ok(step);
        }
        Ok(s.instances.get_mut(id).map(|(i, q)| {
            let now = i.clone();
            advance(&mut i.status, q);
            now
        }))
    }
    async fn snapshot(
        &self,
        id: &str,
        kind: Option<&str>,
    ) -> Result<Option<SnapshotInfo>, AwsError> {
        let mut s = self.enter(format!("describe-snapshot {id}"))?;
        Ok(s.snapshots
            .get_mut(id)
            .filter(|(i, _, _)| described(i, kind))
            .map(|(i, _, q)| {
                let now = i.clone();
                advance(&mut i.status, q);
                now
            }))
    }
    async fn snapshots(
        &self,
        instance: &str,
        kind: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>, AwsError> {
        let s = self.enter(format!("list-snapshots {instance}"))?;
        // Without a SnapshotType "both automated and manual snapshots are returned" (RDS API
        // reference, DescribeDBSnapshots); AWS Backup's only when asked for (`awsbackup`).
        Ok(s.snapshots
            .values()
            .filter(|(i, _, _)| i.instance == instance)
            .filter(|(i, _, _)| match kind {
                None => i.kind == "manual" || i.kind == "automated",
                Some(k) => i.kind == k,
            })
            .map(|(i, _, _)| i.clone())
            .collect())
    }
    async fn delete_snapshot(&self, id: &str) -> Result<(), AwsError> {
        let mut s = self.enter(format!("delete-snapshot {id}"))?;
        match s.snapshots.get(id).map(|(i, _, _)| i.kind.clone()) {
            None => Err(AwsError::new(
                AwsErrorKind::NotFound,
                "DBSnapshotNotFound",
                format!("DBSnapshot {id} not found."),
            )),
            // "The DB snapshot must be in the available state to be deleted" and only manual
            // snapshots can be deleted this way (automated ones go with their retention).
            Some(k) if k != "manual" => Err(AwsError::new(
                AwsErrorKind::InvalidState,
                "InvalidDBSnapshotState",
                format!("Only manual snapshots may be deleted; {id} is {k}."),
            )),
            Some(_) => {
                s.snapshots.remove(id);
                lost(&mut s)
            }
        }
    }
    async fn snapshot_tags(
        &self,
        id: &str,
        kind: Option<&str>,
    ) -> Result<BTreeMap<String, String>, AwsError> {
        let s = self.enter(format!("snapshot-tags {id}"))?;
        Ok(s.snapshots
            .get(id)
            .filter(|(i, _, _)| described(i, kind))
            .map(|(_, t, _)| t.clone())
            .unwrap_or_default())
    }
    async fn create_snapshot(
        &self,
        instance: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<SnapshotInfo, AwsError> {
        let pending = self.pending();
        let mut s = self.enter(format!("create-snapshot {instance} {id}"))?;
        if !s.instances.contains_key(instance) {
            return Err(AwsError::new(
                AwsErrorKind::NotFound,
                "DBInstanceNotFound",
                format!("DBInstance {instance} not found."),
            ));
        }
        // "The source DB instance must be in the available or storage-optimization state"
        // (RDS API reference, CreateDBSnapshot); otherwise InvalidDBInstanceState.
        let status = &s.instances[instance].0.status;
        if status != "available" && status != "storage-optimization" {
            return Err(AwsError::new(
                AwsErrorKind::InvalidState,
                "InvalidDBInstanceState",
                format!(
                    "DB instance {instance} is not in available or storage-optimization state: {status}"
                ),
            ));
        }
        if s.snapshots.contains_key(id) {
            return Err(AwsError::new(
                AwsErrorKind::AlreadyExists,
                "DBSnapshotAlreadyExists",
                "exists",
            ));
        }
        let info = SnapshotInfo {
            id: id.into(),
            instance: instance.into(),
            status: "creating".into(),
            created: String::new(),
            kind: "manual".into(),
            engine_version: "15.4".into(),
        };
        s.snapshots
            .insert(id.into(), (info.clone(), tags.clone(), pending));
        lost(&mut s)?;
        Ok(info)
    }
    async fn restore(
        &self,
        snapshot: &str,
        new_id: &str,
        _class: Option<&str>,
        settings: &InstanceSettings,
    ) -> Result<InstanceInfo, AwsError> {
        let pending = self.pending();
        let mut s = self.enter(format!("restore {snapshot} {new_id}"))?;
        if !s.snapshots.contains_key(snapshot) {
            return Err(AwsError::new(
                AwsErrorKind::NotFound,
                "DBSnapshotNotFound",
                format!("DBSnapshot {snapshot} not found."),
            ));
        }
        if s.instances.contains_key(new_id) {
            return Err(AwsError::new(
                AwsErrorKind::AlreadyExists,
                "DBInstanceAlreadyExists",
                "DB instance already exists",
            ));
        }
        // A restore comes up at the snapshot's engine version.
        let version = s.snapshots[snapshot].0.engine_version.clone();
        let info = InstanceInfo {
            identifier: new_id.into(),
            status: "creating".into(),
            engine: "postgres".into(),
            engine_version: version,
            endpoint: None,
            tags: settings.tags.clone(),
            pending_identifier: None,
            // What the call names; AWS defaults the rest (see InstanceSettings).
            settings: InstanceSettings {
                tags: BTreeMap::new(),
                ..settings.clone()
            },
        };
        s.instances.insert(new_id.into(), (info.clone(), pending));
        lost(&mut s)?;
        Ok(info)
    }
    async fn rename(&self, from: &str, to: &str) -> Result<(), AwsError> {
        let mut s = self.enter(format!("rename {from} {to}"))?;
        if s.instances.contains_key(to) {
            return Err(AwsError::new(
                AwsErrorKind::AlreadyExists,
                "DBInstanceAlreadyExists",
                "exists",
            ));
        }
        let (mut i, q) = s.instances.remove(from).ok_or_else(|| {
            AwsError::new(AwsErrorKind::NotFound, "DBInstanceNotFound", "not found")
        })?;
        // As AWS documents it (ModifyDBInstance, NewDBInstanceIdentifier: the instance is
        // rebooted, "the new DNS name becomes effective in about 10 minutes; the renamed DB
        // instance is not available until the new name becomes effective"): under the new id
        // it is first not found, then `available` with the old endpoint before its reboot,
        // then `rebooting`, then `available` with the new endpoint.
        let old = i.clone();
        let mut before_reboot = old.clone();
        before_reboot.identifier = to.into();
        let mut rebooting = before_reboot.clone();
        rebooting.status = "rebooting".into();
        s.renaming.insert(
            to.into(),
            VecDeque::from([None, Some(before_reboot), Some(rebooting)]),
        );
        i.identifier = to.into();
        i.endpoint = i.endpoint.map(|(_, port)| (format!("{to}.example"), port));
        s.instances.insert(to.into(), (i, q));
        lost(&mut s)?;
        Ok(())
    }
    async fn delete(&self, id: &str, final_snapshot: &str) -> Result<(), AwsError> {
        let mut s = self.enter(format!("delete {id} {final_snapshot}"))?;
        s.instances.remove(id).ok_or_else(|| {
            AwsError::new(AwsErrorKind::NotFound, "DBInstanceNotFound", "not found")
        })?;
        let info = SnapshotInfo {
            id: final_snapshot.into(),
            instance: id.into(),
            status: "available".into(),
            created: String::new(),
            kind: "manual".into(),
            engine_version: "15.4".into(),
        };
        s.snapshots.insert(
            final_snapshot.into(),
            (info, BTreeMap::new(), VecDeque::new()),
        );
        lost(&mut s)?;
        Ok(())
    }
}
