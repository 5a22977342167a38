//! `ferry approve` (a signed approval of a plan's gate, into the ledger) and `ferry keygen`.

use std::io::Write as _;
use std::path::Path;

use super::{CliError, Ctx, OutputFormat};
use crate::approval::{self, APPROVAL_FORMAT, ApprovalPayload};
use crate::exit;
use crate::ledger::{Event, NewEntry};
use crate::secret::SecretRef;
use crate::workspace;

pub fn approve(
    ctx: &Ctx,
    plan_path: &Path,
    gate: &str,
    person: &str,
    comment: Option<&str>,
) -> Result<u8, CliError> {
    let plan = workspace::read_plan(plan_path)?;
    let inv = workspace::plan_inventory(&plan)?;
    let inventory = inv.source.path.display().to_string();
    let Some(g) = plan.body.gates.iter().find(|g| g.name == gate) else {
        let known: Vec<&str> = plan.body.gates.iter().map(|g| g.name.as_str()).collect();
        return Err(CliError::Refused(format!(
            "plan {} has no gate `{gate}` (its gates: {})",
            plan.id,
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )));
    };
    let Some(who) = inv.value.approvers.iter().find(|a| a.name == person) else {
        return Err(CliError::Refused(format!(
            "`{person}` is not an approver in {inventory}; approvals are refused from anyone the inventory does not name"
        )));
    };
    if !who.roles.contains(&g.role) {
        let holders: Vec<&str> = inv
            .value
            .approvers
            .iter()
            .filter(|a| a.roles.contains(&g.role))
            .map(|a| a.name.as_str())
            .collect();
        return Err(CliError::Refused(format!(
            "{person} does not hold role `{}`, which gate `{gate}` needs (held by: {})",
            g.role,
            holders.join(", ")
        )));
    }
    let Some(reference) = &who.signing_key else {
        return Err(CliError::Refused(format!(
            "the inventory gives no `signing_key` for {person}: approvals are signed"
        )));
    };
    let base = workspace::base_dir(Path::new(&inventory));
    let secret = SecretRef::parse(reference)
        .and_then(|r| r.resolve(&format!("approvers.{person}.signing_key"), &base))
        .map_err(|e| CliError::Refused(e.to_string()))?;
    let key = approval::parse_signing_key(secret.expose())
        .map_err(|m| CliError::Refused(format!("{person}'s signing key: {m}")))?;
    if approval::public_key_text(&key.verifying_key()) != who.public_key.trim() {
        return Err(CliError::Refused(format!(
            "{person}'s signing key does not match their public key in the inventory"
        )));
    }
    let signed = approval::sign(
        ApprovalPayload {
            format: APPROVAL_FORMAT.into(),
            plan_id: plan.id.clone(),
            plan_sha256: approval::plan_digest(&plan),
            gate: gate.to_owned(),
            approver: person.to_owned(),
            role: g.role.clone(),
            comment: comment.map(str::to_owned),
            signed_at: crate::ledger::now(),
        },
        &key,
    );
    // An approval is evidence: it is never added to a ledger that does not verify.
    ctx.ledger.read_verified()?;
    let entry = ctx.ledger.append(
        NewEntry::new(&ctx.actor, Event::Approval)
            .plan(&plan.id)
            .message(format!(
                "gate `{gate}` approved by {person} as `{}`",
                g.role
            ))
            .detail(serde_json::to_value(&signed).expect("approvals serialize")),
    )?;
    match ctx.output {
        OutputFormat::Human => println!(
            "Approved gate `{gate}` of plan {} as {person} (`{}`); ledger entry #{} {}.\nContinue with: ferry apply --resume {}",
            plan.id,
            g.role,
            entry.seq,
            entry.hash,
            plan_path.display()
        ),
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "format": "ferry.approval-recorded",
                "version": 1,
                "plan_id": plan.id,
                "gate": gate,
                "approver": person,
                "role": g.role,
                "entry": entry.seq,
                "hash": entry.hash,
            })
        ),
    }
    Ok(exit::OK)
}

/// Writes a new Ed25519 signing key (base64 seed, mode 0600) and prints its public key.
pub fn keygen(ctx: &Ctx, out: &Path) -> Result<u8, CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| CliError::Refused(format!("no randomness from the OS: {e}")))?;
    let text = approval::signing_key_text(&seed);
    let key = approval::parse_signing_key(&text).expect("a fresh seed parses");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| CliError::Refused(format!("cannot create {}: {e}", out.display())))?;
    writeln!(f, "{text}")
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::Refused(format!("cannot write {}: {e}", out.display())))?;
    let public = approval::public_key_text(&key.verifying_key());
    match ctx.output {
        OutputFormat::Human => println!(
            "Signing key written to {} (keep it private).\nPut this in the inventory's approver entry:\n  public_key: \"{public}\"",
            out.display()
        ),
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({ "format": "ferry.keygen", "version": 1, "public_key": public, "path": out.display().to_string() })
        ),
    }
    Ok(exit::OK)
}
