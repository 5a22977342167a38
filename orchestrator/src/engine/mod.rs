//! The engine: plan-apply operations as library calls over values (a state handle, a saved
//! plan, the drivers, a progress sink, a cancel signal). The CLI parses arguments, calls these
//! and renders the results; nothing here prints or reads a terminal.

pub mod apply;
pub mod approve;
pub mod audit;
pub mod backout;
pub mod checkpoint_sink;
pub mod dibr;
#[cfg(feature = "ssh")]
pub mod hosts;
pub mod migrate;
pub mod plan;
#[cfg(feature = "aws")]
pub mod runbook;
#[cfg(feature = "aws")]
pub mod snapshot;
pub mod state_store;
#[cfg(test)]
pub(crate) mod tests;
pub mod versions;

use std::path::PathBuf;

use crate::executor::ExecError;
use crate::exit;
use crate::ledger::{Ledger, LedgerError};
use crate::load::Diagnostics;
use crate::lock::{LockError, LockHolder};
use crate::plan::PlanError;
use crate::workspace::WorkspaceError;

/// Where an operation keeps its record and who acts: the state directory (the plans ferry
/// writes for itself: back-outs, runbooks), the ledger with its apply lock (a handle on a
/// state backend) and the actor named in every entry.
#[derive(Debug, Clone)]
pub struct State {
    pub state_dir: PathBuf,
    pub ledger: Ledger,
    pub actor: String,
}

/// Every way an engine call (and so a command) can fail, each with its documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("the saved plan is stale; make a new plan:\n  - {}", .0.join("\n  - "))]
    Stale(Vec<String>),
    #[error("another apply holds the lock: {0}")]
    Locked(Box<LockHolder>),
    #[error(transparent)]
    Lock(LockError),
    #[error(transparent)]
    Workspace(WorkspaceError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Refused(String),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl From<WorkspaceError> for Error {
    fn from(e: WorkspaceError) -> Self {
        match e {
            WorkspaceError::Invalid(d) => Error::Invalid(d),
            other => Error::Workspace(other),
        }
    }
}

impl From<crate::state::TakeLockError> for Error {
    fn from(e: crate::state::TakeLockError) -> Self {
        match e {
            crate::state::TakeLockError::Lock(l) => l.into(),
            crate::state::TakeLockError::Ledger(l) => Error::Ledger(l),
        }
    }
}

impl From<LockError> for Error {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Held(h) => Error::Locked(h),
            other => Error::Lock(other),
        }
    }
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::executor::ExecError;
        match self {
            Error::Stale(_) => exit::STALE,
            Error::Locked(_)
            | Error::Lock(LockError::Lost(_) | LockError::Vanished)
            | Error::Ledger(LedgerError::Fenced(_))
            | Error::Exec(ExecError::Ledger(LedgerError::Fenced(_))) => exit::LOCKED,
            Error::Ledger(LedgerError::Broken { .. } | LedgerError::TornTail { .. })
            | Error::Exec(ExecError::Ledger(
                LedgerError::Broken { .. } | LedgerError::TornTail { .. },
            )) => exit::TAMPERED,
            _ => exit::ERROR,
        }
    }
}
