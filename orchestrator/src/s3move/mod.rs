//! Bucket copies between clouds' object storage (aws-sdk-s3): each side a client of its own
//! cloud (endpoint, account, credentials), every call retried with jittered backoff while S3
//! throttles (503 SlowDown) or fails with a 5xx, listings paginated to the end (a listing that
//! fails stops the step: it is never taken as "empty"). `copy` streams objects through ferry,
//! hashing them; `verify` reads them back. What is decided or judged is
//! `ferry_core::migrate::bucket`.

pub mod copy;
pub mod verify;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::drivers::rds::api::{AwsError, AwsErrorKind};
use crate::drivers::rds::sdk::{HttpStatus, credentials, error, timeouts};
use crate::migrate::bucket::{BucketEnd, Listed};
use crate::model::Inventory;

/// One side of a copy: a client of its cloud, the bucket and prefix.
pub struct Side {
    client: Client,
    pub end: BucketEnd,
    /// `s3://bucket/prefix (cloud `c`, endpoint)`, for messages.
    pub place: String,
    attempts: u32,
    backoff: Duration,
    /// Calls retried after throttling, a 5xx or no answer.
    pub retries: AtomicU64,
}

impl Side {
    /// A client for one side; credentials resolved now (a missing one is named, never shown).
    pub fn connect(inv: &Inventory, base: &Path, end: &BucketEnd) -> Result<Side, String> {
        crate::install_crypto_provider();
        let aws = inv
            .cloud(&end.cloud)
            .and_then(|c| c.aws.as_ref())
            .ok_or_else(|| format!("cloud `{}` has no `aws` section", end.cloud))?;
        let creds = credentials(&end.cloud, aws, base).map_err(|e| e.message)?;
        let mut conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(aws.region.clone()))
            .credentials_provider(creds)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts(aws))
            // Integrity is ferry's own Content-MD5 on every upload and SHA-256 of every object.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if let Some(url) = &aws.endpoint_url {
            conf = conf.endpoint_url(url).force_path_style(true);
        }
        let endpoint = aws
            .endpoint_url
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", aws.region));
        let backoff = std::env::var("FERRY_S3_BACKOFF_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_millis(200), Duration::from_millis);
        Ok(Side {
            client: Client::from_conf(conf.build()),
            place: format!(
                "s3://{}/{} (cloud `{}`, {endpoint})",
                end.name, end.prefix, end.cloud
            ),
            end: end.clone(),
            attempts: aws.max_attempts.max(1),
            backoff,
            retries: AtomicU64::new(0),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket's name in its cloud.
    pub fn bucket_name(&self) -> &str {
        &self.end.name
    }

    /// One S3 call, retried with jittered backoff while it is throttled, fails with a 5xx or
    /// gets no answer; `local` counts the retries too (an object's own).
    pub async fn call<T, E, R, F, Fut>(&self, local: &AtomicU64, mut f: F) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let mut attempt = 1;
        loop {
            match f().await.map_err(error) {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && attempt < self.attempts => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    local.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(crate::drivers::backoff_delay(self.backoff, attempt)).await;
                    attempt += 1;
                }
                Err(mut e) => {
                    if e.retryable() {
                        e.message = format!("{} (after {attempt} attempt(s))", e.message);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// A message naming the side and the call.
    pub fn fail(&self, what: &str, e: &AwsError) -> String {
        format!("{what} on {}: {e}", self.place)
    }

    /// Every object under the prefix, page after page; any failure is an error, never a short
    /// listing.
    pub async fn list(&self) -> Result<Vec<Listed>, String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let local = AtomicU64::new(0);
        loop {
            let page = self
                .call(&local, || {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.end.name)
                        .prefix(&self.end.prefix)
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await
                .map_err(|e| {
                    self.fail(
                        &format!(
                            "listing (after {} object(s); nothing taken as empty)",
                            out.len()
                        ),
                        &e,
                    )
                })?;
            for o in page.contents() {
                let key = o.key().unwrap_or_default().to_owned();
                out.push(Listed {
                    key,
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: unquote(o.e_tag().unwrap_or_default()),
                });
            }
            token = page.next_continuation_token().map(str::to_owned);
            if !page.is_truncated().unwrap_or(false) || token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The bucket answers and may be listed with these credentials (plan time).
    pub async fn check(&self) -> Result<(), String> {
        let local = AtomicU64::new(0);
        self.call(&local, || {
            self.client
                .list_objects_v2()
                .bucket(&self.end.name)
                .prefix(&self.end.prefix)
                .max_keys(1)
                .send()
        })
        .await
        .map(|_| ())
        .map_err(|e| match e.kind {
            AwsErrorKind::NotFound => format!(
                "bucket `{}` does not exist on {}",
                self.end.name, self.place
            ),
            _ => self.fail("listing", &e),
        })
    }
}

/// An ETag without its quotes.
pub fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// `bucket/key` for CopySource, the key percent-encoded (all but unreserved characters and `/`).
pub fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = format!("{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_copy_source_encodes_every_reserved_byte_of_the_key() {
        assert_eq!(
            super::copy_source("b", "a dir/é+x?.pdf"),
            "b/a%20dir/%C3%A9%2Bx%3F.pdf"
        );
    }
}
