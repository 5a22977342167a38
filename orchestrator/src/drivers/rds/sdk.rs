//! [`RdsApi`] over `aws-sdk-rds`. The SDK's own retries are off: ferry retries throttling and
//! 5xx itself (see `super::retrying`), so every attempt can be reported and bounded.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::provider::{
    self, ProvideCredentials, SharedCredentialsProvider, error::CredentialsError,
};
use aws_sdk_rds::Client;
use aws_sdk_rds::config::retry::RetryConfig;
use aws_sdk_rds::config::timeout::TimeoutConfig;
use aws_sdk_rds::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rds::types::{DbInstance, DbSnapshot, Tag};

use super::api::{AwsError, AwsErrorKind, InstanceInfo, InstanceSettings, RdsApi, SnapshotInfo};
use crate::model::AwsCloud;
use crate::secret::SecretRef;

pub struct SdkRds {
    client: Client,
}

impl SdkRds {
    /// A client for one AWS cloud of the inventory. Credentials are resolved now; a missing
    /// one is an error naming the cloud and the reference, never the value.
    pub fn new(cloud_id: &str, aws: &AwsCloud, base: &Path) -> Result<Self, AwsError> {
        crate::install_crypto_provider();
        let mut conf = aws_sdk_rds::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(aws.region.clone()))
            .credentials_provider(credentials(cloud_id, aws, base)?)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts(aws));
        if let Some(url) = &aws.endpoint_url {
            conf = conf.endpoint_url(url);
        }
        Ok(Self {
            client: Client::from_conf(conf.build()),
        })
    }
}

/// The credentials of an AWS cloud: its own keys (secret references, resolved now; a missing
/// one is an error naming the cloud and the reference, never the value), or else AWS's default
/// chain, built on first use and refreshed by the SDK before what it provides expires.
pub fn credentials(
    cloud_id: &str,
    aws: &AwsCloud,
    base: &Path,
) -> Result<SharedCredentialsProvider, AwsError> {
    let (Some(key_ref), Some(secret_ref)) = (&aws.access_key_id, &aws.secret_access_key) else {
        return Ok(SharedCredentialsProvider::new(DefaultChain {
            cloud: cloud_id.to_owned(),
            region: aws.region.clone(),
            profile: aws.profile.clone(),
            chain: tokio::sync::OnceCell::new(),
        }));
    };
    let secret = |label: &str, reference: &str| {
        SecretRef::parse(reference)
            .and_then(|r| r.resolve(&format!("clouds.{cloud_id}.aws.{label}"), base))
            .map_err(|e| {
                AwsError::new(
                    AwsErrorKind::Credentials,
                    "",
                    format!("AWS credentials for cloud `{cloud_id}` are missing: {e}"),
                )
            })
    };
    let key = secret("access_key_id", key_ref)?;
    let secret_key = secret("secret_access_key", secret_ref)?;
    let token = match &aws.session_token {
        Some(t) => Some(secret("session_token", t)?),
        None => None,
    };
    Ok(SharedCredentialsProvider::new(Credentials::new(
        key.expose(),
        secret_key.expose(),
        token.map(|t| t.expose().to_owned()),
        None,
        "ferry-inventory",
    )))
}

/// Where the default chain's failure is said: the SDK carries it inside its own error.
const NO_CREDENTIALS: &str = "no AWS credentials for cloud";

/// AWS's default credential chain for one cloud (environment, shared config and credentials
/// files with SSO, web identity, container and instance roles), built on first use: building
/// it reads the shared config files, asynchronously.
#[derive(Debug)]
struct DefaultChain {
    cloud: String,
    region: String,
    profile: Option<String>,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
}

impl ProvideCredentials for DefaultChain {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| async {
                    let mut b =
                        DefaultCredentialsChain::builder().region(Region::new(self.region.clone()));
                    if let Some(p) = &self.profile {
                        b = b.profile_name(p);
                    }
                    b.build().await
                })
                .await;
            chain.provide_credentials().await.map_err(|e| {
                let profile = self
                    .profile
                    .as_deref()
                    .map(|p| format!(", profile `{p}`"))
                    .unwrap_or_default();
                CredentialsError::not_loaded(format!(
                    "{NO_CREDENTIALS} `{}`: the default chain (environment, shared config{profile}, web identity, container or instance role) found none ({}); or name keys in the inventory (`access_key_id`, `secret_access_key`)",
                    self.cloud,
                    aws_sdk_rds::error::DisplayErrorContext(&e)
                ))
            })
        })
    }
}

