//! Release records: one Secret per revision of an app, in the app's namespace (like Helm's
//! `sh.helm.release.v1.*`), holding the objects exactly as applied, the version and the plan.
//! They let back-out and rollback work from the cluster alone, without the ledger's host.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ObjectId;

pub const FORMAT: &str = "ferry.release.v1";
/// Secret type of release records.
pub const SECRET_TYPE: &str = "ferry.io/release.v1";
/// Labels of release records (not ferry's object labels: a record is never pruned).
pub const OWNER_LABEL: &str = "owner";
pub const REVISION_LABEL: &str = "ferry.io/revision";
pub const STATUS_LABEL: &str = "ferry.io/status";
/// Key of the record in the Secret's data (gzipped JSON).
pub const DATA_KEY: &str = "release";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Applied, rollout not yet confirmed (or the run stopped before it was).
    Pending,
    Deployed,
    /// Was deployed; a later revision replaced it. Back-out returns to these.
    Superseded,
    Failed,
    Uninstalled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Deployed => "deployed",
            Status::Superseded => "superseded",
            Status::Failed => "failed",
            Status::Uninstalled => "uninstalled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub format: String,
    pub app: String,
    pub site: String,
    pub namespace: String,
    pub revision: u32,
    pub version: String,
    pub status: Status,
    /// Why it failed (rollout reason, conflict...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub plan_id: String,
    /// The revision whose objects this one re-applied (a rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u32>,
    /// SHA-256 of the objects' canonical JSON: what the ledger references.
    pub objects_sha256: String,
    pub created_at: String,
    pub updated_at: String,
    /// The objects as applied, in apply order.
    pub objects: Vec<Value>,
    /// The record Secret's `resourceVersion` when it was read or last written (not stored):
    /// an update names it, so a second writer of the same revision gets a 409 instead of
    /// overwriting the first.
    #[serde(skip)]
    pub resource_version: Option<String>,
}

impl Record {
    pub fn ids(&self) -> Vec<ObjectId> {
        self.objects.iter().filter_map(ObjectId::of).collect()
    }

    pub fn secret_name(&self) -> String {
        secret_name(&self.app, self.revision)
    }

    /// A back-out may return to it: it was once rolled out completely.
    pub fn was_deployed(&self) -> bool {
        matches!(self.status, Status::Deployed | Status::Superseded)
    }

    /// The record without its objects (their ids and count kept).
    pub fn summary(&self) -> Summary {
        Summary {
            app: self.app.clone(),
            site: self.site.clone(),
            namespace: self.namespace.clone(),
            revision: self.revision,
            version: self.version.clone(),
            status: self.status,
            reason: self.reason.clone(),
            plan_id: self.plan_id.clone(),
            rollback_of: self.rollback_of,
            objects_sha256: self.objects_sha256.clone(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
            ids: self.ids(),
            objects: self.objects.len(),
            resource_version: self.resource_version.clone(),
        }
    }
}

/// A record without its objects: what the record Secret's `ferry.io/summary` annotation
/// carries. The history is listed as metadata only (no record's payload travels); a record's
/// objects are read, one Secret at a time, only where they are used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub app: String,
    pub site: String,
    pub namespace: String,
    pub revision: u32,
    pub version: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub plan_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u32>,
    pub objects_sha256: String,
    pub created_at: String,
    pub updated_at: String,
    /// The ids of the record's objects: what a prune or an uninstall deletes.
    pub ids: Vec<ObjectId>,
    /// How many objects the record holds.
    pub objects: usize,
    /// As on [`Record`]: the Secret's `resourceVersion` when it was listed (not stored).
    #[serde(skip)]
    pub resource_version: Option<String>,
}

impl Summary {
    pub fn secret_name(&self) -> String {
        secret_name(&self.app, self.revision)
    }

    pub fn was_deployed(&self) -> bool {
        matches!(self.status, Status::Deployed | Status::Superseded)
    }
}

/// Annotation of a record's Secret holding its [`Summary`] as JSON.
pub const SUMMARY_ANNOTATION: &str = "ferry.io/summary";
/// The largest summary written (annotations share 256 KiB per object): a record whose
/// summary is larger has none, and listing the history reads that record whole.
pub const SUMMARY_MAX_BYTES: usize = 64 * 1024;

