//! `ferry state init|migrate` and `ferry lock status|break`: the state store itself (the
//! work is `engine::state_store`'s).

use std::path::PathBuf;

use clap::Subcommand;

use super::{CliError, Ctx};
use crate::engine::state_store;
use crate::exit;
use crate::state::postgres::StateUrl;

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Set up the PostgreSQL state store `--state` names: ferry's schema by its embedded
    /// migrations (run as the schema's owner; a changed or unknown applied migration is refused).
    Init {
        /// The role ferry runs as: given INSERT and SELECT on the ledger (nothing more) and
        /// the apply lock's row.
        #[arg(long)]
        grant: Option<String>,
    },
    /// Copy a state directory's ledger into a PostgreSQL state store and verify it there; an
    /// interrupted copy goes on where it stopped. Recorded in both ledgers.
    Migrate {
        /// The state directory whose ledger moves.
        #[arg(long)]
        from: PathBuf,
        /// The store: `postgres://USER@HOST:PORT/DATABASE?...` (see `--state`).
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the apply lock: actor, host, pid, plan, lease (exit 0 either way).
    Status,
    /// Break the apply lock whoever holds it (its run is fenced off: it can no longer act or
    /// record); recorded as `lock_broken` with who and why.
    Break {
        /// Why, for the record.
        #[arg(long)]
        reason: String,
    },
}

/// The store `--state` names, required by `state init`.
fn store_url(ctx: &Ctx) -> Result<StateUrl, CliError> {
    let url = ctx.state_url.as_deref().ok_or_else(|| {
        CliError::Refused(
            "`ferry state init` sets up a PostgreSQL store: give it with `--state postgres://...` (or FERRY_STATE)".into(),
        )
    })?;
    StateUrl::parse(url).map_err(CliError::Refused)
}

pub fn run_state(ctx: &Ctx, command: StateCommand) -> Result<u8, CliError> {
    match command {
        StateCommand::Init { grant } => {
            let url = store_url(ctx)?;
            let applied = state_store::init(&url, grant.as_deref())?;
            ctx.out()
                .state_initialised(&url.display(), &applied, grant.as_deref());
            Ok(exit::OK)
        }
        StateCommand::Migrate { from, to } => {
            let url = StateUrl::parse(&to).map_err(CliError::Refused)?;
            let m = state_store::migrate(&from, &url, &ctx.actor)?;
            ctx.out().state_migrated(&m);
            Ok(exit::OK)
        }
    }
}

pub fn run_lock(ctx: &Ctx, command: LockCommand) -> Result<u8, CliError> {
    let state = ctx.state();
    match command {
        LockCommand::Status => {
            let s = state_store::lock_status(&state)?;
            ctx.out().lock_status(&ctx.ledger.location(), s.as_ref());
            Ok(exit::OK)
        }
        LockCommand::Break { reason } => {
            let broken = state_store::break_lock(&state, &reason)?;
            ctx.out()
                .lock_broken(&ctx.ledger.location(), broken.as_ref());
            Ok(exit::OK)
        }
    }
}
