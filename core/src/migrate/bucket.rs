//! Bucket copies, the pure part: what a copy step carries (`BucketSpec`), how a source key maps
//! to a target key, the part size of a multipart upload, what a copy has left to do given both
//! listings and what earlier runs recorded, ferry's manifest (sizes and SHA-256 digests, sorted,
//! with a root hash) and the verification that judges the target against it.
//!
//! Listing, streaming and uploading are `ferry::s3move`; this module only decides and judges.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Smallest part S3 accepts (all but the last part of an upload).
pub const MIN_PART: u64 = 5 * MIB;
/// Largest part S3 accepts.
pub const MAX_PART: u64 = 5 * 1024 * MIB;
/// Most parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
pub const MIB: u64 = 1024 * 1024;
/// Metadata key (`x-amz-meta-…`) of the object's SHA-256 on the target.
pub const META_SHA256: &str = "ferry-sha256";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketPhase {
    /// List both sides, copy what the target lacks (resuming uploads), delete extras when the
    /// plan says so, write the manifest.
    Copy,
    /// Read every object on the target back and check it against the manifest.
    Verify,
}

impl BucketPhase {
    pub fn name(self) -> &'static str {
        match self {
            BucketPhase::Copy => "bucket.copy",
            BucketPhase::Verify => "bucket.verify",
        }
    }
}

/// One side of a copy: an inventory bucket, where it is, and the prefix copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketEnd {
    /// The inventory's id of the bucket.
    pub bucket: String,
    /// The inventory cloud (an `aws` one) that holds it.
    pub cloud: String,
    /// The bucket's name in that cloud.
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

impl BucketEnd {
    /// `s3://name/prefix` on cloud `cloud`, for messages.
    pub fn url(&self) -> String {
        format!(
            "s3://{}/{} (cloud `{}`)",
            self.name, self.prefix, self.cloud
        )
    }
}

/// Everything a bucket copy's steps need, decided when the plan was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSpec {
    pub name: String,
    pub source: BucketEnd,
    pub target: BucketEnd,
    #[serde(default)]
    pub delete_extra: bool,
    pub max_parallel: usize,
    /// Smallest part of a multipart upload, in bytes.
    pub part_size: u64,
    /// Both buckets are in one storage (the same endpoint, account and region): it copies
    /// each object itself (CopyObject) and ferry only reads the source to hash it.
    #[serde(default)]
    pub same_storage: bool,
}

impl BucketSpec {
    /// The target key of a source key (`None` for a key outside the source prefix).
    pub fn target_key(&self, source_key: &str) -> Option<String> {
        let rest = source_key.strip_prefix(&self.source.prefix)?;
        Some(format!("{}{rest}", self.target.prefix))
    }

    /// The part size of an object of `size` bytes: the plan's, or larger so that the object
    /// has at most 10,000 parts (rounded up to a MiB).
    pub fn part_size_for(&self, size: u64) -> u64 {
        let least = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        self.part_size.max(least).clamp(MIN_PART, MAX_PART)
    }

    /// Sent in one request (no multipart upload): at most one part.
    pub fn single_request(&self, size: u64) -> bool {
        size <= self.part_size
    }
}

/// The number of parts of an object of `size` bytes in parts of `part` bytes.
pub fn part_count(size: u64, part: u64) -> u64 {
    size.div_ceil(part).max(1)
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// One object copied: the `object_copied` ledger record, and its manifest line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCopied {
    /// The copy's name (the plan's `buckets[].name`).
    pub copy: String,
    pub source_key: String,
    /// The key on the target: the manifest's key.
    pub key: String,
    pub size: u64,
    /// SHA-256 of the object's bytes, computed while they streamed through ferry.
    pub sha256: String,
    /// The source's ETag when it was read: a later change of the source shows.
    pub source_etag: String,
    /// The target's ETag once written.
    pub etag: String,
    /// Parts of its multipart upload (0: one request).
    #[serde(default)]
    pub parts: u64,
    /// Parts of an earlier run's upload that were kept (not sent again).
    #[serde(default)]
    pub parts_resumed: u64,
    /// Whether the SHA-256 is in the target object's metadata (`ferry-sha256`): always but
    /// for a multipart object above 5 GiB, which S3 cannot copy onto itself to add it.
    #[serde(default)]
    pub sha256_in_metadata: bool,
    /// Copied by the storage itself (CopyObject: both buckets at the same endpoint and
    /// account); ferry only read the source to hash it.
    #[serde(default)]
    pub server_side: bool,
    /// Attempts retried after throttling or a 5xx.
    #[serde(default)]
    pub retries: u64,
    pub ms: u64,
}

