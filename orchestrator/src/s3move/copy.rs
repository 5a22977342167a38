//! A copy run: both sides listed to the end, then every object that is not already there
//! (unchanged since an earlier run recorded it) streamed source -> ferry -> target with its
//! SHA-256 and MD5 computed on the way. An object up to one part is one PUT; a larger one a
//! multipart upload whose id and parts are recorded as they finish, so a resumed run continues it
//! from its next part. Memory is bounded: at most `2 × max_parallel` part buffers exist at once.
//! The run ends by aborting the uploads it started and no longer needs, listing the target's
//! uploads again to prove none of its own is left open, and recording the manifest's root.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use md5::{Digest as _, Md5};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{Side, copy_source, unquote};
use crate::drivers::rds::api::AwsErrorKind;
use crate::ledger::Event;
use crate::migrate::bucket::{
    BucketSpec, Listed, META_SHA256, Manifest, ManifestWritten, ObjectCopied, PartCopied,
    PriorObjects, PriorUpload, UploadStarted, copy_work, part_count,
};

/// Parts of one object in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Largest object S3 copies onto itself in one request (to add the SHA-256 to its metadata).
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// The ledger and progress of one copy step.
#[async_trait::async_trait]
pub trait CopyLog: Send + Sync {
    /// One entry, durable before the call returns.
    async fn record(&self, event: Event, message: String, detail: Value) -> Result<(), String>;
    fn progress(&self, objects: u64, bytes: u64);
    fn cancelled(&self) -> bool;
    /// The run still holds the apply lock (checked before each object and each completion).
    fn fence(&self) -> Result<(), String>;
}

pub struct Job<'a> {
    pub spec: &'a BucketSpec,
    pub source: &'a Side,
    pub target: &'a Side,
}

/// What a run did, for the step's record; the manifest's records and root for the verification.
#[derive(Debug)]
pub struct Copied {
    /// Every object in the manifest (kept from earlier runs, copied by this one), by target key.
    pub records: BTreeMap<String, ObjectCopied>,
    pub written: ManifestWritten,
    pub summary: Value,
}

/// Records one ledger entry whose detail is `rec`.
async fn note<T: serde::Serialize>(
    log: &dyn CopyLog,
    event: Event,
    message: String,
    rec: &T,
) -> Result<(), String> {
    let detail = serde_json::to_value(rec).expect("a copy record serializes");
    log.record(event, message, detail).await
}

/// Shared by the objects of one run.
struct Run<'a> {
    job: &'a Job<'a>,
    prior: &'a PriorObjects,
    log: &'a dyn CopyLog,
    buffers: Semaphore,
    /// Uploads this run began (id -> key), and those it completed.
    started: Mutex<BTreeMap<String, String>>,
    completed: Mutex<BTreeSet<String>>,
}

