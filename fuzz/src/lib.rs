//! What the fuzz targets share: the parsers as ferry calls them, from bytes.

use ferry_core::load::{self, SourceFile};

/// ferry's own known_hosts reader, compiled from its source file.
#[path = "../../orchestrator/src/drivers/ssh/known_hosts.rs"]
pub mod known_hosts;

/// Bytes as text, the way ferry reads a file (`read_to_string`: not UTF-8 is an error).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// An inventory parsed and, when it parses, validated: every check `ferry plan` runs on one.
pub fn inventory(text: &str) {
    if let Ok(inv) = load::parse_inventory(SourceFile::new("fuzz.yaml", text)) {
        let _ = ferry_core::validate::inventory(&inv);
    }
}

/// The demo inventory release plans are validated against: parsed once per fuzzing process
/// (the target runs in persistent mode), not once per input; it is not what is under test.
fn demo_inventory() -> &'static ferry_core::model::Inventory {
    static INV: std::sync::OnceLock<ferry_core::model::Inventory> = std::sync::OnceLock::new();
    INV.get_or_init(|| {
        load::parse_inventory(SourceFile::new(
            "inventory.yaml",
            include_str!("../../inventories/local.yaml"),
        ))
        .expect("the demo inventory parses")
        .value
    })
}

/// A release plan parsed and validated against the demo inventory.
pub fn release_plan(text: &str) {
    let inv = demo_inventory();
    if let Ok(plan) = load::parse_release_plan(SourceFile::new("plan.yaml", text)) {
        let _ = ferry_core::validate::release_plan(&plan, inv);
    }
}

pub fn runbook(text: &str) {
    let _ = load::parse_runbook(SourceFile::new("runbook.yaml", text));
}

pub fn saved_plan(text: &str) {
    let _ = ferry_core::plan::SavedPlan::parse(text);
}

/// Ledger bytes through the verifier `ferry ledger verify` streams them through.
pub fn ledger(data: &[u8]) {
    let _ = ferry_core::ledger::verify_lines(data);
}

pub fn known_hosts_file(text: &str) {
    let _ = known_hosts::parse("known_hosts", text);
}