/// A multipart upload begun (`upload_started`): a resumed copy continues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStarted {
    pub copy: String,
    pub key: String,
    pub source_key: String,
    pub source_etag: String,
    pub upload_id: String,
    pub size: u64,
    pub part_size: u64,
    pub parts: u64,
}

/// One part of a multipart upload stored on the target (`part_copied`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartCopied {
    pub copy: String,
    pub key: String,
    pub upload_id: String,
    pub part: u64,
    pub size: u64,
    /// The target's ETag of the part (completing the upload needs it).
    pub etag: String,
    /// MD5 of the part's bytes (sent as Content-MD5; a resumed copy checks the source still
    /// gives the same bytes).
    pub md5: String,
}

/// The end of a copy run (`manifest_written`): the manifest's root and size, the keys no longer
/// in it (gone from the source since an earlier run), the uploads aborted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestWritten {
    pub copy: String,
    pub root: String,
    pub objects: u64,
    pub bytes: u64,
    #[serde(default)]
    pub dropped: Vec<String>,
    #[serde(default)]
    pub aborted_uploads: Vec<String>,
}

/// An upload begun by an earlier run, with its parts stored since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorUpload {
    pub started: UploadStarted,
    pub parts: BTreeMap<u64, PartCopied>,
}

/// What a plan's ledger says of one copy: objects copied, uploads still open, the last
/// manifest written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriorObjects {
    pub copied: BTreeMap<String, ObjectCopied>,
    pub uploads: BTreeMap<String, PriorUpload>,
    pub manifest: Option<ManifestWritten>,
}

impl PriorObjects {
    /// The manifest the records give (the last run's, once it wrote one).
    pub fn manifest(&self) -> Manifest {
        Manifest::of(self.copied.values())
    }

    /// The manifest the records give, checked against the root the copy recorded last: an
    /// error when the copy has not finished or the records do not give that root.
    pub fn checked_manifest(&self, copy: &str) -> Result<Manifest, String> {
        let written = self.manifest.as_ref().ok_or_else(|| {
            format!(
                "bucket copy `{copy}` has no manifest in the ledger: its copy step has not finished"
            )
        })?;
        let m = self.manifest();
        if m.root() != written.root {
            return Err(format!(
                "the ledger's object records of copy `{copy}` give root {}, not the {} its copy recorded",
                m.root(),
                written.root
            ));
        }
        Ok(m)
    }
}

/// Replays a plan's ledger entries into what each copy (by name) did, in order: a later record
/// of a key replaces an earlier one; a manifest drops the keys it names.
pub fn replay<'a>(
    entries: impl IntoIterator<Item = &'a crate::ledger::Entry>,
) -> BTreeMap<String, PriorObjects> {
    use crate::ledger::Event;
    let mut out: BTreeMap<String, PriorObjects> = BTreeMap::new();
    for e in entries {
        let Some(d) = e.detail.as_ref() else { continue };
        let Some(copy) = d["copy"].as_str() else {
            continue;
        };
        let p = out.entry(copy.to_owned()).or_default();
        match e.event {
            Event::ObjectCopied => {
                if let Ok(c) = serde_json::from_value::<ObjectCopied>(d.clone()) {
                    p.uploads.remove(&c.key);
                    p.copied.insert(c.key.clone(), c);
                }
            }
            Event::UploadStarted => {
                if let Ok(u) = serde_json::from_value::<UploadStarted>(d.clone()) {
                    let up = PriorUpload {
                        started: u,
                        parts: BTreeMap::new(),
                    };
                    p.uploads.insert(up.started.key.clone(), up);
                }
            }
            Event::PartCopied => {
                if let Ok(pc) = serde_json::from_value::<PartCopied>(d.clone())
                    && let Some(u) = p.uploads.get_mut(&pc.key)
                    && u.started.upload_id == pc.upload_id
                {
                    u.parts.insert(pc.part, pc);
                }
            }
            Event::ManifestWritten => {
                if let Ok(m) = serde_json::from_value::<ManifestWritten>(d.clone()) {
                    for k in &m.dropped {
                        p.copied.remove(k);
                    }
                    p.uploads
                        .retain(|_, u| !m.aborted_uploads.contains(&u.started.upload_id));
                    p.manifest = Some(m);
                }
            }
            _ => {}
        }
    }
    out
}

