//! The part of the RDS API ferry uses, as a trait: the SDK client implements it against AWS (or
//! moto), [`super::fake::FakeRds`] in memory with scripted state transitions and throttling.

use std::collections::BTreeMap;

use async_trait::async_trait;

pub use crate::ops::{InstanceSettings, SnapshotInfo};

/// An RDS DB instance as described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub identifier: String,
    pub status: String,
    pub engine: String,
    pub engine_version: String,
    /// `host:port`, once RDS has assigned it.
    pub endpoint: Option<(String, u16)>,
    pub tags: BTreeMap<String, String>,
    /// A rename not yet applied (`PendingModifiedValues.DBInstanceIdentifier`).
    pub pending_identifier: Option<String>,
    /// Network, groups, availability and protection (tags are in `tags`).
    pub settings: InstanceSettings,
}

impl InstanceInfo {
    /// Its settings with its tags: what a restore standing in for it carries over.
    pub fn carried(&self) -> InstanceSettings {
        InstanceSettings {
            tags: self.tags.clone(),
            ..self.settings.clone()
        }
    }
}

impl InstanceInfo {
    /// Whether a rename to `to` has taken effect, or what it still waits for. AWS reboots a
    /// renamed instance, and "the new DNS name becomes effective in about 10 minutes; the
    /// renamed DB instance is not available until the new name becomes effective"
    /// (ModifyDBInstance, NewDBInstanceIdentifier): done when the instance is `available`
    /// under its new id with no identifier change pending and an endpoint carrying the new
    /// name (an instance still `available` before its reboot has the old one).
    pub fn renamed_to(&self, to: &str) -> Result<(), String> {
        if let Some(p) = &self.pending_identifier {
            return Err(format!("rename to {p} pending (status {})", self.status));
        }
        if self.status != "available" {
            return Err(format!("status {}", self.status));
        }
        match &self.endpoint {
            Some((host, _)) if host.starts_with(&format!("{to}.")) => Ok(()),
            Some((host, _)) => Err(format!(
                "endpoint still {host} (the new DNS name is not effective yet)"
            )),
            None => Err("no endpoint yet".into()),
        }
    }
}

/// The permission an AccessDenied message names (`... is not authorized to perform:
/// rds:RestoreDBInstanceFromDBSnapshot on resource: ...`).
pub fn denied_permission(message: &str) -> Option<&str> {
    let rest = message.split("to perform: ").nth(1)?;
    let p = rest.split([' ', ',', '\n']).next()?;
    p.contains(':').then_some(p)
}

/// Error codes of a call refused for its rate (nothing was done).
const THROTTLED: [&str; 9] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// What kind of failure an AWS call had: decides retrying and the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// Throttled, or a 5xx: retried with backoff.
    Throttled,
    /// The call did not reach AWS or got no answer in time: retried with backoff.
    Unreachable,
    NotFound,
    AlreadyExists,
    /// Credentials missing, invalid or not allowed.
    Credentials,
    /// The resource is in a state that does not allow the call.
    InvalidState,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", if code.is_empty() { String::new() } else { format!(" ({code})") })]
pub struct AwsError {
    pub kind: AwsErrorKind,
    /// AWS error code (`DBInstanceNotFound`, `Throttling`...), empty when there is none.
    pub code: String,
    pub message: String,
}

impl AwsError {
    pub fn new(kind: AwsErrorKind, code: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            AwsErrorKind::Throttled | AwsErrorKind::Unreachable
        )
    }

    /// The call may have been carried out although no good answer came: no answer at all, or
    /// AWS failing inside (a 5xx) — unlike throttling, which refuses before doing anything.
    pub fn maybe_done(&self) -> bool {
        match self.kind {
            AwsErrorKind::Unreachable => true,
            AwsErrorKind::Throttled => !THROTTLED.contains(&self.code.as_str()),
            _ => false,
        }
    }

    /// The kind an AWS error code and HTTP status mean.
    pub fn classify(code: &str, status: Option<u16>) -> AwsErrorKind {
        let throttled = THROTTLED;
        let credentials = [
            "InvalidClientTokenId",
            "UnrecognizedClientException",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "AccessDeniedException",
            "ExpiredToken",
            "ExpiredTokenException",
            "AuthFailure",
            "MissingAuthenticationToken",
        ];
        if code == "NotImplemented" || status == Some(501) {
            // An S3-compatible store without the call: asking again does not help.
            AwsErrorKind::Other
        } else if throttled.contains(&code) || status == Some(429) {
            AwsErrorKind::Throttled
        } else if credentials.contains(&code) || status == Some(403) {
            AwsErrorKind::Credentials
        } else if code.ends_with("NotFound")
            || code.ends_with("NotFoundFault")
            || code.starts_with("NoSuch")
            || (code.is_empty() && status == Some(404))
        {
            AwsErrorKind::NotFound
        } else if code.ends_with("AlreadyExists") || code.ends_with("AlreadyExistsFault") {
            AwsErrorKind::AlreadyExists
        } else if code.starts_with("Invalid") && code.contains("State") {
            AwsErrorKind::InvalidState
        } else if status.is_some_and(|s| s >= 500) {
            AwsErrorKind::Throttled
        } else {
            AwsErrorKind::Other
        }
    }
}

