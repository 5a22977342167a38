//! A channel kept in an inventory bucket (`ferry publish --bucket ID`): the publisher's folder
//! is its working copy. Before a publish, what the bucket holds and the folder lacks comes down
//! (a lost or fresh working copy continues the same signed chain instead of making a new
//! root); after it, what the folder has and the bucket does not comes up — targets first,
//! then the metadata, `timestamp.json` last, so an agent reading the bucket while it changes
//! never meets metadata naming a file not there yet. Agents read the bucket over plain
//! HTTP(S) (its own endpoint, or a CDN in front): they need no cloud SDK.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use aws_sdk_s3::primitives::ByteStream;
use md5::Digest;

use crate::migrate::bucket::BucketEnd;
use crate::model::Inventory;
use crate::s3move::{Side, unquote};

/// The bucket end for inventory bucket `id` under `prefix`.
pub fn end(inv: &Inventory, id: &str, prefix: &str) -> Result<BucketEnd, String> {
    let b = inv
        .buckets
        .iter()
        .find(|b| b.id == id)
        .ok_or_else(|| format!("--bucket {id}: no bucket `{id}` in the inventory"))?;
    let prefix = match prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    Ok(BucketEnd {
        bucket: b.id.clone(),
        cloud: b.cloud.clone(),
        name: b.name.clone(),
        prefix,
    })
}

/// Files of the folder under `metadata/` and `targets/`, as (relative key, path).
fn local_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("metadata"), dir.join("targets")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", d.display()))?;
            let path = e.path();
            let t = e
                .file_type()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if t.is_dir() {
                stack.push(path);
            } else if t.is_file() {
                let rel = path.strip_prefix(dir).expect("under dir");
                out.push((rel.to_string_lossy().into_owned(), path));
            }
        }
    }
    Ok(out)
}

/// Downloads every object of the channel the folder lacks, and the bucket's metadata when it
/// differs from the folder's (another working copy published last). Returns how many came.
pub async fn pull(side: &Side, dir: &Path) -> Result<usize, String> {
    let n = AtomicU64::new(0);
    let mut came = 0;
    for o in side.list().await? {
        let Some(rel) = o.key.strip_prefix(&side.end.prefix) else {
            continue;
        };
        if !(rel.starts_with("metadata/") || rel.starts_with("targets/")) || rel.contains("..") {
            continue;
        }
        let path = dir.join(rel);
        let same = std::fs::read(&path).is_ok_and(|b| hex::encode(md5::Md5::digest(&b)) == o.etag);
        if same {
            continue;
        }
        let got = side
            .call(&n, || {
                side.client()
                    .get_object()
                    .bucket(side.bucket_name())
                    .key(&o.key)
                    .send()
            })
            .await
            .map_err(|e| side.fail(&format!("reading `{}`", o.key), &e))?;
        let bytes = got
            .body
            .collect()
            .await
            .map_err(|e| format!("reading `{}`: {e}", o.key))?
            .into_bytes();
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        crate::durable::write_atomic(&path, &bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        came += 1;
    }
    Ok(came)
}

/// Uploads what the bucket lacks or holds otherwise: targets, then metadata, `timestamp.json`
/// last. Returns how many went up.
pub async fn push(side: &Side, dir: &Path) -> Result<usize, String> {
    let remote: HashMap<String, String> = side
        .list()
        .await?
        .into_iter()
        .map(|o| (o.key, o.etag))
        .collect();
    let mut files = local_files(dir)?;
    // Targets, then metadata, timestamp last.
    files.sort_by_key(|(rel, _)| {
        (
            match rel.as_str() {
                r if r.starts_with("targets/") => 0,
                "metadata/timestamp.json" => 2,
                _ => 1,
            },
            rel.clone(),
        )
    });
    let n = AtomicU64::new(0);
    let mut went = 0;
    for (rel, path) in files {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let md5 = md5::Md5::digest(&bytes);
        let key = format!("{}{rel}", side.end.prefix);
        if remote.get(&key).map(|e| unquote(e)) == Some(hex::encode(md5)) {
            continue;
        }
        let content_type = if rel.ends_with(".json") {
            "application/json"
        } else {
            "application/octet-stream"
        };
        side.call(&n, || {
            side.client()
                .put_object()
                .bucket(side.bucket_name())
                .key(&key)
                .body(ByteStream::from(bytes.clone()))
                .content_length(bytes.len() as i64)
                .content_md5(aws_smithy_types::base64::encode(md5))
                .content_type(content_type)
                // Agents must see each new version of the metadata at once.
                .cache_control(if rel.starts_with("metadata/") {
                    "no-cache"
                } else {
                    "max-age=86400"
                })
                .send()
        })
        .await
        .map_err(|e| side.fail(&format!("writing `{key}`"), &e))?;
        went += 1;
    }
    Ok(went)
}
