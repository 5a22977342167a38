//! An in-memory driver for executor tests: targets are map entries, failures are injected.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{Driver, DriverError, ReleaseBundle, TargetSpec};
use crate::plan::Undo;
use crate::target::Observed;

#[derive(Debug, Default)]
pub struct FakeDriver {
    state: Mutex<BTreeMap<String, Observed>>,
    /// (target id, version) pairs whose health check fails.
    unhealthy: Mutex<BTreeSet<(String, String)>>,
    /// Targets that cannot be reached at all.
    unreachable: Mutex<BTreeSet<String>>,
    /// Every call, as `verb target [version]`, in order.
    calls: Mutex<Vec<String>>,
    delay: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl FakeDriver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Each verb sleeps this long, so concurrency and cancellation can be observed.
    pub fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    pub fn set(&self, target: &str, observed: Observed) {
        self.state
            .lock()
            .unwrap()
            .insert(target.to_owned(), observed);
    }

    pub fn get(&self, target: &str) -> Observed {
        self.state
            .lock()
            .unwrap()
            .get(target)
            .cloned()
            .unwrap_or_default()
    }

    pub fn fail_health(&self, target: &str, version: &str) {
        self.unhealthy
            .lock()
            .unwrap()
            .insert((target.to_owned(), version.to_owned()));
    }

    pub fn make_unreachable(&self, target: &str) {
        self.unreachable.lock().unwrap().insert(target.to_owned());
    }

    /// The most `apply` calls that were ever in progress at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    async fn enter(&self, spec: &TargetSpec, call: String) -> Result<(), DriverError> {
        self.calls.lock().unwrap().push(call);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.unreachable.lock().unwrap().contains(&spec.target.id) {
            return Err(DriverError::Failed {
                target: spec.target.id.clone(),
                action: "connect",
                message: "unreachable".into(),
            });
        }
        Ok(())
    }

    fn switch(&self, spec: &TargetSpec, version: &str) -> Result<(), DriverError> {
        let mut state = self.state.lock().unwrap();
        let o = state.entry(spec.target.id.clone()).or_default();
        if !o.releases.iter().any(|r| r == version) {
            return Err(DriverError::MissingRelease {
                target: spec.target.id.clone(),
                version: version.to_owned(),
            });
        }
        o.current = Some(version.to_owned());
        Ok(())
    }
}

#[async_trait]
impl Driver for FakeDriver {
    async fn observe(&self, spec: &TargetSpec) -> Result<Observed, DriverError> {
        self.enter(spec, format!("observe {}", spec.target.id))
            .await?;
        Ok(self.get(&spec.target.id))
    }

    async fn apply(&self, spec: &TargetSpec, release: &ReleaseBundle) -> Result<(), DriverError> {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        let entered = self
            .enter(
                spec,
                format!("apply {} {}", spec.target.id, release.version),
            )
            .await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        entered?;
        {
            let mut state = self.state.lock().unwrap();
            let o = state.entry(spec.target.id.clone()).or_default();
            if !o.releases.contains(&release.version) {
                o.releases.push(release.version.clone());
                o.releases.sort();
            }
        }
        self.switch(spec, &release.version)
    }

    async fn verify(&self, spec: &TargetSpec, version: &str) -> Result<(), DriverError> {
        self.enter(spec, format!("verify {} {version}", spec.target.id))
            .await?;
        let current = self.get(&spec.target.id).current;
        if current.as_deref() != Some(version) {
            return Err(DriverError::Failed {
                target: spec.target.id.clone(),
                action: "verify",
                message: format!("current is {current:?}"),
            });
        }
        if self
            .unhealthy
            .lock()
            .unwrap()
            .contains(&(spec.target.id.clone(), version.to_owned()))
        {
            return Err(DriverError::Unhealthy {
                target: spec.target.id.clone(),
                seconds: 0,
                detail: "injected failure".into(),
            });
        }
        Ok(())
    }

    async fn undo(&self, spec: &TargetSpec, undo: &Undo) -> Result<(), DriverError> {
        match undo {
            Undo::SwitchTo { version, .. } => {
                self.enter(spec, format!("undo {} {version}", spec.target.id))
                    .await?;
                self.switch(spec, version)?;
                self.verify(spec, version).await
            }
            Undo::Uninstall => {
                self.enter(spec, format!("undo {} uninstall", spec.target.id))
                    .await?;
                self.state
                    .lock()
                    .unwrap()
                    .entry(spec.target.id.clone())
                    .or_default()
                    .current = None;
                Ok(())
            }
            // Operation steps (snapshots) are never handed to a release driver.
            Undo::Keep => Ok(()),
        }
    }
}
