//! Maintenance windows as a run enforces them: no step starts on a site whose window is
//! closed. The run waits for it (`--wait`), starts anyway for a recorded reason
//! (`--outside-window --reason`), or holds the site's steps and stops resumable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{ExecError, Shared};
use crate::ledger::{Event, NewEntry};
use crate::model::MaintenanceWindow;
use crate::window::{self, Opening, State};

/// The clock windows are judged by (the system's; tests give their own).
#[async_trait]
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
    /// Waits `d` of this clock's time.
    async fn sleep(&self, d: std::time::Duration);
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep(&self, d: std::time::Duration) {
        tokio::time::sleep(d).await;
    }
}

/// What a run enforces. The default restricts nothing (no site has a window).
#[derive(Clone)]
pub struct Windows {
    /// Site id -> its window; a site without one is unrestricted.
    pub sites: BTreeMap<String, MaintenanceWindow>,
    /// Start steps outside a window anyway, for this reason (recorded once per site).
    pub override_reason: Option<String>,
    /// Wait for a closed window to open instead of stopping.
    pub wait: bool,
    pub clock: Arc<dyn Clock>,
    /// What this run has said once per site (`override:SITE`, `wait:SITE`). Held across the
    /// override's record, so a second lane of the same site waits until that entry is durable.
    noted: Arc<tokio::sync::Mutex<BTreeSet<String>>>,
}

impl Default for Windows {
    fn default() -> Self {
        Self::new(BTreeMap::new(), None, false, Arc::new(SystemClock))
    }
}

impl Windows {
    pub fn new(
        sites: BTreeMap<String, MaintenanceWindow>,
        override_reason: Option<String>,
        wait: bool,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            sites,
            override_reason,
            wait,
            clock,
            noted: Arc::default(),
        }
    }
}

/// What may happen on a site now.
pub enum Gate {
    /// Start the step.
    Go,
    /// Hold the site's steps: its window is closed until this opening.
    Held(Opening),
}

impl Shared {
    /// Whether a step on `site` may start now: its window is open (or it has none), it opened
    /// while this run waited, or this run overrides it (recorded once per site).
    pub(super) async fn window_gate(&self, site: &str) -> Result<Gate, ExecError> {
        let w = &self.exec.windows;
        let Some(window) = w.sites.get(site) else {
            return Ok(Gate::Go);
        };
        loop {
            let now = w.clock.now();
            let next = match window::state(window, now) {
                None | Some(State::Open(_)) => return Ok(Gate::Go),
                Some(State::Closed(next)) => next,
            };
            if let Some(reason) = &w.override_reason {
                self.record_override(site, window, next, reason).await?;
                return Ok(Gate::Go);
            }
            if !w.wait || self.cancelled() || self.abort.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(Gate::Held(next));
            }
            self.say_once_waiting(site, window, next).await;
            // Until it opens, unless the run is stopped (Ctrl-C, a lost lock) or something
            // else ends meanwhile (a failure elsewhere may abort the wave): then look again.
            let left = (next.start - now).to_std().unwrap_or_default();
            let mut cancel = self.exec.cancel.clone();
            tokio::select! {
                () = w.clock.sleep(left) => {}
                _ = cancel.changed() => {}
                () = self.changed.notified() => {}
            }
        }
    }

    async fn record_override(
        &self,
        site: &str,
        window: &MaintenanceWindow,
        next: Opening,
        reason: &str,
    ) -> Result<(), ExecError> {
        let mut noted = self.exec.windows.noted.lock().await;
        let key = format!("override:{site}");
        if !noted.insert(key.clone()) {
            return Ok(());
        }
        let opens = window::describe(next.start, &window.timezone);
        let mut e = NewEntry::new(&self.exec.actor, Event::WindowOverridden)
            .plan(&self.exec.plan.id)
            .message(format!(
                "steps on site `{site}` start outside its maintenance window (next opens {opens}) by {}: {reason}",
                self.exec.actor
            ))
            .detail(serde_json::json!({
                "site": site,
                "reason": reason,
                "window": window,
                "at": self.exec.windows.clock.now().to_rfc3339(),
                "next_opening": next,
            }));
        e.site = Some(site.to_owned());
        if let Err(err) = self.record(e).await {
            // Not recorded: no other step may start on this site on its strength.
            noted.remove(&key);
            return Err(err);
        }
        drop(noted);
        self.say(format!(
            "  window  {site}: closed, started anyway (--outside-window): {reason}"
        ));
        Ok(())
    }

    async fn say_once_waiting(&self, site: &str, window: &MaintenanceWindow, next: Opening) {
        let first = self
            .exec
            .windows
            .noted
            .lock()
            .await
            .insert(format!("wait:{site}"));
        if first {
            self.say(format!(
                "  waiting {site}: maintenance window opens {}",
                window::describe(next.start, &window.timezone)
            ));
        }
    }
}

/// A clock that starts at a given instant and whose sleeps pass at once.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct FakeClock(pub std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

#[cfg(test)]
#[async_trait::async_trait]
impl crate::executor::Clock for FakeClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }
    async fn sleep(&self, d: std::time::Duration) {
        *self.0.lock().unwrap() += chrono::Duration::from_std(d).unwrap();
        tokio::task::yield_now().await;
    }
}
