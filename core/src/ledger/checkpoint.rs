//! Signed checkpoints of a ledger's head: the sequence number and hash of its last entry at a
//! time, signed with Ed25519 and kept elsewhere too (a file, an object store). A hash chain
//! shows any change to a part of the history, but not a rewrite of the whole of it by whoever
//! can write the store; a checkpoint kept out of their reach does. Pure: signing and checking.

use serde::{Deserialize, Serialize};

use crate::approval::{public_key_text, signature_holds};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};

pub const CHECKPOINT_FORMAT: &str = "ferry.checkpoint.v1";

/// What a checkpoint signs: the ledger's head at `seq`, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPayload {
    pub format: String,
    pub seq: u64,
    pub hash: String,
    pub time: String,
}

/// A signed checkpoint, as the `checkpoint` entry's detail and as one line of a checkpoints
/// file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    pub payload: CheckpointPayload,
    /// `ed25519:BASE64` of the key that signed.
    pub public_key: String,
    pub signature: String,
}

pub fn sign(payload: CheckpointPayload, key: &SigningKey) -> SignedCheckpoint {
    let bytes = serde_json::to_vec(&payload).expect("payloads serialize");
    SignedCheckpoint {
        public_key: public_key_text(&key.verifying_key()),
        signature: B64.encode(key.sign(&bytes).to_bytes()),
        payload,
    }
}

/// The signature is the embedded key's over the payload, and with `trusted`, that key is the
/// trusted one (`ed25519:BASE64`).
pub fn check_signature(c: &SignedCheckpoint, trusted: Option<&str>) -> Result<(), String> {
    if let Some(t) = trusted
        && t.trim() != c.public_key
    {
        return Err(format!(
            "signed by {}, not the trusted key {t}",
            c.public_key
        ));
    }
    let bytes = serde_json::to_vec(&c.payload).expect("payloads serialize");
    if signature_holds(&c.public_key, &c.signature, &bytes)? {
        Ok(())
    } else {
        Err("the signature does not match the checkpoint".to_owned())
    }
}

/// A checkpoint against the ledger: `hash_at` gives the hash of the entry at a sequence
/// number (none past the end); `last` is the ledger's last sequence number.
pub fn check_against(c: &SignedCheckpoint, hash_at: Option<&str>, last: u64) -> Result<(), String> {
    let p = &c.payload;
    match hash_at {
        None => Err(format!(
            "the checkpoint of {} holds entry {} but the ledger ends at entry {last}: entries were removed from the end",
            p.time, p.seq
        )),
        Some(h) if h != p.hash => Err(format!(
            "entry {} has hash {h} but the checkpoint of {} signed {}: the history up to it was rewritten",
            p.seq, p.time, p.hash
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_and_names_a_rewrite_a_truncation_and_a_stranger() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let c = sign(
            CheckpointPayload {
                format: CHECKPOINT_FORMAT.into(),
                seq: 12,
                hash: "aa".into(),
                time: "2026-12-02T10:00:00Z".into(),
            },
            &key,
        );
        check_signature(&c, None).unwrap();
        check_signature(&c, Some(&c.public_key)).unwrap();
        let other = public_key_text(&SigningKey::from_bytes(&[8; 32]).verifying_key());
        assert!(
            check_signature(&c, Some(&other))
                .unwrap_err()
                .contains("not the trusted key")
        );
        let mut forged = c.clone();
        forged.payload.hash = "bb".into();
        assert!(
            check_signature(&forged, None)
                .unwrap_err()
                .contains("does not match")
        );
        check_against(&c, Some("aa"), 20).unwrap();
        assert!(
            check_against(&c, Some("cc"), 20)
                .unwrap_err()
                .contains("was rewritten")
        );
        assert!(
            check_against(&c, None, 9)
                .unwrap_err()
                .contains("ledger ends at entry 9")
        );
    }
}