/// The RDS calls ferry makes. Each is one API call: retrying and waiting are the caller's.
#[async_trait]
pub trait RdsApi: Send + Sync {
    /// `None` when there is no such instance.
    async fn instance(&self, id: &str) -> Result<Option<InstanceInfo>, AwsError>;
    /// `None` when there is no such snapshot. `kind` is its `SnapshotType` when it is not a
    /// manual one: "If this identifier is for an automated snapshot, the SnapshotType parameter
    /// must also be specified" (RDS API reference, DescribeDBSnapshots).
    async fn snapshot(
        &self,
        id: &str,
        kind: Option<&str>,
    ) -> Result<Option<SnapshotInfo>, AwsError>;
    /// Every snapshot of an instance (all pages): manual and automated (`kind` `None`, what
    /// AWS returns without a SnapshotType), or of one `SnapshotType` (`awsbackup`).
    async fn snapshots(
        &self,
        instance: &str,
        kind: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>, AwsError>;
    async fn snapshot_tags(
        &self,
        id: &str,
        kind: Option<&str>,
    ) -> Result<BTreeMap<String, String>, AwsError>;
    /// Deletes a manual snapshot (DeleteDBSnapshot).
    async fn delete_snapshot(&self, id: &str) -> Result<(), AwsError>;
    async fn create_snapshot(
        &self,
        instance: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<SnapshotInfo, AwsError>;
    /// `settings` (their tags included, ferry's already merged in) as the new instance's.
    async fn restore(
        &self,
        snapshot: &str,
        new_id: &str,
        instance_class: Option<&str>,
        settings: &InstanceSettings,
    ) -> Result<InstanceInfo, AwsError>;
    async fn rename(&self, from: &str, to: &str) -> Result<(), AwsError>;
    async fn delete(&self, id: &str, final_snapshot: &str) -> Result<(), AwsError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified() {
        use AwsErrorKind::*;
        for (code, status, kind) in [
            ("Throttling", Some(400), Throttled),
            ("", Some(503), Throttled),
            ("", Some(429), Throttled),
            ("DBInstanceNotFound", Some(404), NotFound),
            ("DBSnapshotNotFoundFault", Some(404), NotFound),
            ("DBInstanceAlreadyExists", Some(400), AlreadyExists),
            ("InvalidClientTokenId", Some(403), Credentials),
            ("NoSuchUpload", Some(404), NotFound),
            ("", Some(404), NotFound),
            ("SlowDown", Some(503), Throttled),
            ("InternalError", Some(500), Throttled),
            ("NotImplemented", Some(501), Other),
            ("InvalidDBInstanceState", Some(400), InvalidState),
            ("ValidationError", Some(400), Other),
        ] {
            assert_eq!(AwsError::classify(code, status), kind, "{code}");
        }
        assert!(AwsError::new(Throttled, "Throttling", "x").retryable());
        assert_eq!(
            denied_permission(
                "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: rds:RestoreDBInstanceFromDBSnapshot on resource: arn:aws:rds:us-east-1:123456789012:snapshot:nightly because no identity-based policy allows the rds:RestoreDBInstanceFromDBSnapshot action"
            ),
            Some("rds:RestoreDBInstanceFromDBSnapshot")
        );
        assert_eq!(denied_permission("Access Denied"), None);
        assert!(!AwsError::new(Throttled, "Throttling", "x").maybe_done());
        assert!(AwsError::new(Throttled, "InternalError", "x").maybe_done());
        assert!(AwsError::new(Unreachable, "", "x").maybe_done());
        assert!(!AwsError::new(NotFound, "DBInstanceNotFound", "x").retryable());
    }

    #[test]
    fn a_rename_is_done_when_the_new_name_answers() {
        let i = |status: &str, host: &str, pending: Option<&str>| InstanceInfo {
            identifier: "ehr".into(),
            status: status.into(),
            engine: "postgres".into(),
            engine_version: "15".into(),
            endpoint: Some((host.into(), 5432)),
            tags: BTreeMap::new(),
            pending_identifier: pending.map(str::to_owned),
            settings: InstanceSettings::default(),
        };
        assert!(
            i("available", "ehr-old.x.rds.amazonaws.com", None)
                .renamed_to("ehr")
                .is_err()
        );
        assert!(
            i("rebooting", "ehr.x.rds.amazonaws.com", None)
                .renamed_to("ehr")
                .is_err()
        );
        assert!(
            i("available", "ehr.x.rds.amazonaws.com", Some("ehr"))
                .renamed_to("ehr")
                .is_err()
        );
        // `ehr` must be the whole first label, not a prefix of another name.
        assert!(
            i("available", "ehr2.x.rds.amazonaws.com", None)
                .renamed_to("ehr")
                .is_err()
        );
        assert_eq!(
            i("available", "ehr.x.rds.amazonaws.com", None).renamed_to("ehr"),
            Ok(())
        );
    }
}
