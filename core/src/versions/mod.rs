//! Version lifecycles (issue 23): ids with their majors, the catalog replayed from the ledger,
//! and the rules of each change (at most `max_active_majors` active per lineage; revisions by
//! content digest; trash, then a guarded purge that leaves a tombstone).

pub mod catalog;
pub mod id;
mod rules;
#[cfg(test)]
mod tests;

pub use catalog::{Action, AddHow, Catalog, Change, Decision, Offer, Policy, VState, Version};
pub use id::{Scheme, VersionId};
pub use rules::{deployable, serving};
