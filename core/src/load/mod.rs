//! Reading inventory and plan files: YAML text to model values, with every problem located.
//!
//! The only IO here is reading the named files ([`read_source`]); parsing and validation of
//! already-read text ([`parse_inventory`], [`parse_release_plan`]) are pure.

mod diagnostic;
mod source_map;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

pub use diagnostic::{Diagnostics, Problem};
pub use source_map::SourceMap;

use crate::model::{Inventory, ReleasePlan, Runbook};

/// A file as it was read: its path, text and SHA-256.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    pub sha256: String,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        let text = text.into();
        let sha256 = sha256_hex(text.as_bytes());
        Self {
            path: path.into(),
            text,
            sha256,
        }
    }

    pub fn display_path(&self) -> String {
        self.path.display().to_string()
    }
}

/// A parsed document with the map from field paths to its source locations.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub value: T,
    pub source: SourceFile,
    pub map: SourceMap,
}

impl<T> Loaded<T> {
    /// A problem located at `path` in this document (or at its nearest located ancestor).
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        let (line, column) = self.map.locate(path);
        Problem {
            file: self.source.display_path(),
            line,
            column,
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a file; a read failure is reported as a problem of that file.
pub fn read_source(path: &Path) -> Result<SourceFile, Problem> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(SourceFile::new(path, text)),
        Err(e) => Err(Problem {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read file: {e}"),
        }),
    }
}

pub fn parse_inventory(source: SourceFile) -> Result<Loaded<Inventory>, Diagnostics> {
    parse(source)
}

pub fn parse_release_plan(source: SourceFile) -> Result<Loaded<ReleasePlan>, Diagnostics> {
    parse(source)
}

pub fn parse_migration_plan(
    source: SourceFile,
) -> Result<Loaded<crate::model::MigrationPlan>, Diagnostics> {
    parse(source)
}

/// The `kind:` a plan file declares, if it can be read: which loader takes the file.
pub fn plan_kind(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: Option<String>,
    }
    serde_saphyr::from_str::<Kind>(text).ok()?.kind
}

pub fn parse_runbook(source: SourceFile) -> Result<Loaded<Runbook>, Diagnostics> {
    parse(source)
}

/// Any YAML document of ferry's (an agent's configuration, say), located errors included.
pub fn parse_document<T: DeserializeOwned>(source: SourceFile) -> Result<Loaded<T>, Diagnostics> {
    parse(source)
}

fn parse<T: DeserializeOwned>(source: SourceFile) -> Result<Loaded<T>, Diagnostics> {
    let options = serde_saphyr::options! {
        with_snippet: false,
    };
    match serde_saphyr::from_str_with_options::<T>(&source.text, options) {
        Ok(value) => {
            let map = SourceMap::build(&source.text);
            Ok(Loaded { value, source, map })
        }
        Err(e) => {
            let (line, column) = e
                .location()
                .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
            let map = SourceMap::build(&source.text);
            let path = map.path_at(line, column).unwrap_or_default();
            Err(Diagnostics::from(vec![Problem {
                file: source.display_path(),
                line,
                column,
                path,
                message: clean_serde_message(&e.to_string()),
            }]))
        }
    }
}

/// serde-saphyr appends its own " at line L, column C" to messages; we print the location in
/// front instead, so drop the suffix.
fn clean_serde_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    }
}