/// One call's deadlines from the cloud's `timeout_seconds` (connecting: at most 10 s).
pub fn timeouts(aws: &AwsCloud) -> TimeoutConfig {
    let timeout = Duration::from_secs(aws.timeout_seconds.max(1));
    TimeoutConfig::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .operation_attempt_timeout(timeout)
        .operation_timeout(timeout)
        .build()
}

/// An SDK error as ferry classifies it (any AWS SDK: the error types are smithy's).
pub fn error<E, R>(e: SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    let status = e.raw_response().map(HttpStatus::status);
    let context = aws_sdk_rds::error::DisplayErrorContext(&e).to_string();
    if let Some(at) = context.find(NO_CREDENTIALS) {
        let said = &context[at..];
        let said = said.split(": CredentialsNotLoaded").next().unwrap_or(said);
        return AwsError::new(AwsErrorKind::Credentials, "", said.trim_end());
    }
    match &e {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let code = e.code().unwrap_or_default().to_owned();
            let message = e
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| aws_sdk_rds::error::DisplayErrorContext(&e).to_string());
            AwsError::new(AwsError::classify(&code, status), &code, message)
        }
        SdkError::TimeoutError(_) => AwsError::new(
            AwsErrorKind::Unreachable,
            "",
            "no answer from the AWS endpoint in time",
        ),
        SdkError::DispatchFailure(_) => AwsError::new(
            AwsErrorKind::Unreachable,
            "",
            format!(
                "cannot reach the AWS endpoint: {}",
                aws_sdk_rds::error::DisplayErrorContext(&e)
            ),
        ),
        _ => AwsError::new(
            AwsErrorKind::Other,
            "",
            aws_sdk_rds::error::DisplayErrorContext(&e).to_string(),
        ),
    }
}

