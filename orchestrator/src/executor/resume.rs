//! What earlier runs of a plan did, read back from the ledger.

use std::collections::BTreeSet;

use crate::ledger::{Entry, Event, Outcome};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriorRun {
    /// An apply of this plan was started before.
    pub started: bool,
    /// Steps that succeeded and were not undone since.
    pub done: BTreeSet<String>,
    /// Step ids in the order they succeeded.
    pub done_in_order: Vec<String>,
    /// Steps that were started (whatever became of them).
    pub touched: BTreeSet<String>,
    /// The last `apply_finished` outcome, if the plan ran to an end.
    pub finished: Option<Outcome>,
}

pub fn prior_run(entries: &[Entry], plan_id: &str) -> PriorRun {
    let mut p = PriorRun::default();
    for e in entries
        .iter()
        .filter(|e| e.plan_id.as_deref() == Some(plan_id))
    {
        match (e.event, e.step.as_ref()) {
            (Event::ApplyStarted, _) => {
                p.started = true;
                p.finished = None;
            }
            (Event::StepStarted, Some(s)) => {
                p.touched.insert(s.clone());
            }
            (Event::StepSucceeded, Some(s)) => {
                p.done.insert(s.clone());
                p.done_in_order.retain(|x| x != s);
                p.done_in_order.push(s.clone());
            }
            (Event::StepBackedOut, Some(s)) => {
                p.done.remove(s);
                p.done_in_order.retain(|x| x != s);
            }
            (Event::ApplyFinished, _) => p.finished = e.outcome,
            _ => {}
        }
    }
    p
}
