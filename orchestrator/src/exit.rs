//! Exit codes: documented, stable, and the only numbers `main` returns.
//!
//! `ferry plan` follows `terraform plan -detailed-exitcode`: 0 no changes, 2 changes present.

/// Success; for `plan`, no changes.
pub const OK: u8 = 0;
/// An error: invalid input, a driver or IO failure. Nothing more specific applies.
pub const ERROR: u8 = 1;
/// `plan`: changes are present.
pub const CHANGES: u8 = 2;
/// `apply`: the saved plan is stale (inputs or targets changed since planning).
pub const STALE: u8 = 3;
/// `apply`: another apply holds the lock.
pub const LOCKED: u8 = 4;
/// `apply`: stopped with failures; the record says how to resume (`halt`, or failures within
/// tolerance).
pub const FAILED: u8 = 5;
/// `apply`: a wave failed and the completed steps were backed out.
pub const BACKED_OUT: u8 = 6;
/// `ledger verify`: the chain is broken.
pub const TAMPERED: u8 = 7;
/// `apply`: stopped before a wave whose approval gate is not approved yet; `ferry approve`,
/// then `apply --resume`.
pub const AWAITING_APPROVAL: u8 = 8;
/// `apply`: stopped before steps on a site whose maintenance window is closed (resumable inside
/// the window; `--wait` waits for it, `--outside-window --reason` overrides, recorded).
pub const OUTSIDE_WINDOW: u8 = 9;
/// `apply`: a condition gate (`wait_until`) does not hold yet; its last value is recorded.
/// `apply --resume` evaluates it again (the deadline counts from its first evaluation),
/// `apply --wait` polls until it holds or the deadline passes.
pub const AWAITING_CONDITION: u8 = 10;
/// `fleet status`: an agent is late (no report within `--late-after` of its intervals) or,
/// with `--inventory`, a site's agent never reported.
pub const AGENTS_LATE: u8 = 11;
/// Interrupted (Ctrl-C) at a safe point; `apply --resume` finishes.
pub const INTERRUPTED: u8 = 130;
