//! Operations: plan steps that act on something other than an app release — a database's RDS
//! instance (snapshot, restore, wait, verify, rename, delete) or a person (a manual
//! confirmation). Release plans use them for pre-change snapshots, runbooks for everything.
//!
//! Pure: the operation as planned, how it is described, and the decisions that need no IO
//! (snapshot names, which snapshot to restore). Carrying them out is `drivers::rds`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One operation, with everything it needs decided when the plan was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A person confirms something ferry cannot check ("the application is stopped"). Apply
    /// stops before it until `--confirm STEP` is given; the confirmation is recorded.
    Manual { instructions: String },
    /// Snapshot of a database's instance, waited for until `available`. Without an explicit
    /// id, the id is derived from the plan id and step id at apply time ([`snapshot_id`]), so a
    /// resumed run finds the snapshot it started instead of making another.
    RdsSnapshot {
        database: String,
        identifier: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot_id: Option<String>,
        timeout_seconds: u64,
    },
    /// Restore a snapshot to a new instance (tagged with the plan id, so a resumed run adopts
    /// it instead of restoring twice).
    RdsRestore {
        database: String,
        snapshot_id: String,
        /// The snapshot's `SnapshotType` when it is not a manual one (`automated`,
        /// `awsbackup`), recorded when it was chosen: AWS finds such a snapshot by id only
        /// with its type.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot_type: Option<String>,
        /// How the snapshot was chosen (given, or the latest before a time), for reviewers.
        chosen: String,
        new_identifier: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance_class: Option<String>,
        /// What the new instance carries over from the database's current instance, read at
        /// plan time (shown for review; checked by `rds.verify`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settings: Option<InstanceSettings>,
    },
    /// Wait until an instance is `available`, polling until the deadline.
    RdsWait {
        database: String,
        identifier: String,
        timeout_seconds: u64,
    },
    /// Check an instance: `available`, the engine (and version) expected, and optionally a probe
    /// command run here with `FERRY_DB_HOST`/`FERRY_DB_PORT` set to its endpoint.
    RdsVerify {
        database: String,
        identifier: String,
        engine: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        engine_version: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        probe: Vec<String>,
        timeout_seconds: u64,
        /// The settings the instance must have (the database's current instance's, read at
        /// plan time).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settings: Option<InstanceSettings>,
    },
    /// Rename an instance (the cut-over: the restored instance takes the database's
    /// identifier, so its endpoint name is the one the apps already use).
    RdsRename {
        database: String,
        from: String,
        to: String,
        timeout_seconds: u64,
    },
    /// Delete an instance, after a final snapshot (decommissioning the old one).
    RdsDelete {
        database: String,
        identifier: String,
        timeout_seconds: u64,
    },
    /// A condition gate: the probe polled until its value satisfies the comparison for
    /// `stable_for_seconds`, within `deadline_seconds` of the first evaluation (across
    /// resumes). Without `--wait`, apply stops while it waits and `--resume` polls again.
    WaitUntil {
        probe: Probe,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compare: Option<crate::gate::Compare>,
        every_seconds: u64,
        #[serde(default)]
        stable_for_seconds: u64,
        deadline_seconds: u64,
        on_timeout: crate::model::OnTimeout,
    },
    /// A call to an app's admin endpoint or a command (quiesce), with what undoes it.
    Call {
        call: Action,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        undo: Option<Action>,
    },
    /// A value noted in the ledger (`label` pairs the readings of one quantity).
    Record { label: String, probe: Probe },
    /// A step of a PostgreSQL migration (`ferry::migrate` carries it out).
    Migrate {
        phase: crate::migrate::Phase,
        spec: crate::migrate::MigrationSpec,
    },
    /// A step of a bucket copy (`ferry::s3move` carries it out).
    Bucket {
        phase: crate::migrate::bucket::BucketPhase,
        spec: crate::migrate::bucket::BucketSpec,
    },
}

/// Where a gate's or a record's value comes from. Probes run where ferry runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Probe {
    /// One read-only statement, one row of one column, in a READ ONLY transaction.
    Sql { database: String, query: String },
    /// A GET: the status must be `status`; the value is `field` of the JSON body (or the
    /// status itself without one).
    Http {
        url: String,
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
        /// Header name -> secret reference (never the value).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        secret_headers: BTreeMap<String, String>,
    },
    /// A command: the value is its stdout (a number when it prints one); it must exit 0.
    Command { argv: Vec<String> },
}

