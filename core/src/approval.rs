//! Signed approvals of a plan's gates: what is signed, how keys are written, how a signature
//! is checked against the inventory's public keys. Pure: no IO, no clock (the time is given).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
pub use ed25519_dalek::SigningKey;
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::model::Approver;
use crate::plan::SavedPlan;

pub const APPROVAL_FORMAT: &str = "ferry.approval.v1";
const KEY_PREFIX: &str = "ed25519:";

/// Exactly what an approver signs: the plan (by id and digest), the gate, who, as which role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPayload {
    pub format: String,
    pub plan_id: String,
    pub plan_sha256: String,
    pub gate: String,
    pub approver: String,
    pub role: String,
    pub comment: Option<String>,
    pub signed_at: String,
}

/// A signed approval, as the ledger entry's `detail` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedApproval {
    pub payload: ApprovalPayload,
    /// `ed25519:BASE64` of the key that signed.
    pub public_key: String,
    /// Base64 of the Ed25519 signature over the payload's JSON bytes.
    pub signature: String,
}

/// The digest an approval binds to: the saved plan's JSON as ferry writes it.
pub fn plan_digest(plan: &SavedPlan) -> String {
    crate::load::sha256_hex(&serde_json::to_vec(plan).expect("plans serialize"))
}

fn payload_bytes(p: &ApprovalPayload) -> Vec<u8> {
    serde_json::to_vec(p).expect("payloads serialize")
}

pub fn public_key_text(k: &VerifyingKey) -> String {
    format!("{KEY_PREFIX}{}", B64.encode(k.as_bytes()))
}

pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    let b64 = s
        .strip_prefix(KEY_PREFIX)
        .ok_or_else(|| format!("a public key is written `{KEY_PREFIX}BASE64`"))?;
    let bytes: [u8; 32] = B64
        .decode(b64.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("not 32 bytes of base64")?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// Whether `signature` (base64) is `public_key`'s (`ed25519:BASE64`) over `bytes`; an error
/// when either does not parse.
pub fn signature_holds(public_key: &str, signature: &str, bytes: &[u8]) -> Result<bool, String> {
    let key = parse_public_key(public_key)?;
    let sig: [u8; 64] = B64
        .decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the signature is not 64 bytes of base64")?;
    Ok(key.verify(bytes, &Signature::from_bytes(&sig)).is_ok())
}

/// A signing key file holds the base64 of a 32-byte Ed25519 seed (what `ferry keygen` writes).
pub fn parse_signing_key(text: &str) -> Result<SigningKey, String> {
    let seed: [u8; 32] = B64
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("a signing key is the base64 of a 32-byte Ed25519 seed (see `ferry keygen`)")?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The base64 seed of a new key from 32 random bytes.
pub fn signing_key_text(seed: &[u8; 32]) -> String {
    B64.encode(seed)
}

pub fn sign(payload: ApprovalPayload, key: &SigningKey) -> SignedApproval {
    let signature = key.sign(&payload_bytes(&payload));
    SignedApproval {
        public_key: public_key_text(&key.verifying_key()),
        signature: B64.encode(signature.to_bytes()),
        payload,
    }
}

/// The signature is the embedded key's over the payload; with `approvers`, the key is also the
/// approver's own key in the inventory and the approver holds the role.
pub fn verify(a: &SignedApproval, approvers: Option<&[Approver]>) -> Result<(), String> {
    if !signature_holds(&a.public_key, &a.signature, &payload_bytes(&a.payload))? {
        return Err("the signature does not match the approval's content".to_owned());
    }
    if let Some(list) = approvers {
        let p = &a.payload;
        let who = list
            .iter()
            .find(|x| x.name == p.approver)
            .ok_or_else(|| format!("`{}` is not an approver in the inventory", p.approver))?;
        if who.public_key.trim() != a.public_key {
            return Err(format!(
                "signed with a key that is not {}'s public key in the inventory",
                p.approver
            ));
        }
        if !who.roles.iter().any(|r| r == &p.role) {
            return Err(format!(
                "{} does not hold role `{}` in the inventory",
                p.approver, p.role
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> ApprovalPayload {
        ApprovalPayload {
            format: APPROVAL_FORMAT.into(),
            plan_id: "p1".into(),
            plan_sha256: "ab".into(),
            gate: "production".into(),
            approver: "Dana Whitfield".into(),
            role: "change-board".into(),
            comment: Some("CAB-2291".into()),
            signed_at: "2026-11-22T10:00:00Z".into(),
        }
    }

    fn dana(key: &SigningKey) -> Approver {
        Approver {
            name: "Dana Whitfield".into(),
            roles: vec!["change-board".into()],
            public_key: public_key_text(&key.verifying_key()),
            signing_key: None,
        }
    }

    #[test]
    fn signed_approvals_verify_and_any_change_breaks_them() {
        let key = parse_signing_key(&signing_key_text(&[7; 32])).unwrap();
        let a = sign(payload(), &key);
        let inv = [dana(&key)];
        verify(&a, Some(&inv)).unwrap();
        let mut changed = a.clone();
        changed.payload.gate = "canary".into();
        assert!(
            verify(&changed, None)
                .unwrap_err()
                .contains("does not match")
        );
        let other = parse_signing_key(&signing_key_text(&[8; 32])).unwrap();
        // Re-signed by someone else with their own key: the signature holds, the inventory not.
        let forged = sign(payload(), &other);
        verify(&forged, None).unwrap();
        assert!(
            verify(&forged, Some(&inv))
                .unwrap_err()
                .contains("not Dana Whitfield's public key")
        );
        let mut wrong_role = payload();
        wrong_role.role = "release-manager".into();
        let a = sign(wrong_role, &key);
        assert!(
            verify(&a, Some(&inv))
                .unwrap_err()
                .contains("does not hold role")
        );
    }

    #[test]
    fn keys_are_checked_when_parsed() {
        assert!(parse_public_key("AAAA").is_err());
        assert!(
            parse_public_key("ed25519:AAAA")
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!(parse_signing_key("nope").is_err());
    }
}
