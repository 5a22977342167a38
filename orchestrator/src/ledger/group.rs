//! Group commit, for every state backend: concurrent appends through one handle share one
//! write (and one `fsync` or one transaction). The first caller to find no writer at work
//! becomes the writer for everything queued by then; the others wait for their own entry's
//! result, which is given only once the batch is durable: an entry is durable before its
//! caller can report it or act on it.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

use super::{Entry, LedgerError, NewEntry};

#[derive(Debug, Default)]
pub(crate) struct Group {
    state: Mutex<GroupState>,
    written: Condvar,
}

#[derive(Debug, Default)]
struct GroupState {
    next_ticket: u64,
    pending: Vec<(u64, NewEntry)>,
    writing: bool,
    results: HashMap<u64, Result<Entry, LedgerError>>,
}

impl Group {
    /// Queues `new` and returns its entry once written, by this caller (as the writer of a
    /// batch, through `write`) or by another. `write` seals and writes a batch in order; on
    /// failure every entry of the batch gets the error (nothing of it is reported as recorded).
    pub(crate) fn append(
        &self,
        new: NewEntry,
        write: impl Fn(Vec<NewEntry>) -> Result<Vec<Entry>, LedgerError>,
    ) -> Result<Entry, LedgerError> {
        let mut st = self.state.lock().expect("ledger group lock");
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.pending.push((ticket, new));
        loop {
            if let Some(r) = st.results.remove(&ticket) {
                return r;
            }
            if st.writing {
                st = self.written.wait(st).expect("ledger group lock");
                continue;
            }
            st.writing = true;
            let batch = std::mem::take(&mut st.pending);
            drop(st);
            let written = Self::answers(batch, &write);
            st = self.state.lock().expect("ledger group lock");
            st.writing = false;
            st.results.extend(written);
            self.written.notify_all();
        }
    }

    fn answers(
        batch: Vec<(u64, NewEntry)>,
        write: &dyn Fn(Vec<NewEntry>) -> Result<Vec<Entry>, LedgerError>,
    ) -> Vec<(u64, Result<Entry, LedgerError>)> {
        let (tickets, news): (Vec<u64>, Vec<NewEntry>) = batch.into_iter().unzip();
        match write(news) {
            Ok(entries) => tickets
                .into_iter()
                .zip(entries.into_iter().map(Ok))
                .collect(),
            Err(e) => tickets
                .into_iter()
                .map(|t| (t, Err(e.duplicate())))
                .collect(),
        }
    }
}
