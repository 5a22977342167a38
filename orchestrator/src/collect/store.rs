//! The collector's directory: each site's copy of its agent's ledger (appended only when the
//! shipped entries chain to what is held), its last status report, and the tokens that say
//! which agent may write which site.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{ACK_FORMAT, Ack, AgentStatus, Report, valid_site};
use crate::ledger::{Entry, GENESIS};

/// Why a report was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The report starts after what is held: resend from `held`.
    #[error(
        "entries from #{from} leave a gap: the collector holds #{held} entries; resend from there"
    )]
    Gap { from: u64, held: u64 },
    /// The agent's entry #held-1 is not the one collected: its ledger was rewritten.
    #[error("the agent's ledger no longer matches what was collected at entry #{seq}: {why}")]
    Fork { seq: u64, why: String },
    /// The shipped entries do not form a chain.
    #[error("the shipped entries are not a valid chain: {0}")]
    Tamper(String),
    #[error("{0}")]
    Bad(String),
    #[error("the collector could not store the report: {0}")]
    Io(#[from] std::io::Error),
}

/// What the collector keeps of a site's last report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteRecord {
    pub site: String,
    /// The collector's clock when the report arrived (RFC 3339).
    pub received_at: String,
    pub peer: String,
    pub held: u64,
    pub head: Option<String>,
    pub status: AgentStatus,
}

pub struct Store {
    dir: PathBuf,
    sites: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Store {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("sites"))?;
        Ok(Self {
            dir: dir.to_owned(),
            sites: Mutex::default(),
        })
    }

    fn site_dir(&self, site: &str) -> PathBuf {
        self.dir.join("sites").join(site)
    }

    /// Takes a report of `site` (the site its token is for): the new entries appended when they
    /// chain to what is held, the status recorded; answers with what is held now.
    pub fn receive(&self, site: &str, report: &Report, peer: &str) -> Result<Ack, Refusal> {
        if report.site != site || !valid_site(site) {
            return Err(Refusal::Bad(format!(
                "the report is for site `{}`, the token for `{site}`",
                report.site
            )));
        }
        let guard = self
            .sites
            .lock()
            .expect("sites")
            .entry(site.into())
            .or_default()
            .clone();
        let _one_at_a_time = guard.lock().expect("site");
        let dir = self.site_dir(site);
        std::fs::create_dir_all(&dir)?;
        let ledger = dir.join("ledger.jsonl");
        let (held, head) = head(&ledger)?;
        let fresh = new_lines(report, held, head.as_deref())?;
        if !fresh.is_empty() {
            let prev = head.as_deref().unwrap_or(GENESIS);
            let r = crate::ledger::verify_from(fresh.as_bytes(), held, prev, &mut |_| {});
            if let Some(t) = r.tamper {
                return Err(Refusal::Tamper(t.to_string()));
            }
            append(&ledger, fresh.as_bytes())?;
        }
        let (held, head) = self::head(&ledger)?;
        let record = SiteRecord {
            site: site.into(),
            received_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            peer: peer.into(),
            held,
            head: head.clone(),
            status: report.status.clone(),
        };
        let json = serde_json::to_vec_pretty(&record).expect("records serialize");
        crate::durable::write_atomic(&dir.join("status.json"), &json)?;
        Ok(Ack {
            format: ACK_FORMAT.into(),
            held,
            head,
        })
    }

    /// Every site's last report, by site.
    pub fn records(&self) -> std::io::Result<BTreeMap<String, SiteRecord>> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(self.dir.join("sites"))? {
            let path = e?.path().join("status.json");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let r: SiteRecord = serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            out.insert(r.site.clone(), r);
        }
        Ok(out)
    }

    /// The collected ledger of a site.
    pub fn ledger_path(&self, site: &str) -> PathBuf {
        self.site_dir(site).join("ledger.jsonl")
    }
}

/// The lines of `report` the collector does not hold yet; the one before them, when shipped
/// again, must be the entry held last.
fn new_lines<'a>(report: &'a Report, held: u64, head: Option<&str>) -> Result<&'a str, Refusal> {
    if report.from > held {
        return Err(Refusal::Gap {
            from: report.from,
            held,
        });
    }
    if !report.lines.is_empty() && !report.lines.ends_with('\n') {
        return Err(Refusal::Bad("the last shipped line has no newline".into()));
    }
    let mut rest = report.lines.as_str();
    for seq in report.from..held {
        let Some((line, tail)) = rest.split_once('\n') else {
            return Ok("");
        };
        if seq + 1 == held {
            let shipped: Entry = serde_json::from_str(line).map_err(|e| Refusal::Fork {
                seq,
                why: e.to_string(),
            })?;
            // Its own hash must hold too: the same hash over other content is not the entry.
            if Some(shipped.hash.as_str()) != head || shipped.compute_hash() != shipped.hash {
                return Err(Refusal::Fork {
                    seq,
                    why: format!(
                        "shipped hash {}, collected {}",
                        shipped.hash,
                        head.unwrap_or("nothing")
                    ),
                });
            }
        }
        rest = tail;
    }
    Ok(rest)
}

/// How many entries the file holds and the last one's hash (a torn tail is refused: the
/// collector's own copy must be whole).
fn head(path: &Path) -> Result<(u64, Option<String>), Refusal> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, None)),
        Err(e) => return Err(e.into()),
    };
    let t = crate::ledger::file::tail(&mut f)?;
    if t.torn > 0 {
        return Err(Refusal::Bad(format!(
            "{}: the collected copy ends in a torn line; check it with `ferry ledger verify`",
            path.display()
        )));
    }
    match t.last_line {
        None => Ok((0, None)),
        Some(line) => {
            let e: Entry = serde_json::from_str(&line)
                .map_err(|e| Refusal::Bad(format!("{}: last line: {e}", path.display())))?;
            Ok((e.seq + 1, Some(e.hash)))
        }
    }
}

fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags_nofollow()
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    if let Some(d) = path.parent() {
        crate::durable::sync_dir(d)?;
    }
    Ok(())
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW).mode(0o640)
    }
}

/// The tokens file: one `SITE sha256:HEX` per line (`#` comments); a token is 32 random bytes
/// in hex, and only its digest is kept here.
pub fn load_tokens(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = HashMap::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line
            .split_once(' ')
            .map(|(s, d)| (s, d.trim().strip_prefix("sha256:")))
        {
            Some((site, Some(d))) if valid_site(site) && d.len() == 64 => {
                out.insert(d.to_ascii_lowercase(), site.to_owned());
            }
            _ => problems.push(format!(
                "{}:{}: expected `SITE sha256:HEX` (a site id of letters, digits, `.`, `_`, `-`)",
                path.display(),
                i + 1
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("\n"))
    }
}

/// A new token for `site`: its digest added to the tokens file, the token itself returned.
pub fn enroll(tokens: &Path, site: &str) -> Result<String, String> {
    if !valid_site(site) {
        return Err(format!("site `{site}`: use letters, digits, `.`, `_`, `-`"));
    }
    if tokens.exists() && load_tokens(tokens)?.values().any(|s| s == site) {
        return Err(format!(
            "{}: site `{site}` has a token already; remove its line to replace it",
            tokens.display()
        ));
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
    let token = hex::encode(raw);
    let line = format!(
        "{site} sha256:{}\n",
        crate::load::sha256_hex(token.as_bytes())
    );
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(tokens)
        .map_err(|e| format!("{}: {e}", tokens.display()))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tokens.display()))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Event, Ledger, NewEntry};

    /// An agent's ledger of `n` entries, as lines.
    fn agent(dir: &Path, n: usize) -> Vec<String> {
        let ledger = Ledger::new(dir.join("agent.jsonl"));
        for i in 0..n {
            ledger
                .append(
                    NewEntry::new("agent", Event::OperationFinished).message(format!("pass {i}")),
                )
                .unwrap();
        }
        let text = std::fs::read_to_string(dir.join("agent.jsonl")).unwrap();
        text.split_inclusive('\n').map(str::to_owned).collect()
    }

    fn report(from: usize, lines: &[String]) -> Report {
        Report {
            format: super::super::REPORT_FORMAT.into(),
            site: "clinic-a".into(),
            status: AgentStatus::default(),
            from: from as u64,
            lines: lines.concat(),
        }
    }

    #[test]
    fn each_entry_is_taken_once_and_gaps_forks_and_broken_chains_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("collector")).unwrap();
        let lines = agent(dir.path(), 6);
        let take = |from: usize, to: usize| {
            store.receive("clinic-a", &report(from, &lines[from..to]), "test")
        };
        assert_eq!(take(0, 3).unwrap().held, 3);
        // Shipped again (a lost acknowledgement) with more: only the new ones are appended.
        assert_eq!(take(1, 5).unwrap().held, 5);
        assert!(matches!(take(5, 6), Ok(Ack { held: 6, .. })));
        let collected = std::fs::read_to_string(store.ledger_path("clinic-a")).unwrap();
        assert_eq!(collected, lines.concat());
        // Nothing new: still a status report, nothing appended.
        assert_eq!(take(5, 6).unwrap().held, 6);
        // A report that starts after what is held.
        let more = agent(dir.path(), 3);
        assert!(matches!(
            take_from(&store, 7, &more[7..8]),
            Err(Refusal::Gap { from: 7, held: 6 })
        ));
        // The entry held last, shipped again with other content: a rewritten ledger.
        let mut forged = more[5].clone();
        forged = forged.replace("pass 5", "pass X");
        assert!(matches!(
            take_from(&store, 5, &[forged, more[6].clone()]),
            Err(Refusal::Fork { seq: 5, .. })
        ));
        // New entries that do not chain.
        let edited = more[6].replace("pass 0", "pass Y");
        assert!(matches!(
            take_from(&store, 6, &[edited]),
            Err(Refusal::Tamper(_))
        ));
        // A token for one site cannot write another's.
        assert!(matches!(
            store.receive("clinic-b", &report(0, &lines[..1]), "test"),
            Err(Refusal::Bad(_))
        ));
        assert_eq!(
            std::fs::read_to_string(store.ledger_path("clinic-a")).unwrap(),
            collected
        );
    }

    fn take_from(store: &Store, from: usize, lines: &[String]) -> Result<Ack, Refusal> {
        store.receive("clinic-a", &report(from, lines), "test")
    }

    #[test]
    fn tokens_are_kept_as_digests_one_site_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let t = enroll(&path, "clinic-a").unwrap();
        let known = load_tokens(&path).unwrap();
        assert_eq!(known[&crate::load::sha256_hex(t.as_bytes())], "clinic-a");
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&t));
        assert!(
            enroll(&path, "clinic-a")
                .unwrap_err()
                .contains("has a token already")
        );
        assert!(enroll(&path, "../etc").is_err());
        std::fs::write(&path, "clinic-a sha256:abc\n# fine\nbad\n").unwrap();
        let e = load_tokens(&path).unwrap_err();
        assert!(e.contains(":1:") && e.contains(":3:"), "{e}");
    }
}