/// The summary annotation's value for `r`, if it is small enough to carry.
pub fn summary_annotation(r: &Record) -> Option<String> {
    let json = serde_json::to_string(&r.summary()).expect("summaries serialize");
    (json.len() <= SUMMARY_MAX_BYTES).then_some(json)
}

/// A summary annotation read back, checked against the Secret's own labels: the revision and
/// the app must be the ones its name and labels say.
pub fn read_summary(json: &str, revision_label: Option<&str>) -> Result<Summary, String> {
    let s: Summary =
        serde_json::from_str(json).map_err(|e| format!("its summary is not readable: {e}"))?;
    if revision_label != Some(s.revision.to_string().as_str()) {
        return Err(format!(
            "its summary says revision {}, its label {}",
            s.revision,
            revision_label.unwrap_or("(none)")
        ));
    }
    Ok(s)
}

pub fn secret_name(app: &str, revision: u32) -> String {
    format!("{FORMAT}.{}.v{revision}", crate::model::resource_name(app))
}

pub fn objects_sha256(objects: &[Value]) -> String {
    crate::load::sha256_hex(&serde_json::to_vec(objects).expect("JSON values serialize"))
}

/// Labels of a record's Secret: found by `owner=ferry,ferry.io/app=APP`.
pub fn labels(r: &Record) -> BTreeMap<String, String> {
    [
        (OWNER_LABEL.to_owned(), "ferry".to_owned()),
        (
            super::APP_LABEL.to_owned(),
            crate::model::resource_name(&r.app),
        ),
        (REVISION_LABEL.to_owned(), r.revision.to_string()),
        (STATUS_LABEL.to_owned(), r.status.as_str().to_owned()),
    ]
    .into()
}

pub fn selector(app: &str) -> String {
    format!(
        "{OWNER_LABEL}=ferry,{}={}",
        super::APP_LABEL,
        crate::model::resource_name(app)
    )
}

/// The record as Secret data bytes (gzipped JSON: records hold whole manifests, and a Secret
/// holds at most 1 MiB).
pub fn encode(r: &Record) -> Vec<u8> {
    let json = serde_json::to_vec(r).expect("records serialize");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json).expect("writing to memory");
    gz.finish().expect("writing to memory")
}

pub fn decode(bytes: &[u8]) -> Result<Record, String> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut json)
        .map_err(|e| format!("not gzip data: {e}"))?;
    let r: Record =
        serde_json::from_slice(&json).map_err(|e| format!("not a release record: {e}"))?;
    if r.format != FORMAT {
        return Err(format!(
            "format `{}`, this build reads `{FORMAT}`",
            r.format
        ));
    }
    Ok(r)
}

/// Most bytes of encoded record one Secret holds. The API server refuses a Secret whose data
/// exceeds 1 MiB; the rest is room for metadata and the JSON around it.
pub const PART_BYTES: usize = 768 * 1024;
/// Annotation of a record's Secret when the record is split: how many Secrets hold it, and
/// the SHA-256 of the whole encoded record.
pub const PARTS_ANNOTATION: &str = "ferry.io/parts";
pub const SHA256_ANNOTATION: &str = "ferry.io/record-sha256";
/// Label of the extra Secrets of a split record (not `owner=ferry`: listing the history
/// finds the first part only).
pub const PART_OWNER: &str = "ferry-part";

/// The encoded record cut into Secret-sized parts (one part when it fits).
pub fn split(encoded: &[u8]) -> Vec<&[u8]> {
    if encoded.is_empty() {
        return vec![encoded];
    }
    encoded.chunks(PART_BYTES).collect()
}

/// The most Secrets one record may take (12 MiB of compressed objects): every read of the
/// history carries them.
pub const MAX_PARTS: usize = 16;

/// How many Secrets the record of a revision with `objects` takes, or why it cannot be
/// recorded (too large even split): checked at plan time.
pub fn parts_needed(objects: &[Value]) -> Result<usize, String> {
    let probe = Record {
        format: FORMAT.into(),
        app: String::new(),
        site: String::new(),
        namespace: String::new(),
        revision: 0,
        version: String::new(),
        status: Status::Pending,
        reason: None,
        plan_id: String::new(),
        rollback_of: None,
        objects_sha256: objects_sha256(objects),
        created_at: String::new(),
        updated_at: String::new(),
        objects: objects.to_vec(),
        resource_version: None,
    };
    let n = split(&encode(&probe)).len();
    if n > MAX_PARTS {
        return Err(format!(
            "the release's objects take {n} release-record Secrets of {} KiB compressed (at most {MAX_PARTS}): split the app, or keep large data out of its manifests",
            PART_BYTES / 1024
        ));
    }
    Ok(n)
}