/// What a copy run has to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyWork {
    /// Source objects to copy, by key.
    pub copy: Vec<Listed>,
    /// Copied by an earlier run, unchanged on both sides since: kept.
    pub kept: Vec<ObjectCopied>,
    /// Target keys the source does not have (deleted only with `delete_extra`).
    pub extra: Vec<String>,
}

/// Decides a copy run from both listings and the objects earlier runs recorded: an object is
/// kept when it was recorded as copied and neither its source (ETag, size) nor its target copy
/// (ETag, size) changed since; everything else under the prefix is copied.
pub fn copy_work(
    spec: &BucketSpec,
    source: &[Listed],
    target: &[Listed],
    done: &BTreeMap<String, ObjectCopied>,
) -> CopyWork {
    let on_target: BTreeMap<&str, &Listed> = target.iter().map(|t| (t.key.as_str(), t)).collect();
    let mut work = CopyWork::default();
    let mut wanted = std::collections::BTreeSet::new();
    for s in source {
        let Some(key) = spec.target_key(&s.key) else {
            continue;
        };
        let unchanged = done.get(&key).filter(|d| {
            d.source_key == s.key
                && d.source_etag == s.etag
                && d.size == s.size
                && on_target
                    .get(key.as_str())
                    .is_some_and(|t| t.etag == d.etag && t.size == d.size)
        });
        match unchanged {
            Some(d) => work.kept.push(d.clone()),
            None => work.copy.push(s.clone()),
        }
        wanted.insert(key);
    }
    work.extra = target
        .iter()
        .filter(|t| !wanted.contains(&t.key))
        .map(|t| t.key.clone())
        .collect();
    work
}

/// ferry's manifest of a copy: every target key with its size and SHA-256, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub objects: BTreeMap<String, ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub size: u64,
    pub sha256: String,
    pub source_key: String,
    pub source_etag: String,
}

impl Manifest {
    pub fn of<'a>(copied: impl IntoIterator<Item = &'a ObjectCopied>) -> Self {
        let objects = copied
            .into_iter()
            .map(|c| {
                let e = ManifestEntry {
                    size: c.size,
                    sha256: c.sha256.clone(),
                    source_key: c.source_key.clone(),
                    source_etag: c.source_etag.clone(),
                };
                (c.key.clone(), e)
            })
            .collect();
        Self { objects }
    }

    /// The manifest as text: one line per object, `SHA256 SIZE KEY` with the key as a JSON
    /// string (a key may hold any character, a newline too), sorted by key.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (key, e) in &self.objects {
            let k = serde_json::to_string(key).expect("a string serializes");
            out.push_str(&format!("{} {} {k}\n", e.sha256, e.size));
        }
        out
    }

    /// SHA-256 of the text: the digest the ledger records.
    pub fn root(&self) -> String {
        hex::encode(Sha256::digest(self.text().as_bytes()))
    }

    pub fn bytes(&self) -> u64 {
        self.objects.values().map(|e| e.size).sum()
    }
}

/// An object as the verification read it back from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObjectProblem {
    /// In the manifest, not on the target.
    Missing { key: String },
    /// On the target under the prefix, not in the manifest.
    Extra { key: String },
    /// On the target with other bytes than the manifest's.
    Different {
        key: String,
        expected_size: u64,
        expected_sha256: String,
        found_size: u64,
        found_sha256: String,
    },
    /// The source object changed (ETag or size) since it was copied.
    SourceChanged { key: String, source_key: String },
    /// On the source under the prefix, never copied (added after the copy).
    NotCopied { source_key: String },
}

