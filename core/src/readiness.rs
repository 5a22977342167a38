//! Site readiness: observed hardware facts of each endpoint against the inventory's
//! requirements. Pure. An endpoint that falls short blocks a plan unless the plan waives it.
//!
//! Requirements are nominal sizes; an observed total within 10% below counts as met, because
//! kernels reserve memory and file systems reserve space (a "4 GB" server reports ~3.8 GiB).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Hardware, ReleasePlan};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub fact: String,
    pub required: String,
    pub observed: String,
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub endpoint: String,
    pub site: String,
    pub checks: Vec<Check>,
    pub ready: bool,
    /// The plan's reason for going ahead although the endpoint falls short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waived: Option<String>,
}

impl Readiness {
    pub fn blocks(&self) -> bool {
        !self.ready && self.waived.is_none()
    }
}

fn at_least(observed: Option<u64>, required: u64) -> bool {
    observed.is_some_and(|o| o.saturating_mul(10) >= required.saturating_mul(9))
}

/// Checks one endpoint's facts against its requirements.
pub fn assess(
    endpoint: &str,
    site: &str,
    hw: &Hardware,
    facts: &BTreeMap<String, String>,
    plan: &ReleasePlan,
) -> Readiness {
    let num = |k: &str| facts.get(k).and_then(|v| v.parse::<u64>().ok());
    let show = |k: &str| facts.get(k).cloned().unwrap_or_else(|| "unknown".into());
    let os = show("os");
    let checks = vec![
        Check {
            fact: "cpus".into(),
            required: hw.cpus.to_string(),
            observed: show("cpus"),
            ok: num("cpus").is_some_and(|c| c >= u64::from(hw.cpus)),
        },
        Check {
            fact: "memory_mb".into(),
            required: hw.memory_mb.to_string(),
            observed: show("memory_mb"),
            ok: at_least(num("memory_mb"), hw.memory_mb),
        },
        Check {
            fact: "disk_gb".into(),
            required: hw.disk_gb.to_string(),
            observed: show("disk_gb"),
            ok: at_least(num("disk_gb"), hw.disk_gb),
        },
        Check {
            fact: "os".into(),
            required: hw.os.clone(),
            observed: os.clone(),
            ok: os.to_lowercase().starts_with(&hw.os.to_lowercase()),
        },
    ];
    let ready = checks.iter().all(|c| c.ok);
    let waived = plan
        .waivers
        .iter()
        .find(|w| w.endpoint == endpoint)
        .map(|w| w.reason.clone());
    Readiness {
        endpoint: endpoint.to_owned(),
        site: site.to_owned(),
        checks,
        ready,
        waived,
    }
}

/// The table `ferry plan` prints.
pub fn render(rows: &[Readiness]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("\nSite readiness (required / observed):\n");
    for r in rows {
        let status = match (r.ready, &r.waived) {
            (true, _) => "ready".to_owned(),
            (false, Some(w)) => format!("NOT READY, waived: {w}"),
            (false, None) => "NOT READY".to_owned(),
        };
        let cells: Vec<String> = r
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{} {}/{}{}",
                    c.fact,
                    c.required,
                    c.observed,
                    if c.ok { "" } else { " !" }
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "  {:<20} {:<12} {}  -> {status}",
            r.endpoint,
            r.site,
            cells.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OnFailure, PlanKind, Waiver};

    fn plan(waivers: Vec<Waiver>) -> ReleasePlan {
        ReleasePlan {
            version: 1,
            kind: PlanKind::Release,
            name: "p".into(),
            description: None,
            releases: vec![],
            waves: vec![],
            on_failure: OnFailure::Halt,
            waivers,
            gates: vec![],
            snapshots: vec![],
            retire: vec![],
        }
    }

    fn facts(cpus: &str, mem: &str, disk: &str, os: &str) -> BTreeMap<String, String> {
        [
            ("cpus", cpus),
            ("memory_mb", mem),
            ("disk_gb", disk),
            ("os", os),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    const SCOOP: Hardware = Hardware {
        cpus: 2,
        memory_mb: 4096,
        disk_gb: 100,
        os: String::new(),
    };

    #[test]
    fn scoop_minimums_with_nominal_tolerance() {
        let hw = Hardware {
            os: "ubuntu".into(),
            ..SCOOP
        };
        let r = assess(
            "ep",
            "s",
            &hw,
            &facts("2", "3900", "93", "ubuntu 12.04"),
            &plan(vec![]),
        );
        assert!(r.ready, "{r:?}");
        let r = assess(
            "ep",
            "s",
            &hw,
            &facts("1", "2048", "40", "debian 12"),
            &plan(vec![]),
        );
        assert!(!r.ready);
        assert!(r.blocks());
        assert_eq!(r.checks.iter().filter(|c| !c.ok).count(), 4);
    }

    #[test]
    fn missing_facts_are_not_assumed_good() {
        let r = assess("ep", "s", &SCOOP, &BTreeMap::new(), &plan(vec![]));
        assert!(!r.ready);
    }

    #[test]
    fn a_waiver_lets_a_short_endpoint_through_with_its_reason() {
        let w = Waiver {
            endpoint: "ep".into(),
            reason: "pilot clinic, replacement server ordered".into(),
        };
        let r = assess(
            "ep",
            "s",
            &SCOOP,
            &facts("1", "4096", "100", ""),
            &plan(vec![w]),
        );
        assert!(!r.ready);
        assert!(!r.blocks());
        assert!(render(&[r]).contains("NOT READY, waived: pilot clinic"));
    }
}
