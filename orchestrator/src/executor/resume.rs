//! What earlier runs of a plan did, read back from the ledger.

use std::collections::{BTreeMap, BTreeSet};

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
    /// Steps whose back-out began after they succeeded (`undo_started`, then backed out,
    /// failed or never finished): not complete, whatever the target serves now.
    pub undone: BTreeSet<String>,
    /// The last `apply_finished` outcome, if the plan ran to an end.
    pub finished: Option<Outcome>,
    /// Each condition gate's clock as last recorded (`condition_evaluated` or
    /// `condition_waiting`): a resumed gate keeps counting its deadline from its first
    /// evaluation.
    pub gates: BTreeMap<String, crate::gate::GateClock>,
    /// Each migration copy step's chunks as decided, and those recorded as copied.
    pub chunks: BTreeMap<String, crate::pgmigrate::PriorChunks>,
    /// Each bucket copy's objects, open uploads and last manifest, by copy name.
    pub objects: BTreeMap<String, crate::migrate::bucket::PriorObjects>,
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
                p.undone.remove(s);
                p.done_in_order.retain(|x| x != s);
                p.done_in_order.push(s.clone());
            }
            // A back-out that began is enough: the step is not complete any more, even if
            // the undo failed or the process died before it ended.
            (Event::UndoStarted | Event::StepBackedOut | Event::UndoFailed, Some(s)) => {
                if p.done.remove(s) {
                    p.undone.insert(s.clone());
                }
                p.done_in_order.retain(|x| x != s);
            }
            (Event::ApplyFinished, _) => p.finished = e.outcome,
            (Event::ConditionEvaluated | Event::ConditionWaiting, Some(s)) => {
                if let Some(clock) = e
                    .detail
                    .as_ref()
                    .and_then(|d| serde_json::from_value(d["clock"].clone()).ok())
                {
                    p.gates.insert(s.clone(), clock);
                }
            }
            (Event::ChunksPlanned, Some(s)) => {
                let planned = e
                    .detail
                    .as_ref()
                    .and_then(|d| serde_json::from_value(d["chunks"].clone()).ok());
                p.chunks.entry(s.clone()).or_default().planned = planned;
            }
            (Event::ChunkCopied, Some(s)) => {
                if let Some(c) = e.detail.as_ref().and_then(|d| d["chunk"].as_str()) {
                    p.chunks
                        .entry(s.clone())
                        .or_default()
                        .done
                        .insert(c.to_owned());
                }
            }
            _ => {}
        }
    }
    p.objects = crate::migrate::bucket::replay(
        entries
            .iter()
            .filter(|e| e.plan_id.as_deref() == Some(plan_id)),
    );
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::NewEntry;

    fn e(event: Event, step: &str) -> Entry {
        let mut n = NewEntry::new("t", event).plan("p");
        n.step = Some(step.to_owned());
        n.seal(0, String::new())
    }

    /// A step whose back-out began is not done, however the back-out ended (or if it never
    /// ended because ferry was killed); a later success makes it done again.
    #[test]
    fn a_step_whose_back_out_began_is_not_done() {
        for tail in [
            vec![Event::UndoStarted],
            vec![Event::UndoStarted, Event::UndoFailed],
            vec![Event::UndoStarted, Event::StepBackedOut],
        ] {
            let mut entries = vec![e(Event::StepStarted, "s1"), e(Event::StepSucceeded, "s1")];
            entries.extend(tail.iter().map(|ev| e(*ev, "s1")));
            let p = prior_run(&entries, "p");
            assert!(!p.done.contains("s1"), "{tail:?}");
            assert!(p.undone.contains("s1"), "{tail:?}");
            entries.push(e(Event::StepSucceeded, "s1"));
            let p = prior_run(&entries, "p");
            assert!(
                p.done.contains("s1") && !p.undone.contains("s1"),
                "{tail:?}"
            );
        }
    }
}
