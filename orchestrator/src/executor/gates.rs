//! The steps of a wave that are not releases: condition gates (polled, recorded when their value
//! changes, waiting across processes through the ledger), calls with their undo, and recorded
//! values. Deciding whether a gate holds is `ferry_core::gate`; observing is `crate::probe`.

use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use super::{ExecError, Shared, StepStatus};
use crate::gate::{self, GateClock, Timing, Verdict};
use crate::ledger::{Event, Outcome};
use crate::model::OnTimeout;
use crate::ops::{Action, Op, Probe};
use crate::plan::Step;

/// A gate that did not hold when the run stopped, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingGate {
    pub step: String,
    pub name: String,
    pub condition: String,
    /// The last value seen (or the probe's error).
    pub value: Value,
    pub polls: u64,
    /// RFC 3339: the first evaluation, when the next poll is due, when the deadline passes.
    pub waiting_since: String,
    pub next_poll_at: String,
    pub deadline_at: String,
}

/// How a gate's evaluation ended in this run.
pub(super) enum GateEnd {
    Passed(GateClock),
    Waiting(GateClock),
    TimedOut(GateClock, OnTimeout),
}

struct GateSpec<'a> {
    probe: &'a Probe,
    compare: Option<&'a gate::Compare>,
    timing: Timing,
    on_timeout: OnTimeout,
}

impl GateSpec<'_> {
    fn of(op: &Op) -> Option<GateSpec<'_>> {
        let Op::WaitUntil {
            probe,
            compare,
            every_seconds,
            stable_for_seconds,
            deadline_seconds,
            on_timeout,
        } = op
        else {
            return None;
        };
        Some(GateSpec {
            probe,
            compare: compare.as_ref(),
            timing: Timing {
                every: *every_seconds,
                stable_for: *stable_for_seconds,
                deadline: *deadline_seconds,
            },
            on_timeout: *on_timeout,
        })
    }
}

impl Shared {
    /// Polls a gate until it passes, its deadline passes, or (without `--wait`) it does not
    /// hold yet. The first and last evaluation of the run and every change are recorded.
    pub(super) async fn run_gate(&self, step: &Step, op: &Op) -> Result<GateEnd, ExecError> {
        let spec = GateSpec::of(op).expect("a wait_until step");
        let mut clock = self.prior_gates.get(&step.id).cloned();
        let mut cancel = self.exec.cancel.clone();
        loop {
            let (value, holds) = match self.exec.probes.observe(spec.probe).await {
                Ok(v) => {
                    let holds = spec.compare.is_none_or(|c| c.holds(&v));
                    (v, holds)
                }
                Err(e) => (json!({ "error": e.to_string() }), false),
            };
            let now = self.exec.windows.clock.now();
            let first = clock.is_none();
            let (next, verdict, changed) = gate::observe(clock, now, value, holds, spec.timing);
            if first || changed || verdict != Verdict::Waiting {
                self.record_evaluation(step, &next, verdict).await?;
            }
            self.say(gate_line(step, &next, &spec, verdict));
            match verdict {
                Verdict::Passed => return Ok(GateEnd::Passed(next)),
                Verdict::TimedOut => return Ok(GateEnd::TimedOut(next, spec.on_timeout)),
                Verdict::Waiting if !self.exec.wait_conditions || self.cancelled() => {
                    return Ok(GateEnd::Waiting(next));
                }
                Verdict::Waiting => {}
            }
            let due = gate::next_poll(&next, spec.timing);
            let pause = (due - now).to_std().unwrap_or_default();
            clock = Some(next);
            tokio::select! {
                () = self.exec.windows.clock.sleep(pause) => {}
                _ = cancel.changed() => {}
            }
            if self.cancelled() {
                let c = clock.expect("set above");
                return Ok(GateEnd::Waiting(c));
            }
        }
    }

    async fn record_evaluation(
        &self,
        step: &Step,
        clock: &GateClock,
        verdict: Verdict,
    ) -> Result<(), ExecError> {
        let e = self
            .entry(Event::ConditionEvaluated, step)
            .message(format!(
                "{} = {} ({})",
                step.target.app,
                gate::text(&clock.last_value),
                match verdict {
                    Verdict::Passed => "passed",
                    Verdict::TimedOut => "deadline passed",
                    Verdict::Waiting if clock.last_holds => "holds, not yet for long enough",
                    Verdict::Waiting => "does not hold",
                }
            ))
            .detail(json!({ "clock": clock }));
        self.record(e).await
    }

