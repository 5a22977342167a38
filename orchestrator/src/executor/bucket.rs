//! A bucket copy's steps, run by the executor: the copy (every object, part and upload recorded
//! in the ledger as it finishes, durable before the run goes on) and the verification against
//! the manifest those records make.

use serde_json::{Value, json};

use super::{Shared, Step};
use crate::ledger::{Event, Outcome};
use crate::migrate::bucket::{BucketPhase, BucketSpec, PriorObjects};
use crate::s3move::copy::{self, CopyLog, Job};
use crate::s3move::{Side, verify};

impl Shared {
    /// Runs one bucket step; what the ledger records of its success, or why it failed.
    pub(super) async fn run_bucket(
        &self,
        step: &Step,
        phase: BucketPhase,
        spec: &BucketSpec,
    ) -> Result<Value, String> {
        let (inv, base) = self.exec.probes.inventory();
        let source = Side::connect(inv, base, &spec.source)?;
        let target = Side::connect(inv, base, &spec.target)?;
        let prior = self
            .bucket_objects
            .lock()
            .expect("bucket objects")
            .get(&spec.name)
            .cloned()
            .unwrap_or_default();
        match phase {
            BucketPhase::Copy => {
                let job = Job {
                    spec,
                    source: &source,
                    target: &target,
                };
                let log = StepLog {
                    shared: self,
                    step,
                    copy: &spec.name,
                };
                let done = copy::run(&job, &prior, &log).await?;
                // What the ledger now says of the copy, for its verification in this run.
                let mine = PriorObjects {
                    copied: done.records,
                    uploads: Default::default(),
                    manifest: Some(done.written),
                };
                let mut all = self.bucket_objects.lock().expect("bucket objects");
                all.insert(spec.name.clone(), mine);
                Ok(done.summary)
            }
            BucketPhase::Verify => {
                let manifest = prior.checked_manifest(&spec.name)?;
                let progress = |objects: u64, bytes: u64| {
                    self.exec
                        .progress
                        .transfer(&spec.name, "objects read back", objects, bytes)
                };
                let report = verify::run(spec, &source, &target, &manifest, &progress).await?;
                let passed = report.passed();
                let e = self
                    .entry(Event::BucketVerified, step)
                    .outcome(if passed { Outcome::Ok } else { Outcome::Failed })
                    .message(report.verdict())
                    .detail(json!({ "copy": spec.name, "report": report }));
                self.record(e).await.map_err(|e| e.to_string())?;
                if passed {
                    Ok(
                        json!({ "objects": report.objects, "bytes": report.bytes, "root": report.root }),
                    )
                } else {
                    Err(report.verdict())
                }
            }
        }
    }
}

/// The copy's ledger and progress, for one step.
struct StepLog<'a> {
    shared: &'a Shared,
    step: &'a Step,
    copy: &'a str,
}

#[async_trait::async_trait]
impl CopyLog for StepLog<'_> {
    async fn record(&self, event: Event, message: String, detail: Value) -> Result<(), String> {
        let e = self
            .shared
            .entry(event, self.step)
            .message(message)
            .detail(detail);
        self.shared.record(e).await.map_err(|e| e.to_string())
    }

    fn progress(&self, objects: u64, bytes: u64) {
        self.shared
            .exec
            .progress
            .transfer(self.copy, "objects", objects, bytes);
    }

    fn cancelled(&self) -> bool {
        *self.shared.exec.cancel.borrow()
    }

    fn fence(&self) -> Result<(), String> {
        match &self.shared.exec.fence {
            Some(f) => f
                .check()
                .map_err(|e| format!("not going on with the copy: {e}")),
            None => Ok(()),
        }
    }
}
