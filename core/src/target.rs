//! Targets: one app on one host (a cloud or an endpoint) of one site, and what was observed there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::load::sha256_hex;
use crate::model::{App, Inventory, TargetKind};

/// Names one place an app runs. Its `id` (`site/host/app`) is stable across runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TargetRef {
    pub id: String,
    pub site: String,
    pub app: String,
    pub kind: TargetKind,
    /// Cloud id, or endpoint id for `ssh`.
    pub host: String,
}

impl TargetRef {
    pub fn new(site: &str, host: &str, app: &str, kind: TargetKind) -> Self {
        Self {
            id: format!("{site}/{host}/{app}"),
            site: site.to_owned(),
            app: app.to_owned(),
            kind,
            host: host.to_owned(),
        }
    }
}

/// The targets of `app` on `site`, resolved from a validated inventory.
pub fn resolve(inv: &Inventory, app: &App, site_id: &str) -> Vec<TargetRef> {
    let Some(site) = inv.site(site_id) else {
        return Vec::new();
    };
    if !inv.app_on_site(&app.id, site_id) {
        return Vec::new();
    }
    match app.target.cloud_kind() {
        Some(kind) => site
            .clouds
            .iter()
            .filter_map(|c| inv.cloud(c))
            .filter(|c| c.kind == kind)
            .map(|c| TargetRef::new(site_id, &c.id, &app.id, app.target))
            .collect(),
        None => site
            .endpoints
            .iter()
            .map(|e| TargetRef::new(site_id, e, &app.id, TargetKind::Ssh))
            .collect(),
    }
}

/// What a driver saw on a target. A target never deployed to is `Observed::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The release serving now, if any.
    pub current: Option<String>,
    /// Complete releases present on the target, sorted.
    pub releases: Vec<String>,
    /// Driver-specific facts (hardware, image ids...), sorted by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
    /// Changes made outside ferry that the driver can see (a managed container stopped,
    /// removed or reconfigured by hand), one sentence each. A drifted target is repaired by the
    /// next plan even when it already runs the wanted version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
}

impl Observed {
    /// SHA-256 over the canonical JSON of the observation: equal states, equal fingerprints.
    /// SHA-256 over what is deployed (current and releases), not over `facts`: free disk or
    /// memory changing between plan and apply must not make a plan stale.
    /// Drift is part of the state: a container stopped by hand between plan and apply makes
    /// the plan stale.
    pub fn fingerprint(&self) -> String {
        let json = if self.drift.is_empty() {
            serde_json::to_vec(&(&self.current, &self.releases))
        } else {
            serde_json::to_vec(&(&self.current, &self.releases, &self.drift))
        }
        .expect("observations serialize");
        sha256_hex(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_depends_on_state_only() {
        let a = Observed {
            current: Some("1.0.0".into()),
            releases: vec!["1.0.0".into()],
            facts: BTreeMap::new(),
            drift: vec![],
        };
        let b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = Observed {
            current: Some("1.1.0".into()),
            ..a.clone()
        };
        assert_ne!(a.fingerprint(), c.fingerprint());
        let d = Observed {
            facts: [("disk_free_gb".to_owned(), "3".to_owned())].into(),
            ..a.clone()
        };
        assert_eq!(
            a.fingerprint(),
            d.fingerprint(),
            "facts are not part of the fingerprint"
        );
        let e = Observed {
            drift: vec!["stopped by hand".into()],
            ..a.clone()
        };
        assert_ne!(a.fingerprint(), e.fingerprint(), "drift is");
    }
}