impl Probe {
    pub fn describe(&self) -> String {
        match self {
            Probe::Sql { database, query } => format!("sql on `{database}`: {query}"),
            Probe::Http {
                url, status, field, ..
            } => format!(
                "GET {url} (status {status}){}",
                field
                    .as_deref()
                    .map(|f| format!(", field `{f}`"))
                    .unwrap_or_default()
            ),
            Probe::Command { argv } => format!("command `{}`", argv.join(" ")),
        }
    }
}

/// Something a step does to the world outside the release: a request or a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Http {
        method: String,
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
        /// Without it any 2xx.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_status: Option<u16>,
        timeout_seconds: u64,
        /// Header name -> secret reference (never the value).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        secret_headers: BTreeMap<String, String>,
    },
    Command {
        argv: Vec<String>,
    },
}

impl Action {
    pub fn describe(&self) -> String {
        match self {
            Action::Http { method, url, .. } => format!("{method} {url}"),
            Action::Command { argv } => format!("command `{}`", argv.join(" ")),
        }
    }
}

impl Op {
    /// The short name plans and the ledger use (`to` of the step).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Manual { .. } => "manual",
            Op::RdsSnapshot { .. } => "rds.snapshot",
            Op::RdsRestore { .. } => "rds.restore",
            Op::RdsWait { .. } => "rds.wait",
            Op::RdsVerify { .. } => "rds.verify",
            Op::RdsRename { .. } => "rds.rename",
            Op::RdsDelete { .. } => "rds.delete",
            Op::WaitUntil { .. } => "wait_until",
            Op::Call {
                call: Action::Http { .. },
                ..
            } => "http",
            Op::Call { .. } => "command",
            Op::Record { .. } => "record",
            Op::Migrate { phase, .. } => phase.name(),
            Op::Bucket { phase, .. } => phase.name(),
        }
    }

    /// The inventory database the operation acts on (none for a manual step).
    pub fn database(&self) -> Option<&str> {
        match self {
            Op::Manual { .. } | Op::Call { .. } | Op::Bucket { .. } => None,
            Op::Migrate { spec, .. } => Some(&spec.target),
            Op::WaitUntil { probe, .. } | Op::Record { probe, .. } => match probe {
                Probe::Sql { database, .. } => Some(database),
                _ => None,
            },
            Op::RdsSnapshot { database, .. }
            | Op::RdsRestore { database, .. }
            | Op::RdsWait { database, .. }
            | Op::RdsVerify { database, .. }
            | Op::RdsRename { database, .. }
            | Op::RdsDelete { database, .. } => Some(database),
        }
    }

    /// One line for plans, checklists and the ledger.
    pub fn describe(&self) -> String {
        match self {
            Op::Manual { instructions } => format!(
                "manual: {}",
                instructions.lines().next().unwrap_or_default().trim()
            ),
            Op::RdsSnapshot {
                database,
                identifier,
                snapshot_id,
                timeout_seconds,
            } => format!(
                "snapshot database `{database}` (instance {identifier}) as {}; wait for `available` up to {timeout_seconds} s",
                snapshot_id
                    .as_deref()
                    .unwrap_or("ferry-<instance>-<plan>-<step>")
            ),
            Op::RdsRestore {
                snapshot_id,
                snapshot_type,
                chosen,
                new_identifier,
                settings,
                ..
            } => format!(
                "restore {}snapshot {snapshot_id} ({chosen}) to new instance {new_identifier}{}",
                snapshot_type
                    .as_deref()
                    .map(|t| format!("{t} "))
                    .unwrap_or_default(),
                settings
                    .as_ref()
                    .map(|s| format!(", carrying over the current instance's {}", s.describe()))
                    .unwrap_or_default()
            ),
            Op::RdsWait {
                identifier,
                timeout_seconds,
                ..
            } => format!(
                "wait for instance {identifier} to be `available` (up to {timeout_seconds} s)"
            ),
            Op::RdsVerify {
                identifier,
                engine,
                engine_version,
                probe,
                ..
            } => {
                let mut s = format!(
                    "verify instance {identifier}: `available`, engine {engine}{}",
                    engine_version
                        .as_deref()
                        .map(|v| format!(" {v}"))
                        .unwrap_or_default()
                );
                if !probe.is_empty() {
                    s.push_str(&format!(", probe `{}`", probe.join(" ")));
                }
                s
            }
            Op::RdsRename { from, to, .. } => format!("rename instance {from} to {to}"),
            Op::RdsDelete { identifier, .. } => format!(
                "delete instance {identifier} after a final snapshot (ferry-final-{identifier}-<plan>)"
            ),
            Op::WaitUntil {
                probe,
                compare,
                every_seconds,
                stable_for_seconds,
                deadline_seconds,
                on_timeout,
            } => {
                let d = crate::gate::describe_duration;
                format!(
                    "wait until {}{}: every {}{}, deadline {} then {}",
                    probe.describe(),
                    compare
                        .as_ref()
                        .map(|c| format!(" {}", c.describe()))
                        .unwrap_or_else(|| " succeeds".into()),
                    d(*every_seconds),
                    if *stable_for_seconds > 0 {
                        format!(", holding for {}", d(*stable_for_seconds))
                    } else {
                        String::new()
                    },
                    d(*deadline_seconds),
                    match on_timeout {
                        crate::model::OnTimeout::Halt => "halt",
                        crate::model::OnTimeout::Backout => "back out",
                    }
                )
            }
            Op::Call { call, undo } => format!(
                "{}{}",
                call.describe(),
                undo.as_ref()
                    .map(|u| format!("; undone by {}", u.describe()))
                    .unwrap_or_else(|| "; no undo".into())
            ),
            Op::Record { label, probe } => format!("record `{label}`: {}", probe.describe()),
            Op::Migrate { phase, spec } => crate::migrate::describe(*phase, spec),
            Op::Bucket { phase, spec } => crate::migrate::bucket::describe(*phase, spec),
        }
    }
}