/// The Secret name of part `n` (2, 3, ...) of a record.
pub fn part_name(record_secret: &str, n: usize) -> String {
    format!("{record_secret}.p{n}")
}

/// The parts put back together, checked against the SHA-256 the first part's Secret carries.
pub fn join(parts: &[Vec<u8>], sha256: &str) -> Result<Vec<u8>, String> {
    let all = parts.concat();
    let got = crate::load::sha256_hex(&all);
    if got != sha256 {
        return Err(format!(
            "its {} parts do not add up (SHA-256 {got}, the record says {sha256}): a part was changed or lost",
            parts.len()
        ));
    }
    Ok(all)
}

/// What the records say about an app on one namespace, newest last (their summaries: the
/// objects of a record are read when they are needed).
#[derive(Debug, Clone, Default)]
pub struct History {
    pub records: Vec<Summary>,
}

impl History {
    pub fn new(mut records: Vec<Summary>) -> Self {
        records.sort_by_key(|r| r.revision);
        Self { records }
    }

    pub fn deployed(&self) -> Option<&Summary> {
        self.records
            .iter()
            .rev()
            .find(|r| r.status == Status::Deployed)
    }

    pub fn latest(&self) -> Option<&Summary> {
        self.records.last()
    }

    pub fn revision(&self, n: u32) -> Option<&Summary> {
        self.records.iter().find(|r| r.revision == n)
    }

    pub fn next_revision(&self) -> u32 {
        self.latest().map_or(1, |r| r.revision + 1)
    }

    /// The revision a back-out returns to: the newest once-deployed revision before the
    /// deployed one with another version.
    pub fn previous(&self) -> Option<&Summary> {
        let current = self.deployed()?;
        self.records
            .iter()
            .rev()
            .filter(|r| r.revision < current.revision && r.was_deployed())
            .find(|r| r.version != current.version)
    }

    /// The newest once-deployed revision of `version` (what switching to a version means).
    pub fn of_version(&self, version: &str) -> Option<&Summary> {
        self.records
            .iter()
            .rev()
            .find(|r| r.version == version && r.was_deployed())
    }