impl ObjectProblem {
    pub fn describe(&self) -> String {
        match self {
            ObjectProblem::Missing { key } => format!("`{key}` is missing on the target"),
            ObjectProblem::Extra { key } => {
                format!("`{key}` is on the target but not in the manifest")
            }
            ObjectProblem::Different {
                key,
                expected_size,
                expected_sha256,
                found_size,
                found_sha256,
            } => format!(
                "`{key}` differs: {found_size} bytes, SHA-256 {} on the target; the manifest says {expected_size} bytes, {}",
                short(found_sha256),
                short(expected_sha256)
            ),
            ObjectProblem::SourceChanged { key, source_key } => {
                format!("`{source_key}` changed on the source since it was copied to `{key}`")
            }
            ObjectProblem::NotCopied { source_key } => {
                format!("`{source_key}` is on the source but was not copied")
            }
        }
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The verification of one bucket copy: what the manifest holds and every problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketReport {
    pub copy: String,
    pub source: String,
    pub target: String,
    pub objects: u64,
    pub bytes: u64,
    /// The manifest's root hash the check was made against.
    pub root: String,
    /// Objects read back and hashed.
    pub checked: u64,
    pub problems: Vec<ObjectProblem>,
}

impl BucketReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn verdict(&self) -> String {
        if self.passed() {
            return format!(
                "bucket copy `{}`: {} object(s), {} byte(s) read back; every one matches the manifest (root {})",
                self.copy,
                self.objects,
                self.bytes,
                short(&self.root)
            );
        }
        let mut lines = vec![format!(
            "bucket copy `{}`: {} problem(s) against the manifest (root {}):",
            self.copy,
            self.problems.len(),
            short(&self.root)
        )];
        lines.extend(
            self.problems
                .iter()
                .map(|p| format!("  - {}", p.describe())),
        );
        lines.join("\n")
    }
}

/// Judges the target (each object's size and SHA-256 as read back) and the source's listing
/// now against the manifest. `found` holds every target key under the prefix.
pub fn judge(
    spec: &BucketSpec,
    manifest: &Manifest,
    found: &BTreeMap<String, Found>,
    source_now: &[Listed],
) -> BucketReport {
    let mut problems = Vec::new();
    for (key, e) in &manifest.objects {
        match found.get(key) {
            None => problems.push(ObjectProblem::Missing { key: key.clone() }),
            Some(f) if f.size != e.size || f.sha256 != e.sha256 => {
                problems.push(ObjectProblem::Different {
                    key: key.clone(),
                    expected_size: e.size,
                    expected_sha256: e.sha256.clone(),
                    found_size: f.size,
                    found_sha256: f.sha256.clone(),
                })
            }
            Some(_) => {}
        }
    }
    for key in found.keys().filter(|k| !manifest.objects.contains_key(*k)) {
        problems.push(ObjectProblem::Extra { key: key.clone() });
    }
    let by_source: BTreeMap<&str, (&String, &ManifestEntry)> = manifest
        .objects
        .iter()
        .map(|(k, e)| (e.source_key.as_str(), (k, e)))
        .collect();
    for s in source_now {
        match by_source.get(s.key.as_str()) {
            None if spec.target_key(&s.key).is_some() => problems.push(ObjectProblem::NotCopied {
                source_key: s.key.clone(),
            }),
            Some((key, e)) if e.source_etag != s.etag || e.size != s.size => {
                problems.push(ObjectProblem::SourceChanged {
                    key: (*key).clone(),
                    source_key: s.key.clone(),
                })
            }
            _ => {}
        }
    }
    BucketReport {
        copy: spec.name.clone(),
        source: spec.source.url(),
        target: spec.target.url(),
        objects: manifest.objects.len() as u64,
        bytes: manifest.bytes(),
        root: manifest.root(),
        checked: found.len() as u64,
        problems,
    }
}

/// What a bucket step does, for the plan's text.
pub fn describe(phase: BucketPhase, spec: &BucketSpec) -> String {
    match phase {
        BucketPhase::Copy => format!(
            "copy every object of {} to {} ({} at once, {}), each hashed (SHA-256) while it streams; {}",
            spec.source.url(),
            spec.target.url(),
            spec.max_parallel,
            if spec.same_storage {
                "by the storage itself: one storage holds both buckets".to_owned()
            } else {
                format!("through ferry, parts of {} MiB", spec.part_size / MIB)
            },
            if spec.delete_extra {
                "objects only on the target are deleted"
            } else {
                "objects only on the target are kept (and named by the verification)"
            }
        ),
        BucketPhase::Verify => format!(
            "read every object of {} back and check its size and SHA-256 against the manifest of copy `{}`",
            spec.target.url(),
            spec.name
        ),
    }
}

#[cfg(test)]
#[path = "bucket_tests.rs"]
mod tests;
