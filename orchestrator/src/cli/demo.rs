//! `ferry demo`: the main job end to end on the embedded local target.

use std::path::Path;

use super::apply::{Lines, apply_plan, outcome_code, print_apply};
use super::{CliError, Ctx};
use crate::engine::plan::{make, record_created, refuse_unready};
use crate::executor::ApplyOutcome;
use crate::ledger::Ledger;
use crate::{exit, workspace};

/// The demo's clinics declare maintenance windows, and the demo runs at any hour: each apply
/// overrides them, and the ledger records it (`window_overridden`) as it would for a person.
const DEMO_REASON: &str = "ferry demo: the embedded local target runs at any hour";

pub async fn demo(ctx: &Ctx, root: &Path) -> Result<u8, CliError> {
    let inventory = root.join("inventories/local.yaml");
    let state = root.join(".ferry/demo");
    // The demo owns .ferry/demo (its targets, ledger and plans): start from nothing each time.
    let _ = std::fs::remove_dir_all(&state);
    let ctx = Ctx::new(
        ctx.output,
        false,
        state.clone(),
        Ledger::new(state.join("ledger.jsonl")),
        ctx.actor.clone(),
    );
    let engine_state = ctx.state();
    let releases = [
        (
            "plans/demo-release-1.0.yaml",
            "first install of demo 1.0.0 at three clinics (canary first)",
            false,
        ),
        ("plans/demo-release-1.1.yaml", "upgrade to 1.1.0", false),
        (
            "plans/demo-release-1.2-bad.yaml",
            "a release whose health check fails: backed out automatically",
            true,
        ),
    ];
    for (file, what, expect_backout) in releases {
        println!(
            "\n=== {what}\n$ ferry plan -i {} {file} -o {}",
            inventory.display(),
            state.join("plan.json").display()
        );
        let (inv, plans) =
            workspace::load(&inventory, &[root.join(file)]).map_err(CliError::Invalid)?;
        let saved = make(&engine_state, &inv, &plans[0], &Lines).await?;
        refuse_unready(&saved)?;
        let out = state.join("plan.json");
        workspace::write_plan(&out, &saved)?;
        record_created(&engine_state, &saved, &out)?;
        let windows = crate::window::of_plan(&inv.value, &saved.body, chrono::Utc::now());
        ctx.out().plan(&saved, &out, &windows);
        println!(
            "$ ferry apply {} --outside-window --reason \"{DEMO_REASON}\"",
            out.display()
        );
        let mut opts = super::apply::Options::fresh(&[]);
        opts.window.override_reason = Some(DEMO_REASON);
        let r = apply_plan(&ctx, &out, opts).await?;
        print_apply(&ctx, &r, &out);
        let ok = match (&r.outcome, expect_backout) {
            (ApplyOutcome::Completed, false) => true,
            (ApplyOutcome::BackedOut { undo_failed, .. }, true) => undo_failed.is_empty(),
            _ => false,
        };
        if !ok {
            println!("demo: unexpected outcome for {file}");
            return Ok(outcome_code(&r.outcome).max(exit::ERROR));
        }
    }
    println!("\n=== the audit ledger\n$ ferry ledger verify");
    let report = ctx.ledger.verify()?;
    match &report.tamper {
        None => println!(
            "ledger {} verified: {} entries, head {}",
            ctx.ledger.location(),
            report.entries,
            report.head.as_deref().unwrap_or("-")
        ),
        Some(t) => {
            println!("ledger NOT intact: {t}");
            return Ok(exit::TAMPERED);
        }
    }
    println!(
        "\nEvery site serves demo 1.1.0 from {}/targets/<site>/demo/current.\nSee the record with: ferry --state-dir {} ledger show",
        state.display(),
        state.display()
    );
    Ok(exit::OK)
}
