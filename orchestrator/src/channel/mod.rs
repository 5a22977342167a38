//! Channels for pull-mode agents (issue 24, first part): the desired state of each site,
//! published as a TUF repository (The Update Framework, through the `tough` crate) that an
//! agent on a server nobody logs in to reads and verifies before it acts.
//!
//! - `metadata/`: `root.json` (the keys trusted for each role; agents are installed with a copy
//!   and never take a new root but through TUF's own signed chain), and `targets.json`,
//!   `snapshot.json`, `timestamp.json`, signed, each with a version that only grows and an
//!   expiry. TUF's client rules give the agent what the issue asks: older metadata than it has
//!   seen is refused (a replayed old pin; a downgrade is *newer* metadata naming an older
//!   version), expired metadata is refused and changes nothing (a frozen channel).
//! - `targets/sites/SITE.json`: a site's desired apps ([`Desired`]); `targets/artifacts/APP/
//!   VERSION.tar.gz`: each artifact. Both are TUF targets: their length and SHA-256 are in the
//!   signed `targets.json`, and the agent's reads are checked against them as they stream.

pub mod read;
#[cfg(feature = "aws")]
pub mod s3;
pub mod write;

use serde::{Deserialize, Serialize};

/// The format of a site's desired-state document.
pub const DESIRED_FORMAT: &str = "ferry.desired.v1";

/// What a site should run, as published (`targets/sites/SITE.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    pub format: String,
    pub site: String,
    pub apps: Vec<DesiredApp>,
    /// The agent's own binary (`ferry publish --agent-binary`): agents with `self_update`
    /// install it after a trial pass of it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<DesiredAgent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredAgent {
    /// Its target name in the channel (`agent/ferry-SHA256`: content-addressed, immutable).
    pub target: String,
    pub sha256: String,
    pub size: u64,
}

/// The target name of an agent binary.
pub fn agent_target(sha256: &str) -> String {
    format!("agent/ferry-{sha256}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredApp {
    pub app: String,
    pub version: String,
    /// The artifact's target name in the channel (`artifacts/APP/VERSION.tar.gz`).
    pub artifact: String,
    pub sha256: String,
    pub size: u64,
    /// The app's health check, as the inventory gives it (the agent checks with it after the
    /// switch, and backs out when it fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<serde_json::Value>,
    /// Install even while the app says it is busy (`ferry publish --force`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// The app's configuration files, rendered by the publisher for this site and version
    /// (signed with the rest of the document; the agent renders nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<DesiredFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredFile {
    /// Where it goes inside the release directory.
    pub dest: String,
    pub contents: String,
}

/// The target name of a site's document.
pub fn site_target(site: &str) -> String {
    format!("sites/{site}.json")
}

/// The target name of an app's artifact at a version.
pub fn artifact_target(app: &str, version: &str) -> String {
    format!("artifacts/{app}/{version}.tar.gz")
}

/// The channel's signing key as TUF's signer: the seed of a `ferry keygen` Ed25519 key.
#[derive(Debug)]
pub(crate) struct ChannelKey(pub [u8; 32]);

#[async_trait::async_trait]
impl tough::key_source::KeySource for ChannelKey {
    async fn as_sign(
        &self,
    ) -> Result<Box<dyn tough::sign::Sign>, Box<dyn std::error::Error + Send + Sync + 'static>>
    {
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&self.0)
            .map_err(|e| format!("channel key: {e}"))?;
        Ok(Box::new(pair))
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("ferry does not write channel keys through TUF".into())
    }
}