/// The id of a snapshot a plan takes without naming it: stable for the plan and step, so a
/// resumed run looks for the same one. RDS snapshot ids are letters, digits and single hyphens,
/// starting with a letter, at most 255 characters.
pub fn snapshot_id(identifier: &str, plan_id: &str, step_id: &str) -> String {
    let plan: String = plan_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    sanitize(&format!("ferry-{identifier}-{plan}-{step_id}"))
}

/// The final snapshot taken when ferry deletes an instance.
pub fn final_snapshot_id(identifier: &str, plan_id: &str) -> String {
    let plan: String = plan_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    sanitize(&format!("ferry-final-{identifier}-{plan}"))
}

fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let mut out: String = out.trim_end_matches('-').chars().take(255).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// What a restored instance must carry over from the one it stands in for. Without them
/// AWS uses the default VPC security group, the engine's default parameter group, Single-AZ,
/// no deletion protection and no subnet or option group, and (ferry passing its own tags)
/// none of the source's tags: the instance would fall out of tag-based backup plans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_group: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_group: Option<String>,
    #[serde(default)]
    pub multi_az: bool,
    #[serde(default)]
    pub deletion_protection: bool,
    #[serde(default)]
    pub copy_tags_to_snapshot: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl InstanceSettings {
    /// One line for the plan.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(g) = &self.subnet_group {
            parts.push(format!("subnet group {g}"));
        }
        if !self.security_groups.is_empty() {
            parts.push(format!(
                "security groups {}",
                self.security_groups.join(", ")
            ));
        }
        if let Some(g) = &self.parameter_group {
            parts.push(format!("parameter group {g}"));
        }
        if let Some(g) = &self.option_group {
            parts.push(format!("option group {g}"));
        }
        parts.push(
            if self.multi_az {
                "Multi-AZ"
            } else {
                "Single-AZ"
            }
            .into(),
        );
        if self.deletion_protection {
            parts.push("deletion protection".into());
        }
        if self.copy_tags_to_snapshot {
            parts.push("tags copied to snapshots".into());
        }
        if let Some(t) = &self.storage_type {
            parts.push(format!("storage {t}"));
        }
        if !self.tags.is_empty() {
            let keys: Vec<&str> = self.tags.keys().map(String::as_str).collect();
            parts.push(format!("tags {}", keys.join(", ")));
        }
        parts.join(", ")
    }

    /// What `actual` has differently from these settings (its tags may be more).
    pub fn differences(&self, actual: &InstanceSettings) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |what: &str, want: String, have: String| {
            if want != have {
                out.push(format!("{what} is {have}, the source has {want}"));
            }
        };
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
        check(
            "subnet group",
            opt(&self.subnet_group),
            opt(&actual.subnet_group),
        );
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.join(", ")
        };
        check(
            "security groups",
            sorted(&self.security_groups),
            sorted(&actual.security_groups),
        );
        check(
            "parameter group",
            opt(&self.parameter_group),
            opt(&actual.parameter_group),
        );
        check(
            "option group",
            opt(&self.option_group),
            opt(&actual.option_group),
        );
        check(
            "Multi-AZ",
            self.multi_az.to_string(),
            actual.multi_az.to_string(),
        );
        check(
            "deletion protection",
            self.deletion_protection.to_string(),
            actual.deletion_protection.to_string(),
        );
        check(
            "CopyTagsToSnapshot",
            self.copy_tags_to_snapshot.to_string(),
            actual.copy_tags_to_snapshot.to_string(),
        );
        check(
            "storage type",
            opt(&self.storage_type),
            opt(&actual.storage_type),
        );
        for (k, v) in &self.tags {
            if actual.tags.get(k) != Some(v) {
                out.push(format!("tag {k} is missing or changed"));
            }
        }
        out
    }
}