pub async fn run(job: &Job<'_>, prior: &PriorObjects, log: &dyn CopyLog) -> Result<Copied, String> {
    let source = job.source.list().await?;
    let target = job.target.list().await?;
    let work = copy_work(job.spec, &source, &target, &prior.copied);
    let r = Run {
        job,
        prior,
        log,
        buffers: Semaphore::new(job.spec.max_parallel * 2),
        started: Mutex::new(BTreeMap::new()),
        completed: Mutex::new(BTreeSet::new()),
    };
    let bytes_now: u64 = work.copy.iter().map(|o| o.size).sum();
    // Owned items: a closure over borrowed ones is not `Send` for every lifetime (the executor
    // spawns the step).
    let run = &r;
    let copied: Vec<ObjectCopied> = futures_util::stream::iter(work.copy.clone())
        .map(|o| async move { run.object(&o).await })
        .buffer_unordered(job.spec.max_parallel.max(1))
        .try_collect()
        .await?;
    let deleted = r.delete_extra(&work.extra).await?;
    let (aborted, others) = r.close_uploads().await?;
    let manifest = Manifest::of(work.kept.iter().chain(&copied));
    let written = ManifestWritten {
        copy: job.spec.name.clone(),
        root: manifest.root(),
        objects: manifest.objects.len() as u64,
        bytes: manifest.bytes(),
        dropped: prior
            .copied
            .keys()
            .filter(|k| !manifest.objects.contains_key(*k))
            .cloned()
            .collect(),
        aborted_uploads: aborted.clone(),
    };
    let message = format!(
        "manifest of `{}`: {} object(s), {} byte(s), root {}",
        written.copy, written.objects, written.bytes, written.root
    );
    note(log, Event::ManifestWritten, message, &written).await?;
    let extra_kept = if job.spec.delete_extra {
        0
    } else {
        work.extra.len()
    };
    let summary = json!({
        "objects": written.objects,
        "bytes": written.bytes,
        "root": written.root,
        "copied_now": copied.len(),
        "bytes_now": bytes_now,
        "kept": work.kept.len(),
        "deleted": deleted,
        "extra_kept": extra_kept,
        "uploads_aborted": aborted,
        // Proven by listing the target's uploads again (null: the store cannot list them).
        "own_uploads_open": others.map(|_| 0),
        "other_uploads_open": others,
        "retries": job.source.retries.load(Ordering::Relaxed) + job.target.retries.load(Ordering::Relaxed),
    });
    let records = work
        .kept
        .into_iter()
        .chain(copied)
        .map(|c| (c.key.clone(), c))
        .collect();
    Ok(Copied {
        records,
        written,
        summary,
    })
}

/// What a GET said of the object besides its bytes: kept on the copy.
#[derive(Clone, Default)]
struct Head {
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    metadata: HashMap<String, String>,
}

/// Sets the headers an object keeps on its copy, on a request that writes one.
trait WithHead: Sized {
    fn with_head(self, h: &Head) -> Self;
}

macro_rules! with_head {
    ($($builder:ty),*) => {$(
        impl WithHead for $builder {
            fn with_head(self, h: &Head) -> Self {
                self.set_content_type(h.content_type.clone())
                    .set_cache_control(h.cache_control.clone())
                    .set_content_disposition(h.content_disposition.clone())
                    .set_content_encoding(h.content_encoding.clone())
                    .set_content_language(h.content_language.clone())
            }
        }
    )*};
}

with_head!(
    aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder,
    aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder
);

