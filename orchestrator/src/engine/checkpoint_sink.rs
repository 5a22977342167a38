//! Where signed checkpoints are kept outside the ledger: a file (one per line, appended) or an
//! S3 prefix (`s3://BUCKET/PREFIX/`, one object per checkpoint, never overwritten: with S3
//! Object Lock on the bucket nobody who keeps the ledger can rewrite them). S3 is reached with
//! AWS's default credential chain and configuration (`AWS_PROFILE`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, roles); a custom endpoint is addressed path-style.

use std::path::Path;

use super::Error;
use crate::ledger::checkpoint::SignedCheckpoint;

/// `s3://BUCKET/PREFIX`: the bucket and the key prefix (ending in `/` unless empty).
pub fn s3_place(path: &Path) -> Option<(String, String)> {
    let rest = path.to_str()?.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = match prefix.trim_end_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    (!bucket.is_empty()).then(|| (bucket.to_owned(), prefix))
}

/// Keeps `c` at `path`; where it went.
pub fn keep(path: &Path, c: &SignedCheckpoint) -> Result<String, Error> {
    let line = serde_json::to_string(c).expect("checkpoints serialize");
    match s3_place(path) {
        Some((bucket, prefix)) => s3::put(&bucket, &prefix, c, line),
        None => super::audit::append_line(path, &line).map(|()| path.display().to_string()),
    }
}

/// Every checkpoint kept at `path`, with where each came from (file:line or the object key).
pub fn read_all(path: &Path) -> Result<Vec<(String, SignedCheckpoint)>, Error> {
    match s3_place(path) {
        Some((bucket, prefix)) => s3::read(&bucket, &prefix),
        None => read_file(path),
    }
}

fn read_file(path: &Path) -> Result<Vec<(String, SignedCheckpoint)>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Refused(format!("cannot read {}: {e}", path.display())))?;
    let mut list = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = format!("{}:{}", path.display(), n + 1);
        let c = serde_json::from_str(line)
            .map_err(|e| Error::Refused(format!("{at}: not a signed checkpoint: {e}")))?;
        list.push((at, c));
    }
    Ok(list)
}

#[cfg(feature = "aws")]
mod s3 {
    use super::{Error, SignedCheckpoint};

    async fn client() -> aws_sdk_s3::Client {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let custom = conf.endpoint_url().is_some();
        let b = aws_sdk_s3::config::Builder::from(&conf).force_path_style(custom);
        aws_sdk_s3::Client::from_conf(b.build())
    }

    fn failed(what: String) -> impl Fn(String) -> Error {
        move |e| Error::Refused(format!("{what}: {e}"))
    }

    /// One object per checkpoint, `PREFIX` + seq (20 digits, so keys sort by seq) + the
    /// signature's start; created only if absent (`If-None-Match: *`).
    pub fn put(
        bucket: &str,
        prefix: &str,
        c: &SignedCheckpoint,
        line: String,
    ) -> Result<String, Error> {
        let sig = &crate::load::sha256_hex(c.signature.as_bytes())[..16];
        let key = format!("{prefix}{:020}-{sig}.json", c.payload.seq);
        let (b, k) = (bucket.to_owned(), key.clone());
        crate::blocking::block(async move {
            client()
                .await
                .put_object()
                .bucket(&b)
                .key(&k)
                .if_none_match("*")
                .content_type("application/json")
                .body(line.into_bytes().into())
                .send()
                .await
                .map_err(|e| crate::probe::chain(&e))
        })
        .map_err(failed(format!(
            "cannot keep the checkpoint at s3://{bucket}/{key}"
        )))?;
        Ok(format!("s3://{bucket}/{key}"))
    }

    /// Every object under the prefix, each a checkpoint (listing paginated to its end).
    pub fn read(bucket: &str, prefix: &str) -> Result<Vec<(String, SignedCheckpoint)>, Error> {
        let (b, p) = (bucket.to_owned(), prefix.to_owned());
        let objects = crate::blocking::block(async move {
            let s3 = client().await;
            let mut pages = s3
                .list_objects_v2()
                .bucket(&b)
                .prefix(&p)
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| crate::probe::chain(&e))?;
                for key in page.contents().iter().filter_map(|o| o.key()) {
                    let body = s3
                        .get_object()
                        .bucket(&b)
                        .key(key)
                        .send()
                        .await
                        .map_err(|e| format!("{key}: {}", crate::probe::chain(&e)))?
                        .body
                        .collect()
                        .await
                        .map_err(|e| format!("{key}: {e}"))?;
                    out.push((key.to_owned(), body.into_bytes().to_vec()));
                }
            }
            Ok::<_, String>(out)
        })
        .map_err(failed(format!(
            "cannot read the checkpoints at s3://{bucket}/{prefix}"
        )))?;
        objects
            .into_iter()
            .map(|(key, bytes)| {
                let at = format!("s3://{bucket}/{key}");
                serde_json::from_slice(&bytes)
                    .map(|c| (at.clone(), c))
                    .map_err(|e| Error::Refused(format!("{at}: not a signed checkpoint: {e}")))
            })
            .collect()
    }
}

#[cfg(not(feature = "aws"))]
mod s3 {
    use super::{Error, SignedCheckpoint};

    fn missing() -> Error {
        Error::Refused("checkpoints in S3 need a ferry built with the `aws` feature".into())
    }

    pub fn put(_: &str, _: &str, _: &SignedCheckpoint, _: String) -> Result<String, Error> {
        Err(missing())
    }

    pub fn read(_: &str, _: &str) -> Result<Vec<(String, SignedCheckpoint)>, Error> {
        Err(missing())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_place_is_a_bucket_and_a_prefix() {
        let p = |s: &str| s3_place(Path::new(s));
        assert_eq!(
            p("s3://audit/ferry/ckpt"),
            Some(("audit".into(), "ferry/ckpt/".into()))
        );
        assert_eq!(
            p("s3://audit/ferry/"),
            Some(("audit".into(), "ferry/".into()))
        );
        assert_eq!(p("s3://audit"), Some(("audit".into(), String::new())));
        assert_eq!(p("s3:///x"), None);
        assert_eq!(p("/var/ferry/ck.jsonl"), None);
    }
}
