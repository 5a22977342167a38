//! Catalog comparison: the objects of the source and of the target after the schema is loaded
//! (columns and their types, constraints, indexes, sequences, grants), each as one definition
//! string, and every object missing, changed or extra named as a finding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One object of a database's catalog as ferry compares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CatalogItem {
    /// `column`, `constraint`, `index`, `sequence`, `grant`, `table`, `view`, `extension`...
    pub kind: String,
    /// Qualified name (`public.orders.total`).
    pub name: String,
    /// What must be equal (`numeric(12,2) NOT NULL`, `CHECK ((total >= 0))`...).
    pub definition: String,
}

/// A difference found before any data moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub check: String,
    pub message: String,
}

impl Finding {
    pub fn new(check: &str, message: impl Into<String>) -> Self {
        Finding {
            check: check.into(),
            message: message.into(),
        }
    }
}

/// `WHAT found N problem(s):` and every finding on its own line.
pub fn findings_text(what: &str, findings: &[Finding]) -> String {
    format!(
        "{what} found {} problem(s):\n  - {}",
        findings.len(),
        findings
            .iter()
            .map(|f| format!("[{}] {}", f.check, f.message))
            .collect::<Vec<_>>()
            .join("\n  - ")
    )
}

/// Objects of the kinds given that the target lacks, has differently, or has in addition.
pub fn compare_catalogs(
    source: &[CatalogItem],
    target: &[CatalogItem],
    kinds: &[&str],
) -> Vec<Finding> {
    let index = |items: &[CatalogItem]| -> BTreeMap<(String, String), String> {
        items
            .iter()
            .filter(|i| kinds.contains(&i.kind.as_str()))
            .map(|i| ((i.kind.clone(), i.name.clone()), i.definition.clone()))
            .collect()
    };
    let (s, t) = (index(source), index(target));
    let mut out = Vec::new();
    for ((kind, name), def) in &s {
        match t.get(&(kind.clone(), name.clone())) {
            None => out.push(Finding::new(
                "catalog",
                format!("{kind} {name} is missing on the target (source: {def})"),
            )),
            Some(d) if d != def => out.push(Finding::new(
                "catalog",
                format!("{kind} {name} differs: source `{def}`, target `{d}`"),
            )),
            Some(_) => {}
        }
    }
    for ((kind, name), def) in &t {
        if !s.contains_key(&(kind.clone(), name.clone())) {
            out.push(Finding::new(
                "catalog",
                format!("{kind} {name} is on the target only ({def})"),
            ));
        }
    }
    out
}

/// What the target's server offers of an extension: its default and installed versions.
pub type Available = BTreeMap<String, (Option<String>, Option<String>)>;

/// Each extension installed on the source (but PL/pgSQL, always there) must be available on
/// the target (`place`), at the source's version.
pub fn extension_findings(
    installed: &BTreeMap<String, String>,
    available: &Available,
    place: &str,
) -> Vec<Finding> {
    let mut f = Vec::new();
    for (name, version) in installed.iter().filter(|(n, _)| n.as_str() != "plpgsql") {
        match available.get(name) {
            None => f.push(Finding::new(
                "extension",
                format!(
                    "extension `{name}` ({version} on the source) is not available on the target server ({place})"
                ),
            )),
            Some((default, installed)) => {
                let on_target = installed.as_ref().or(default.as_ref());
                if on_target != Some(version) {
                    f.push(Finding::new(
                        "extension",
                        format!(
                            "extension `{name}` is {version} on the source, {} on the target",
                            on_target.map_or("none", String::as_str)
                        ),
                    ));
                }
            }
        }
    }
    f
}