impl Run<'_> {
    async fn object(&self, o: &Listed) -> Result<ObjectCopied, String> {
        if self.log.cancelled() {
            return Err("interrupted: `ferry apply --resume` continues the copy".into());
        }
        self.log.fence()?;
        let (src, spec) = (self.job.source, self.job.spec);
        let key = spec.target_key(&o.key).expect("listed under the prefix");
        let local = AtomicU64::new(0);
        let t0 = Instant::now();
        let got = src
            .call(&local, || {
                src.client()
                    .get_object()
                    .bucket(src.bucket_name())
                    .key(&o.key)
                    .if_match(format!("\"{}\"", o.etag))
                    .send()
            })
            .await
            .map_err(|e| {
                src.fail(
                    &format!("reading `{}` (changed since it was listed?)", o.key),
                    &e,
                )
            })?;
        let head = Head {
            content_type: got.content_type().map(str::to_owned),
            cache_control: got.cache_control().map(str::to_owned),
            content_disposition: got.content_disposition().map(str::to_owned),
            content_encoding: got.content_encoding().map(str::to_owned),
            content_language: got.content_language().map(str::to_owned),
            metadata: got
                .metadata()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k != META_SHA256)
                .collect(),
        };
        let mut body = Body::new(got.body);
        let mut rec = if spec.same_storage && o.size <= MAX_COPY {
            self.server_side(o, &key, &head, &mut body, &local).await?
        } else if spec.single_request(o.size) {
            self.put_whole(o, &key, &head, &mut body, &local).await?
        } else {
            self.multipart(o, &key, &head, &mut body, &local).await?
        };
        body.end(o).await?;
        rec.retries = local.load(Ordering::Relaxed);
        rec.ms = t0.elapsed().as_millis() as u64;
        let message = format!(
            "{} -> {}: {} bytes, SHA-256 {}",
            rec.source_key, rec.key, rec.size, rec.sha256
        );
        note(self.log, Event::ObjectCopied, message, &rec).await?;
        self.log.progress(1, 0);
        Ok(rec)
    }

    async fn put_whole(
        &self,
        o: &Listed,
        key: &str,
        head: &Head,
        body: &mut Body,
        local: &AtomicU64,
    ) -> Result<ObjectCopied, String> {
        let _buffer = self.buffers.acquire().await.expect("never closed");
        let bytes = body.take(o.size, &o.key).await?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let md5 = Md5::digest(&bytes).as_slice().to_vec();
        let mut meta = head.metadata.clone();
        meta.insert(META_SHA256.into(), sha256.clone());
        let dst = self.job.target;
        let out = dst
            .call(local, || {
                dst.client()
                    .put_object()
                    .bucket(dst.bucket_name())
                    .key(key)
                    .body(ByteStream::from(bytes.clone()))
                    .content_length(bytes.len() as i64)
                    .content_md5(aws_smithy_types::base64::encode(&md5))
                    .set_metadata(Some(meta.clone()))
                    .with_head(head)
                    .send()
            })
            .await
            .map_err(|e| dst.fail(&format!("writing `{key}`"), &e))?;
        self.log.progress(0, o.size);
        Ok(self.record(
            o,
            key,
            sha256,
            unquote(out.e_tag().unwrap_or_default()),
            0,
            0,
            true,
        ))
    }

    /// Both buckets are in one storage: it copies the object (CopyObject, the source's ETag
    /// required), with the SHA-256 ferry computed reading the source added to its metadata.
    async fn server_side(
        &self,
        o: &Listed,
        key: &str,
        head: &Head,
        body: &mut Body,
        local: &AtomicU64,
    ) -> Result<ObjectCopied, String> {
        let mut sha = Sha256::new();
        let mut left = o.size;
        while left > 0 {
            let n = left.min(self.job.spec.part_size);
            sha.update(&body.take(n, &o.key).await?);
            left -= n;
        }
        let sha256 = hex::encode(sha.finalize());
        let (src, dst) = (self.job.source, self.job.target);
        let mut meta = head.metadata.clone();
        meta.insert(META_SHA256.into(), sha256.clone());
        let out = dst
            .call(local, || {
                dst.client()
                    .copy_object()
                    .bucket(dst.bucket_name())
                    .key(key)
                    .copy_source(copy_source(src.bucket_name(), &o.key))
                    .copy_source_if_match(format!("\"{}\"", o.etag))
                    .metadata_directive(MetadataDirective::Replace)
                    .set_metadata(Some(meta.clone()))
                    .with_head(head)
                    .send()
            })
            .await
            .map_err(|e| dst.fail(&format!("copying `{}` to `{key}` (server side)", o.key), &e))?;
        self.log.progress(0, o.size);
        let etag = out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(unquote)
            .unwrap_or_default();
        let mut rec = self.record(o, key, sha256, etag, 0, 0, true);
        rec.server_side = true;
        Ok(rec)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        o: &Listed,
        key: &str,
        sha256: String,
        etag: String,
        parts: u64,
        parts_resumed: u64,
        sha256_in_metadata: bool,
    ) -> ObjectCopied {
        ObjectCopied {
            copy: self.job.spec.name.clone(),
            source_key: o.key.clone(),
            key: key.to_owned(),
            size: o.size,
            sha256,
            source_etag: o.etag.clone(),
            etag,
            parts,
            parts_resumed,
            sha256_in_metadata,
            server_side: false,
            retries: 0,
            ms: 0,
        }
    }

    async fn multipart(
        &self,
        o: &Listed,
        key: &str,
        head: &Head,
        body: &mut Body,
        local: &AtomicU64,
    ) -> Result<ObjectCopied, String> {
        let part = self.job.spec.part_size_for(o.size);
        let n = part_count(o.size, part);
        let (upload_id, kept) = match self.resumable(o, key, part, local).await? {
            Some(x) => x,
            None => (
                self.start(o, key, head, part, n, local).await?,
                BTreeMap::new(),
            ),
        };
        let mut etags: BTreeMap<u64, String> =
            kept.iter().map(|(p, pc)| (*p, pc.etag.clone())).collect();
        let mut sha = Sha256::new();
        let upload: &str = &upload_id;
        let mut inflight = FuturesUnordered::new();
        for i in 1..=n {
            if self.log.cancelled() {
                return Err("interrupted: `ferry apply --resume` continues the upload".into());
            }
            let size = if i < n { part } else { o.size - part * (n - 1) };
            // A buffer, finishing this object's own parts while none is free: waiting with
            // parts in flight that nobody drives would deadlock the objects against each other.
            let permit = loop {
                if let Ok(p) = self.buffers.try_acquire() {
                    break p;
                }
                match inflight.next().await {
                    Some(pc) => {
                        let pc: PartCopied = pc?;
                        etags.insert(pc.part, self.part_done(pc).await?);
                    }
                    None => break self.buffers.acquire().await.expect("never closed"),
                }
            };
            let bytes = body.take(size, &o.key).await?;
            sha.update(&bytes);
            let md5 = Md5::digest(&bytes).as_slice().to_vec();
            if kept
                .get(&i)
                .is_some_and(|k| k.md5 == hex::encode(&md5) && k.size == size)
            {
                self.log.progress(0, size);
                continue;
            }
            inflight.push(async move {
                let r = self.part(key, upload, i, bytes, md5, local).await;
                drop(permit);
                r
            });
            while inflight.len() >= PARTS_IN_FLIGHT {
                let pc = inflight.next().await.expect("not empty")?;
                etags.insert(pc.part, self.part_done(pc).await?);
            }
        }
        while let Some(pc) = inflight.next().await {
            let pc = pc?;
            etags.insert(pc.part, self.part_done(pc).await?);
        }
        drop(inflight);
        let sha256 = hex::encode(sha.finalize());
        self.log.fence()?;
        let etag = self.complete(key, &upload_id, &etags, local).await?;
        let (etag, in_meta) = self.add_sha256(o, key, head, &sha256, &etag, local).await?;
        Ok(self.record(o, key, sha256, etag, n, kept.len() as u64, in_meta))
    }

    /// An earlier run's upload of this object to continue, with the parts it stored that the
    /// target still lists; `None` when there is none, the source changed since or the target
    /// no longer knows the upload (it is aborted at the end if it is still open).
    async fn resumable(
        &self,
        o: &Listed,
        key: &str,
        part: u64,
        local: &AtomicU64,
    ) -> Result<Option<(String, BTreeMap<u64, PartCopied>)>, String> {
        let Some(PriorUpload { started, parts }) = self.prior.uploads.get(key) else {
            return Ok(None);
        };
        if started.source_key != o.key || started.source_etag != o.etag || started.part_size != part
        {
            return Ok(None);
        }
        let listed = match self.list_parts(key, &started.upload_id, local).await {
            Ok(l) => l,
            Err(e) if e.kind == AwsErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(self
                    .job
                    .target
                    .fail(&format!("listing the parts of `{key}`"), &e));
            }
        };
        let kept = parts
            .iter()
            .filter(|(n, p)| {
                listed
                    .get(n)
                    .is_some_and(|(etag, size)| *etag == unquote(&p.etag) && *size == p.size)
            })
            .map(|(n, p)| (*n, p.clone()))
            .collect();
        Ok(Some((started.upload_id.clone(), kept)))
    }

    async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
        local: &AtomicU64,
    ) -> Result<BTreeMap<u64, (String, u64)>, crate::drivers::rds::api::AwsError> {
        let dst = self.job.target;
        let mut out = BTreeMap::new();
        let mut marker: Option<String> = None;
        loop {
            let page = dst
                .call(local, || {
                    dst.client()
                        .list_parts()
                        .bucket(dst.bucket_name())
                        .key(key)
                        .upload_id(upload_id)
                        .set_part_number_marker(marker.clone())
                        .send()
                })
                .await?;
            for p in page.parts() {
                let n = p.part_number().unwrap_or(0).max(0) as u64;
                let size = p.size().unwrap_or(0).max(0) as u64;
                out.insert(n, (unquote(p.e_tag().unwrap_or_default()), size));
            }
            marker = page.next_part_number_marker().map(str::to_owned);
            if !page.is_truncated().unwrap_or(false) || marker.is_none() {
                return Ok(out);
            }
        }
    }

    async fn start(
        &self,
        o: &Listed,
        key: &str,
        head: &Head,
        part: u64,
        parts: u64,
        local: &AtomicU64,
    ) -> Result<String, String> {
        let dst = self.job.target;
        let out = dst
            .call(local, || {
                dst.client()
                    .create_multipart_upload()
                    .bucket(dst.bucket_name())
                    .key(key)
                    .set_metadata(Some(head.metadata.clone()))
                    .with_head(head)
                    .send()
            })
            .await
            .map_err(|e| dst.fail(&format!("starting the upload of `{key}`"), &e))?;
        let upload_id = out
            .upload_id()
            .ok_or_else(|| dst.fail(&format!("starting the upload of `{key}`"), &no_id()))?
            .to_owned();
        self.started
            .lock()
            .expect("started")
            .insert(upload_id.clone(), key.to_owned());
        let u = UploadStarted {
            copy: self.job.spec.name.clone(),
            key: key.to_owned(),
            source_key: o.key.clone(),
            source_etag: o.etag.clone(),
            upload_id: upload_id.clone(),
            size: o.size,
            part_size: part,
            parts,
        };
        let message = format!("upload of `{key}` begun: {parts} part(s) of {part} bytes");
        note(self.log, Event::UploadStarted, message, &u).await?;
        Ok(upload_id)
    }

    async fn part(
        &self,
        key: &str,
        upload_id: &str,
        n: u64,
        bytes: Bytes,
        md5: Vec<u8>,
        local: &AtomicU64,
    ) -> Result<PartCopied, String> {
        let dst = self.job.target;
        let size = bytes.len() as u64;
        let out = dst
            .call(local, || {
                dst.client()
                    .upload_part()
                    .bucket(dst.bucket_name())
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(n as i32)
                    .content_length(size as i64)
                    .content_md5(aws_smithy_types::base64::encode(&md5))
                    .body(ByteStream::from(bytes.clone()))
                    .send()
            })
            .await
            .map_err(|e| dst.fail(&format!("writing part {n} of `{key}`"), &e))?;
        self.log.progress(0, size);
        Ok(PartCopied {
            copy: self.job.spec.name.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            part: n,
            size,
            etag: unquote(out.e_tag().unwrap_or_default()),
            md5: hex::encode(&md5),
        })
    }

    /// Records a stored part (durable before the object goes on); its ETag.
    async fn part_done(&self, pc: PartCopied) -> Result<String, String> {
        let message = format!("`{}` part {}: {} bytes", pc.key, pc.part, pc.size);
        note(self.log, Event::PartCopied, message, &pc).await?;
        Ok(pc.etag)
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        etags: &BTreeMap<u64, String>,
        local: &AtomicU64,
    ) -> Result<String, String> {
        let dst = self.job.target;
        let parts: Vec<CompletedPart> = etags
            .iter()
            .map(|(n, e)| {
                CompletedPart::builder()
                    .part_number(*n as i32)
                    .e_tag(format!("\"{e}\""))
                    .build()
            })
            .collect();
        let out = dst
            .call(local, || {
                dst.client()
                    .complete_multipart_upload()
                    .bucket(dst.bucket_name())
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts.clone()))
                            .build(),
                    )
                    .send()
            })
            .await
            .map_err(|e| dst.fail(&format!("completing the upload of `{key}`"), &e))?;
        self.completed
            .lock()
            .expect("completed")
            .insert(upload_id.to_owned());
        Ok(unquote(out.e_tag().unwrap_or_default()))
    }

    /// A multipart object's SHA-256 is known only once its last part is read: S3 copies the
    /// object onto itself with the digest added to its metadata (server side; not above 5 GiB,
    /// where the manifest alone holds it). The object's ETag after that.
    async fn add_sha256(
        &self,
        o: &Listed,
        key: &str,
        head: &Head,
        sha256: &str,
        etag: &str,
        local: &AtomicU64,
    ) -> Result<(String, bool), String> {
        if o.size > MAX_COPY {
            return Ok((etag.to_owned(), false));
        }
        let dst = self.job.target;
        let mut meta = head.metadata.clone();
        meta.insert(META_SHA256.into(), sha256.to_owned());
        let out = dst
            .call(local, || {
                dst.client()
                    .copy_object()
                    .bucket(dst.bucket_name())
                    .key(key)
                    .copy_source(copy_source(dst.bucket_name(), key))
                    .copy_source_if_match(format!("\"{etag}\""))
                    .metadata_directive(MetadataDirective::Replace)
                    .set_metadata(Some(meta.clone()))
                    .with_head(head)
                    .send()
            })
            .await
            .map_err(|e| {
                dst.fail(
                    &format!("adding the SHA-256 to the metadata of `{key}`"),
                    &e,
                )
            })?;
        let etag = out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map_or_else(|| etag.to_owned(), unquote);
        Ok((etag, true))
    }

    /// Deletes target objects the source does not have, when the plan says so; recorded first.
    async fn delete_extra(&self, extra: &[String]) -> Result<usize, String> {
        if !self.job.spec.delete_extra || extra.is_empty() {
            return Ok(0);
        }
        let dst = self.job.target;
        let local = AtomicU64::new(0);
        for chunk in extra.chunks(1000) {
            self.log.fence()?;
            self.log
                .record(
                    Event::ObjectsDeleted,
                    format!("{} object(s) only on the target deleted", chunk.len()),
                    json!({ "copy": self.job.spec.name, "keys": chunk }),
                )
                .await?;
            for key in chunk {
                dst.call(&local, || {
                    dst.client()
                        .delete_object()
                        .bucket(dst.bucket_name())
                        .key(key)
                        .send()
                })
                .await
                .map_err(|e| dst.fail(&format!("deleting `{key}`"), &e))?;
            }
        }
        Ok(extra.len())
    }

    /// Aborts the uploads this copy began (in any run) and did not complete, then lists the
    /// target's uploads again: none of its own may be left. What was aborted, and how many
    /// uploads of others are open under the prefix (not touched) — `None` when the store does
    /// not implement ListMultipartUploads (some S3-compatible ones): each upload of its own is
    /// then aborted by id, and the step's record says the listing could not prove it.
    async fn close_uploads(&self) -> Result<(Vec<String>, Option<usize>), String> {
        let completed = self.completed.lock().expect("completed").clone();
        let mut ours: BTreeMap<String, String> = self.started.lock().expect("started").clone();
        for u in self.prior.uploads.values() {
            ours.insert(u.started.upload_id.clone(), u.started.key.clone());
        }
        ours.retain(|id, _| !completed.contains(id));
        let dst = self.job.target;
        let listed = match self.uploads().await {
            Ok(l) => Some(l),
            Err(e) if e.code == "NotImplemented" => None,
            Err(e) => return Err(dst.fail("listing open multipart uploads", &e)),
        };
        let to_abort: Vec<(String, String)> = match &listed {
            Some(l) => l
                .iter()
                .filter(|(_, id)| ours.contains_key(id))
                .cloned()
                .collect(),
            None => ours
                .iter()
                .map(|(id, key)| (key.clone(), id.clone()))
                .collect(),
        };
        let mut aborted = Vec::new();
        for (key, id) in to_abort {
            if self.abort(&key, &id).await? {
                aborted.push(id);
            }
        }
        if listed.is_none() {
            return Ok((aborted, None));
        }
        let after = self
            .uploads()
            .await
            .map_err(|e| dst.fail("listing open multipart uploads", &e))?;
        let left: Vec<&(String, String)> = after
            .iter()
            .filter(|(_, id)| ours.contains_key(id))
            .collect();
        if let Some((key, id)) = left.first() {
            return Err(format!(
                "{} upload(s) of this copy still open after aborting (`{key}`, upload {id})",
                left.len()
            ));
        }
        Ok((aborted, Some(after.len())))
    }

    /// Aborts one upload; `false` when the store no longer knows it.
    async fn abort(&self, key: &str, id: &str) -> Result<bool, String> {
        let dst = self.job.target;
        let local = AtomicU64::new(0);
        let r = dst
            .call(&local, || {
                dst.client()
                    .abort_multipart_upload()
                    .bucket(dst.bucket_name())
                    .key(key)
                    .upload_id(id)
                    .send()
            })
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.kind == AwsErrorKind::NotFound => Ok(false),
            Err(e) => Err(dst.fail(&format!("aborting the upload of `{key}`"), &e)),
        }
    }

    /// Every multipart upload open under the target prefix: (key, upload id).
    async fn uploads(&self) -> Result<Vec<(String, String)>, crate::drivers::rds::api::AwsError> {
        let dst = self.job.target;
        let local = AtomicU64::new(0);
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = dst
                .call(&local, || {
                    dst.client()
                        .list_multipart_uploads()
                        .bucket(dst.bucket_name())
                        .prefix(&dst.end.prefix)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send()
                })
                .await?;
            for u in page.uploads() {
                out.push((
                    u.key().unwrap_or_default().to_owned(),
                    u.upload_id().unwrap_or_default().to_owned(),
                ));
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if !page.is_truncated().unwrap_or(false) || key_marker.is_none() {
                return Ok(out);
            }
        }
    }
}