/// A snapshot as listed by the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    /// The instance it was taken of.
    pub instance: String,
    pub status: String,
    /// RFC 3339, UTC; empty while the cloud has not stamped it.
    pub created: String,
    /// `manual` or `automated`.
    pub kind: String,
    /// The engine version the snapshot was taken at: a restore comes up at it (a snapshot
    /// from before a minor upgrade is older than the instance now).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub engine_version: String,
}

/// The snapshot a restore uses: the one named, or else the latest `available` one created
/// strictly before `before` (RFC 3339), or else the latest `available` one.
pub fn choose_snapshot<'a>(
    snapshots: &'a [SnapshotInfo],
    named: Option<&str>,
    before: Option<&str>,
) -> Result<(&'a SnapshotInfo, String), String> {
    if let Some(id) = named {
        let s = snapshots
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| format!("snapshot `{id}` does not exist"))?;
        if s.status != "available" {
            return Err(format!(
                "snapshot `{id}` is `{}`, not `available`",
                s.status
            ));
        }
        return Ok((s, "given".into()));
    }
    let cutoff = match before {
        Some(b) => Some(
            chrono::DateTime::parse_from_rfc3339(b)
                .map_err(|e| format!("`{b}` is not an RFC 3339 time: {e}"))?
                .with_timezone(&chrono::Utc),
        ),
        None => None,
    };
    let mut best: Option<(&SnapshotInfo, chrono::DateTime<chrono::Utc>)> = None;
    for s in snapshots.iter().filter(|s| s.status == "available") {
        let Ok(t) = chrono::DateTime::parse_from_rfc3339(&s.created) else {
            continue;
        };
        let t = t.with_timezone(&chrono::Utc);
        if cutoff.is_some_and(|c| t >= c) {
            continue;
        }
        if best.is_none_or(|(b, bt)| t > bt || (t == bt && s.id > b.id)) {
            best = Some((s, t));
        }
    }
    match (best, before) {
        (Some((s, _)), Some(b)) => Ok((s, format!("latest available before {b}"))),
        (Some((s, _)), None) => Ok((s, "latest available".into())),
        (None, Some(b)) => Err(format!("no available snapshot was created before {b}")),
        (None, None) => Err("there is no available snapshot".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, created: &str, status: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: id.into(),
            instance: "db".into(),
            status: status.into(),
            created: created.into(),
            kind: "manual".into(),
            engine_version: String::new(),
        }
    }

    #[test]
    fn snapshot_ids_are_valid_rds_identifiers_and_stable() {
        let id = snapshot_id("ehr_db--prod", "0f3a9c2e-1111-2222", "s001");
        assert_eq!(id, "ferry-ehr-db-prod-0f3a9c2e-s001");
        assert_eq!(
            id,
            snapshot_id("ehr_db--prod", "0f3a9c2e-1111-2222", "s001")
        );
        let long = snapshot_id(&"x".repeat(300), "p", "s1");
        assert!(long.len() <= 255 && !long.ends_with('-'));
        assert_eq!(
            final_snapshot_id("ehr-db-retired", "0f3a9c2e-1"),
            "ferry-final-ehr-db-retired-0f3a9c2e"
        );
    }

    #[test]
    fn the_latest_available_snapshot_before_a_time_is_chosen() {
        let list = [
            snap("a", "2026-11-20T01:00:00Z", "available"),
            snap("b", "2026-11-21T01:00:00Z", "available"),
            snap("c", "2026-11-21T03:00:00Z", "creating"),
            snap("d", "2026-11-22T01:00:00Z", "available"),
        ];
        let (s, why) = choose_snapshot(&list, None, Some("2026-11-21T12:00:00Z")).unwrap();
        assert_eq!(
            (s.id.as_str(), why.as_str()),
            ("b", "latest available before 2026-11-21T12:00:00Z")
        );
        assert_eq!(choose_snapshot(&list, None, None).unwrap().0.id, "d");
        // Strictly before: a snapshot made at the cut-off time is not "before" it.
        assert_eq!(
            choose_snapshot(&list, None, Some("2026-11-21T01:00:00Z"))
                .unwrap()
                .0
                .id,
            "a"
        );
        assert_eq!(
            choose_snapshot(&list, None, Some("2026-01-01T00:00:00Z")).unwrap_err(),
            "no available snapshot was created before 2026-01-01T00:00:00Z"
        );
        assert!(
            choose_snapshot(&list, None, Some("yesterday"))
                .unwrap_err()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn a_named_snapshot_must_exist_and_be_available() {
        let list = [
            snap("a", "2026-11-20T01:00:00Z", "available"),
            snap("c", "", "creating"),
        ];
        assert_eq!(choose_snapshot(&list, Some("a"), None).unwrap().1, "given");
        assert_eq!(
            choose_snapshot(&list, Some("zz"), None).unwrap_err(),
            "snapshot `zz` does not exist"
        );
        assert!(
            choose_snapshot(&list, Some("c"), None)
                .unwrap_err()
                .contains("`creating`")
        );
    }

    #[test]
    fn ops_round_trip_through_json() {
        let op = Op::RdsRestore {
            database: "ehr".into(),
            snapshot_id: "s".into(),
            snapshot_type: Some("automated".into()),
            chosen: "given".into(),
            new_identifier: "n".into(),
            instance_class: None,
            settings: Some(InstanceSettings {
                parameter_group: Some("ehr-pg15".into()),
                multi_az: true,
                ..Default::default()
            }),
        };
        let j = serde_json::to_value(&op).unwrap();
        assert_eq!(j["op"], "rds_restore");
        assert_eq!(serde_json::from_value::<Op>(j).unwrap(), op);
    }

    #[test]
    fn a_restored_instance_is_checked_against_the_source_settings() {
        let source = InstanceSettings {
            subnet_group: Some("ehr-private".into()),
            security_groups: vec!["sg-2".into(), "sg-1".into()],
            parameter_group: Some("ehr-pg15".into()),
            multi_az: true,
            deletion_protection: true,
            tags: [("backup-plan".to_owned(), "daily".to_owned())].into(),
            ..Default::default()
        };
        let mut restored = source.clone();
        restored.security_groups.reverse();
        restored.tags.insert("ferry:plan".into(), "p".into());
        assert!(
            source.differences(&restored).is_empty(),
            "order and extra tags do not count"
        );
        let defaults = InstanceSettings::default();
        let d = source.differences(&defaults);
        assert!(
            d.iter()
                .any(|x| x == "subnet group is none, the source has ehr-private"),
            "{d:?}"
        );
        assert!(
            d.iter().any(|x| x.starts_with("Multi-AZ is false")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|x| x == "tag backup-plan is missing or changed"),
            "{d:?}"
        );
        let line = source.describe();
        assert!(
            line.contains("subnet group ehr-private")
                && line.contains("Multi-AZ")
                && line.contains("tags backup-plan"),
            "{line}"
        );
    }
}