    /// Ends a gate's step: succeeded, waiting (recorded, the run will stop after this wave's
    /// other lanes), or failed at its deadline (the gate's `on_timeout` decides the run).
    pub(super) async fn finish_gate(
        &self,
        step: &Step,
        end: GateEnd,
        started: Instant,
    ) -> Result<bool, ExecError> {
        let title = step.target.app.clone();
        let ms = started.elapsed().as_millis() as u64;
        match end {
            GateEnd::Passed(clock) => {
                let summary = format!(
                    "condition holds: {} after {} poll(s)",
                    gate::text(&clock.last_value),
                    clock.polls
                );
                let e = self
                    .entry(Event::StepSucceeded, step)
                    .duration_ms(ms)
                    .message(summary.clone())
                    .detail(json!({ "clock": clock }));
                let line = format!("  ok      {title}: {summary} [{}]", step.id);
                self.succeeded(step, e, line).await?;
                Ok(true)
            }
            GateEnd::Waiting(clock) => self.left_waiting(step, clock).await,
            GateEnd::TimedOut(clock, on_timeout) => {
                self.timed_out(step, clock, on_timeout, ms).await
            }
        }
    }

    /// Records a gate that does not hold yet; the run stops after this wave's other lanes.
    async fn left_waiting(&self, step: &Step, clock: GateClock) -> Result<bool, ExecError> {
        let e = self
            .entry(Event::ConditionWaiting, step)
            .outcome(Outcome::Halted)
            .message(format!(
                "waiting: {} = {}; `ferry apply --resume` evaluates again (`--wait` polls)",
                step.target.app,
                gate::text(&clock.last_value)
            ))
            .detail(json!({ "clock": clock }));
        self.record(e).await?;
        self.waiting
            .lock()
            .expect("waiting lock")
            .insert(step.id.clone(), clock);
        self.set(&step.id, StepStatus::Waiting);
        Ok(true)
    }

    /// A gate's deadline passed: the step fails with the last value, and the gate's
    /// `on_timeout` (not the plan's `on_failure`) decides the run.
    async fn timed_out(
        &self,
        step: &Step,
        clock: GateClock,
        on_timeout: OnTimeout,
        ms: u64,
    ) -> Result<bool, ExecError> {
        let message = format!(
            "deadline passed: {} = {} after {} poll(s); on_timeout: {}",
            step.target.app,
            gate::text(&clock.last_value),
            clock.polls,
            match on_timeout {
                OnTimeout::Halt => "halt",
                OnTimeout::Backout => "backout",
            }
        );
        let e = self
            .entry(Event::StepFailed, step)
            .outcome(Outcome::Failed)
            .duration_ms(ms)
            .message(message.clone())
            .detail(json!({ "clock": clock, "on_timeout": on_timeout }));
        self.record(e).await?;
        self.set(&step.id, StepStatus::Failed);
        self.exec.progress.step_done();
        self.say(format!("  FAILED  {message} [{}]", step.id));
        *self.on_timeout.lock().expect("on_timeout lock") = Some(on_timeout);
        self.abort.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(false)
    }

    /// A call or a record: what it did or saw, for the step's ledger entry.
    pub(super) async fn run_hook(&self, op: &Op) -> Result<Value, String> {
        match op {
            Op::Call { call, .. } => self.exec.probes.act(call).await.map_err(|e| e.to_string()),
            Op::Record { label, probe } => match self.exec.probes.observe(probe).await {
                Ok(v) => Ok(json!({ "label": label, "value": v })),
                Err(e) => Err(e.to_string()),
            },
            _ => Err(format!("`{}` is not a hook", op.name())),
        }
    }

    /// Undoes a call that has an undo (resumes what it quiesced).
    pub(super) async fn undo_call(&self, undo: &Action) -> Result<Value, String> {
        self.exec.probes.act(undo).await.map_err(|e| e.to_string())
    }
}

fn gate_line(step: &Step, c: &GateClock, spec: &GateSpec<'_>, v: Verdict) -> String {
    let want = spec
        .compare
        .map_or_else(|| "success".to_owned(), gate::Compare::describe);
    let waited = (c.last_at - c.started_at).num_seconds().max(0) as u64;
    let state = match v {
        Verdict::Passed => "holds",
        Verdict::TimedOut => "deadline passed",
        Verdict::Waiting if c.last_holds => "holds, waiting for it to stay",
        Verdict::Waiting => "waiting",
    };
    format!(
        "  gate    {}: {} (want {want}): {state}; waited {} of {} [{}]",
        step.target.app,
        gate::text(&c.last_value),
        gate::describe_duration(waited),
        gate::describe_duration(spec.timing.deadline),
        step.id
    )
}

/// The report of a gate left waiting.
pub(super) fn waiting_gate(step: &Step, clock: &GateClock) -> WaitingGate {
    let spec = step.op.as_ref().and_then(|o| GateSpec::of(&o.op));
    let (condition, timing) = match (&step.op, &spec) {
        (Some(o), Some(s)) => (o.op.describe(), s.timing),
        _ => (
            String::new(),
            Timing {
                every: 0,
                stable_for: 0,
                deadline: 0,
            },
        ),
    };
    let deadline = clock.started_at + chrono::Duration::seconds(timing.deadline as i64);
    WaitingGate {
        step: step.id.clone(),
        name: step.target.app.clone(),
        condition,
        value: clock.last_value.clone(),
        polls: clock.polls,
        waiting_since: clock.started_at.to_rfc3339(),
        next_poll_at: gate::next_poll(clock, timing).to_rfc3339(),
        deadline_at: deadline.to_rfc3339(),
    }
}