fn no_id() -> crate::drivers::rds::api::AwsError {
    crate::drivers::rds::api::AwsError::new(AwsErrorKind::Other, "", "the answer has no upload id")
}

/// An object's bytes as they arrive, taken a part at a time.
pub struct Body {
    stream: ByteStream,
    pending: BytesMut,
    read: u64,
}

impl Body {
    pub fn new(stream: ByteStream) -> Self {
        Self {
            stream,
            pending: BytesMut::new(),
            read: 0,
        }
    }

    /// Exactly `n` more bytes; an error if the object ends first.
    pub async fn take(&mut self, n: u64, key: &str) -> Result<Bytes, String> {
        let n = n as usize;
        while self.pending.len() < n {
            match self.stream.next().await {
                Some(Ok(chunk)) => self.pending.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(format!("reading `{key}`: {e}")),
                None => {
                    return Err(format!(
                        "`{key}` ended after {} bytes, before its listed size",
                        self.read + self.pending.len() as u64
                    ));
                }
            }
        }
        self.read += n as u64;
        Ok(self.pending.split_to(n).freeze())
    }

    /// The object had no more bytes than listed.
    pub async fn end(&mut self, o: &Listed) -> Result<(), String> {
        while self.pending.is_empty() {
            match self.stream.next().await {
                Some(Ok(chunk)) => self.pending.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(format!("reading `{}`: {e}", o.key)),
                None => return Ok(()),
            }
        }
        Err(format!(
            "`{}` is longer than its listed {} bytes",
            o.key, o.size
        ))
    }
}