    /// Versions a back-out can return to, sorted and unique.
    pub fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .records
            .iter()
            .filter(|r| r.was_deployed())
            .map(|r| r.version.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Every object any live revision may have left in the cluster: what a new revision
    /// prunes against and an uninstall deletes.
    pub fn all_ids(&self) -> Vec<ObjectId> {
        self.records
            .iter()
            .filter(|r| r.status != Status::Uninstalled)
            .flat_map(|r| r.ids.iter().cloned())
            .collect()
    }

    /// Revisions beyond the newest `keep` to delete; the deployed one is always kept.
    pub fn expired(&self, keep: usize) -> Vec<u32> {
        let deployed = self.deployed().map(|r| r.revision);
        let n = self.records.len();
        self.records
            .iter()
            .take(n.saturating_sub(keep))
            .filter(|r| Some(r.revision) != deployed)
            .map(|r| r.revision)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn rec(revision: u32, version: &str, status: Status) -> Record {
        let objects = vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": format!("c{revision}"), "namespace": "ns"}})];
        Record {
            format: FORMAT.into(),
            app: "ehr".into(),
            site: "east".into(),
            namespace: "ns".into(),
            revision,
            version: version.into(),
            status,
            reason: None,
            plan_id: "p".into(),
            rollback_of: None,
            objects_sha256: objects_sha256(&objects),
            created_at: "t".into(),
            updated_at: "t".into(),
            objects,
            resource_version: None,
        }
    }

    #[test]
    fn encode_decode_round_trip_and_refuse_garbage() {
        let r = rec(3, "3.0.0", Status::Deployed);
        assert_eq!(decode(&encode(&r)).unwrap(), r);
        assert!(decode(b"plain").unwrap_err().contains("not gzip"));
        assert_eq!(secret_name("ehr", 3), "ferry.release.v1.ehr.v3");
        assert!(crate::kubernetes::check_dns_subdomain(&r.secret_name()).is_ok());
    }

    #[test]
    fn history_finds_current_previous_and_versions() {
        use Status::*;
        let h = History::new(
            [
                rec(2, "2.0.0", Superseded),
                rec(1, "1.0.0", Superseded),
                rec(3, "2.0.0", Superseded),
                rec(4, "3.0.0", Failed),
                rec(5, "3.0.1", Deployed),
                rec(6, "3.1.0", Pending),
            ]
            .iter()
            .map(Record::summary)
            .collect(),
        );
        assert_eq!(h.deployed().unwrap().revision, 5);
        assert_eq!(h.latest().unwrap().revision, 6);
        assert_eq!(h.next_revision(), 7);
        assert_eq!(
            h.previous().unwrap().revision,
            3,
            "newest deployed, not the failed one"
        );
        assert_eq!(h.of_version("2.0.0").unwrap().revision, 3);
        assert!(h.of_version("3.0.0").is_none(), "never rolled out");
        assert_eq!(h.versions(), ["1.0.0", "2.0.0", "3.0.1"]);
        assert_eq!(h.expired(3), vec![1, 2, 3]);
        assert_eq!(h.all_ids().len(), 6);
    }

    #[test]
    fn failed_first_install_has_no_current_but_its_objects_are_known() {
        let h = History::new(vec![rec(1, "1.0.0", Status::Failed).summary()]);
        assert!(h.deployed().is_none());
        assert!(h.previous().is_none());
        assert_eq!(
            h.all_ids().len(),
            1,
            "an uninstall still finds what it left"
        );
        assert_eq!(h.expired(1), Vec::<u32>::new());
        let gone = History::new(vec![rec(1, "1.0.0", Status::Uninstalled).summary()]);
        assert!(gone.all_ids().is_empty());
    }

    #[test]
    fn the_deployed_revision_is_never_expired() {
        let h = History::new(vec![
            rec(1, "1", Status::Deployed).summary(),
            rec(2, "2", Status::Failed).summary(),
            rec(3, "3", Status::Failed).summary(),
        ]);
        assert_eq!(h.expired(2), Vec::<u32>::new());
    }

    #[test]
    fn a_summary_keeps_everything_but_the_objects_and_is_checked_against_its_labels() {
        let r = rec(3, "3.0.0", Status::Deployed);
        let json = summary_annotation(&r).unwrap();
        assert!(!json.contains("\"data\""), "{json}");
        let s = read_summary(&json, Some("3")).unwrap();
        assert_eq!(s, r.summary());
        assert_eq!((s.objects, s.ids.len()), (1, 1));
        assert_eq!(s.secret_name(), r.secret_name());
        assert!(
            read_summary(&json, Some("4"))
                .unwrap_err()
                .contains("revision 3, its label 4")
        );
        assert!(
            read_summary("{", Some("3"))
                .unwrap_err()
                .contains("not readable")
        );
        // Too many objects for an annotation: no summary, the record is read whole instead.
        let mut big = rec(4, "4.0.0", Status::Deployed);
        big.objects = (0..2000)
            .map(|i| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": format!("config-map-number-{i}"), "namespace": "ns"}}))
            .collect();
        assert!(summary_annotation(&big).is_none());
    }

    #[test]
    fn a_large_record_is_split_and_joined_with_its_checksum() {
        let big: Vec<u8> = (0..(PART_BYTES * 2 + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        let parts = split(&big);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() <= PART_BYTES));
        let owned: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let sha = crate::load::sha256_hex(&big);
        assert_eq!(join(&owned, &sha).unwrap(), big);
        let mut lost = owned.clone();
        lost.pop();
        assert!(join(&lost, &sha).unwrap_err().contains("do not add up"));
        assert_eq!(split(b"small").len(), 1);
        assert_eq!(parts_needed(&rec(1, "1", Status::Pending).objects), Ok(1));
        assert_eq!(
            part_name("ferry.release.v1.ehr.v3", 2),
            "ferry.release.v1.ehr.v3.p2"
        );
    }
}
