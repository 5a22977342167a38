//! A copy's verification: the target listed to the end and every object of the manifest read
//! back and hashed (SHA-256), the source listed again to find what changed there since; the
//! judgement (missing, extra, different, changed, not copied) is `migrate::bucket::judge`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use futures_util::stream::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::Side;
use crate::migrate::bucket::{BucketReport, BucketSpec, Found, Manifest, judge};

pub async fn run(
    spec: &BucketSpec,
    source: &Side,
    target: &Side,
    manifest: &Manifest,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<BucketReport, String> {
    let on_target = target.list().await?;
    let source_now = source.list().await?;
    let to_read: Vec<String> = on_target
        .iter()
        .filter(|t| manifest.objects.contains_key(&t.key))
        .map(|t| t.key.clone())
        .collect();
    let read: Vec<Option<(String, Found)>> = futures_util::stream::iter(to_read)
        .map(|key| async move {
            let found = hash(target, &key).await?;
            progress(1, found.as_ref().map_or(0, |f| f.size));
            Ok::<_, String>(found.map(|f| (key, f)))
        })
        .buffer_unordered(spec.max_parallel.max(1))
        .try_collect()
        .await?;
    let mut found: BTreeMap<String, Found> = read.into_iter().flatten().collect();
    // Objects not in the manifest are extra whatever they hold: listed, not read.
    for t in on_target
        .iter()
        .filter(|t| !manifest.objects.contains_key(&t.key))
    {
        let f = Found {
            size: t.size,
            sha256: String::new(),
        };
        found.insert(t.key.clone(), f);
    }
    Ok(judge(spec, manifest, &found, &source_now))
}

/// An object's size and SHA-256 as read back now (`None`: deleted since it was listed).
async fn hash(side: &Side, key: &str) -> Result<Option<Found>, String> {
    let local = AtomicU64::new(0);
    let got = match side
        .call(&local, || {
            side.client()
                .get_object()
                .bucket(side.bucket_name())
                .key(key)
                .send()
        })
        .await
    {
        Ok(got) => got,
        Err(e) if e.kind == crate::drivers::rds::api::AwsErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(side.fail(&format!("reading `{key}` back"), &e)),
    };
    let mut body = got.body;
    let mut sha = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("reading `{key}` back from {}: {e}", side.place))?;
        size += chunk.len() as u64;
        sha.update(&chunk);
    }
    Ok(Some(Found {
        size,
        sha256: hex::encode(sha.finalize()),
    }))
}
