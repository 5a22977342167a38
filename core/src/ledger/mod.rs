//! The audit ledger's format: one entry, its canonical form and hash, and the verification
//! of a chain of them. Writing the file (locking, fsync, fencing) is the `ferry` crate's.

pub mod checkpoint;
mod entry;
mod verify;

pub use entry::{
    Entry, Event, GENESIS, LEDGER_FORMAT_VERSION, NewEntry, Outcome, now_rfc3339 as now,
};
pub use verify::{Tamper, Verifier, VerifyReport, verify_from, verify_lines};