/// The HTTP status of a raw response, for classifying errors without their code.
pub trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn tags(t: &BTreeMap<String, String>) -> Vec<Tag> {
    t.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_map(list: &[Tag]) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn instance(d: &DbInstance) -> InstanceInfo {
    InstanceInfo {
        identifier: d.db_instance_identifier().unwrap_or_default().to_owned(),
        status: d.db_instance_status().unwrap_or_default().to_owned(),
        engine: d.engine().unwrap_or_default().to_owned(),
        engine_version: d.engine_version().unwrap_or_default().to_owned(),
        endpoint: d.endpoint().and_then(|e| {
            Some((
                e.address()?.to_owned(),
                u16::try_from(e.port().unwrap_or(0)).unwrap_or(0),
            ))
        }),
        tags: tag_map(d.tag_list()),
        pending_identifier: d
            .pending_modified_values()
            .and_then(|p| p.db_instance_identifier())
            .map(str::to_owned),
        settings: InstanceSettings {
            subnet_group: d
                .db_subnet_group()
                .and_then(|g| g.db_subnet_group_name())
                .map(str::to_owned),
            security_groups: d
                .vpc_security_groups()
                .iter()
                .filter_map(|g| g.vpc_security_group_id().map(str::to_owned))
                .collect(),
            parameter_group: d
                .db_parameter_groups()
                .first()
                .and_then(|g| g.db_parameter_group_name())
                .map(str::to_owned),
            option_group: d
                .option_group_memberships()
                .first()
                .and_then(|g| g.option_group_name())
                .map(str::to_owned),
            multi_az: d.multi_az().unwrap_or(false),
            deletion_protection: d.deletion_protection().unwrap_or(false),
            copy_tags_to_snapshot: d.copy_tags_to_snapshot().unwrap_or(false),
            storage_type: d.storage_type().map(str::to_owned),
            tags: BTreeMap::new(),
        },
    }
}

fn snapshot(s: &DbSnapshot) -> SnapshotInfo {
    SnapshotInfo {
        id: s.db_snapshot_identifier().unwrap_or_default().to_owned(),
        instance: s.db_instance_identifier().unwrap_or_default().to_owned(),
        status: s.status().unwrap_or_default().to_owned(),
        created: s
            .snapshot_create_time()
            .and_then(|t| {
                chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            })
            .unwrap_or_default(),
        kind: s.snapshot_type().unwrap_or_default().to_owned(),
        engine_version: s.engine_version().unwrap_or_default().to_owned(),
    }
}

fn not_found(e: &AwsError) -> bool {
    e.kind == AwsErrorKind::NotFound
}

#[async_trait]
impl RdsApi for SdkRds {
    async fn instance(&self, id: &str) -> Result<Option<InstanceInfo>, AwsError> {
        match self
            .client
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(error)
        {
            Ok(out) => Ok(out.db_instances().first().map(instance)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn snapshot(
        &self,
        id: &str,
        kind: Option<&str>,
    ) -> Result<Option<SnapshotInfo>, AwsError> {
        match self
            .client
            .describe_db_snapshots()
            .db_snapshot_identifier(id)
            .set_snapshot_type(typed(kind))
            .send()
            .await
            .map_err(error)
        {
            Ok(out) => Ok(out.db_snapshots().first().map(snapshot)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn snapshots(
        &self,
        instance_id: &str,
        kind: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>, AwsError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_db_snapshots()
                .db_instance_identifier(instance_id)
                .set_snapshot_type(kind.map(str::to_owned))
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(error)?;
            out.extend(page.db_snapshots().iter().map(snapshot));
            match page.marker() {
                Some(m) if !m.is_empty() && Some(m) != marker.as_deref() => {
                    marker = Some(m.to_owned());
                }
                _ => return Ok(out),
            }
        }
    }

    async fn snapshot_tags(
        &self,
        id: &str,
        kind: Option<&str>,
    ) -> Result<BTreeMap<String, String>, AwsError> {
        let out = self
            .client
            .describe_db_snapshots()
            .db_snapshot_identifier(id)
            .set_snapshot_type(typed(kind))
            .send()
            .await
            .map_err(error)?;
        Ok(out
            .db_snapshots()
            .first()
            .map(|s| tag_map(s.tag_list()))
            .unwrap_or_default())
    }

    async fn delete_snapshot(&self, id: &str) -> Result<(), AwsError> {
        self.client
            .delete_db_snapshot()
            .db_snapshot_identifier(id)
            .send()
            .await
            .map(|_| ())
            .map_err(error)
    }

    async fn create_snapshot(
        &self,
        instance_id: &str,
        id: &str,
        t: &BTreeMap<String, String>,
    ) -> Result<SnapshotInfo, AwsError> {
        let out = self
            .client
            .create_db_snapshot()
            .db_instance_identifier(instance_id)
            .db_snapshot_identifier(id)
            .set_tags(Some(tags(t)))
            .send()
            .await
            .map_err(error)?;
        out.db_snapshot().map(snapshot).ok_or_else(|| {
            AwsError::new(
                AwsErrorKind::Other,
                "",
                "CreateDBSnapshot returned no snapshot",
            )
        })
    }

    async fn restore(
        &self,
        snapshot_id: &str,
        new_id: &str,
        instance_class: Option<&str>,
        s: &InstanceSettings,
    ) -> Result<InstanceInfo, AwsError> {
        let groups = (!s.security_groups.is_empty()).then(|| s.security_groups.clone());
        let out = self
            .client
            .restore_db_instance_from_db_snapshot()
            .db_snapshot_identifier(snapshot_id)
            .db_instance_identifier(new_id)
            .set_db_instance_class(instance_class.map(str::to_owned))
            .set_db_subnet_group_name(s.subnet_group.clone())
            .set_vpc_security_group_ids(groups)
            .set_db_parameter_group_name(s.parameter_group.clone())
            .set_option_group_name(s.option_group.clone())
            .multi_az(s.multi_az)
            .deletion_protection(s.deletion_protection)
            .copy_tags_to_snapshot(s.copy_tags_to_snapshot)
            .set_storage_type(s.storage_type.clone())
            .set_tags(Some(tags(&s.tags)))
            .send()
            .await
            .map_err(error)?;
        out.db_instance().map(instance).ok_or_else(|| {
            AwsError::new(
                AwsErrorKind::Other,
                "",
                "RestoreDBInstanceFromDBSnapshot returned no instance",
            )
        })
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), AwsError> {
        self.client
            .modify_db_instance()
            .db_instance_identifier(from)
            .new_db_instance_identifier(to)
            .apply_immediately(true)
            .send()
            .await
            .map_err(error)?;
        Ok(())
    }

    async fn delete(&self, id: &str, final_snapshot: &str) -> Result<(), AwsError> {
        self.client
            .delete_db_instance()
            .db_instance_identifier(id)
            .skip_final_snapshot(false)
            .final_db_snapshot_identifier(final_snapshot)
            // AWS deletes an instance's automated backups with it unless told otherwise; kept,
            // so point-in-time recovery of the retired instance stays possible.
            .delete_automated_backups(false)
            .send()
            .await
            .map_err(error)?;
        Ok(())
    }
}

/// The SnapshotType to describe one snapshot by: none for a manual one (AWS's default lists
/// manual and automated, but an automated one named by id needs its type).
fn typed(kind: Option<&str>) -> Option<String> {
    kind.filter(|k| *k != "manual").map(str::to_owned)
}
