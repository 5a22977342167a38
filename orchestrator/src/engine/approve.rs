//! Approvals as library calls: sign a gate of a saved plan with an approver's key and record
//! it (`approve`), and make a signing key (`keygen`).

use std::io::Write as _;
use std::path::Path;

use super::{Error, State};
use crate::approval::{self, APPROVAL_FORMAT, ApprovalPayload, SigningKey};
use crate::ledger::{Entry, Event, NewEntry};
use crate::model::Approver;
use crate::plan::{GatePlan as Gate, SavedPlan};
use crate::secret::SecretRef;
use crate::workspace;

/// A recorded approval: the plan, the role it was given as, and its ledger entry.
pub struct Approved {
    pub plan: SavedPlan,
    pub role: String,
    pub entry: Entry,
}

/// Signs `gate` of the saved plan at `plan_path` as `person` (an approver of the plan's
/// inventory who holds the gate's role, with a signing key matching their public key) and
/// records it, only on a ledger that verifies.
pub fn approve(
    state: &State,
    plan_path: &Path,
    gate: &str,
    person: &str,
    comment: Option<&str>,
) -> Result<Approved, Error> {
    let plan = workspace::read_plan(plan_path)?;
    let inv = workspace::plan_inventory(&plan)?;
    let inventory = inv.source.path.display().to_string();
    let g = gate_of(&plan, gate)?;
    let base = workspace::base_dir(Path::new(&inventory));
    let key = role_key(
        &inv.value.approvers,
        person,
        &g.role,
        &format!("gate `{gate}`"),
        &inventory,
        &base,
    )?;
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
    state.ledger.read_verified()?;
    let entry = state.ledger.append(
        NewEntry::new(&state.actor, Event::Approval)
            .plan(&plan.id)
            .message(format!(
                "gate `{gate}` approved by {person} as `{}`",
                g.role
            ))
            .detail(serde_json::to_value(&signed).expect("approvals serialize")),
    )?;
    let role = g.role.clone();
    Ok(Approved { plan, role, entry })
}

fn gate_of<'p>(plan: &'p SavedPlan, gate: &str) -> Result<&'p Gate, Error> {
    plan.body
        .gates
        .iter()
        .find(|g| g.name == gate)
        .ok_or_else(|| {
            let known: Vec<&str> = plan.body.gates.iter().map(|g| g.name.as_str()).collect();
            Error::Refused(format!(
                "plan {} has no gate `{gate}` (its gates: {})",
                plan.id,
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })
}

/// The signing key of the inventory's approver `person`, who must hold `role` (which `what`,
/// a gate or a purge, needs).
pub(super) fn role_key(
    approvers: &[Approver],
    person: &str,
    role: &str,
    what: &str,
    inventory: &str,
    base: &Path,
) -> Result<SigningKey, Error> {
    signing_key(approver(approvers, person, role, what, inventory)?, base)
}

/// The inventory's approver `person`, who must hold `role`.
fn approver<'a>(
    approvers: &'a [Approver],
    person: &str,
    role: &str,
    what: &str,
    inventory: &str,
) -> Result<&'a Approver, Error> {
    let Some(who) = approvers.iter().find(|a| a.name == person) else {
        return Err(Error::Refused(format!(
            "`{person}` is not an approver in {inventory}; approvals are refused from anyone the inventory does not name"
        )));
    };
    if !who.roles.iter().any(|r| r == role) {
        let holders: Vec<&str> = approvers
            .iter()
            .filter(|a| a.roles.iter().any(|r| r == role))
            .map(|a| a.name.as_str())
            .collect();
        return Err(Error::Refused(format!(
            "{person} does not hold role `{role}`, which {what} needs (held by: {})",
            holders.join(", ")
        )));
    }
    Ok(who)
}

/// The approver's signing key, resolved from its reference; it must match their public key.
fn signing_key(who: &Approver, base: &Path) -> Result<SigningKey, Error> {
    let person = &who.name;
    let Some(reference) = &who.signing_key else {
        return Err(Error::Refused(format!(
            "the inventory gives no `signing_key` for {person}: approvals are signed"
        )));
    };
    let secret = SecretRef::parse(reference)
        .and_then(|r| r.resolve(&format!("approvers.{person}.signing_key"), base))
        .map_err(|e| Error::Refused(e.to_string()))?;
    let key = approval::parse_signing_key(secret.expose())
        .map_err(|m| Error::Refused(format!("{person}'s signing key: {m}")))?;
    if approval::public_key_text(&key.verifying_key()) != who.public_key.trim() {
        return Err(Error::Refused(format!(
            "{person}'s signing key does not match their public key in the inventory"
        )));
    }
    Ok(key)
}

/// Writes a new Ed25519 signing key to `out` (base64 seed, mode 0600, never over an existing
/// file) and returns its public key, as the inventory's approver entry wants it.
pub fn keygen(out: &Path) -> Result<String, Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| Error::Refused(format!("no randomness from the OS: {e}")))?;
    let text = approval::signing_key_text(&seed);
    let key = approval::parse_signing_key(&text).expect("a fresh seed parses");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| Error::Refused(format!("cannot create {}: {e}", out.display())))?;
    writeln!(f, "{text}")
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::Refused(format!("cannot write {}: {e}", out.display())))?;
    Ok(approval::public_key_text(&key.verifying_key()))
}
