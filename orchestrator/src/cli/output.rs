//! Result shapes for `--output json` (stable, versioned) and error printing.

use serde::Serialize;

use super::CliError;
use crate::executor::{ApplyOutcome, StepStatus};
use crate::load::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

/// What `--output` accepts: `markdown` is a summary of `ferry plan` (for a pull-request
/// comment or a job summary); every other command prints human text or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputArg {
    Human,
    Json,
    Markdown,
}

/// Version of every JSON document ferry prints; bumped on incompatible change.
pub const JSON_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct ErrorReport<'a> {
    pub format: &'static str,
    pub version: u32,
    pub exit_code: u8,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<&'a [Problem]>,
}

pub fn error(format: OutputFormat, e: &CliError, code: u8) {
    match format {
        OutputFormat::Human => {
            let mut msg = format!("error: {e}");
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            if let CliError::Invalid(d) = e {
                msg = d.to_string();
            }
            eprintln!("{msg}");
        }
        OutputFormat::Json => {
            let mut text = match e {
                CliError::Invalid(d) => format!("{} problem(s) found", d.problems.len()),
                other => other.to_string(),
            };
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                text.push_str(&format!(": {s}"));
                src = s.source();
            }
            let problems = match e {
                CliError::Invalid(d) => Some(d.problems.as_slice()),
                _ => None,
            };
            let report = ErrorReport {
                format: "ferry.error",
                version: JSON_VERSION,
                exit_code: code,
                error: text,
                problems,
            };
            println!(
                "{}",
                serde_json::to_string(&report).expect("reports serialize")
            );
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ValidateReport<'a> {
    pub format: &'static str,
    pub version: u32,
    pub valid: bool,
    pub problems: &'a [Problem],
}

#[derive(Debug, Serialize)]
pub struct PlanStepReport<'a> {
    pub id: &'a str,
    pub wave: &'a str,
    pub target: &'a str,
    pub from: Option<&'a str>,
    pub to: &'a str,
    pub depends_on: &'a [String],
    /// Kubernetes steps: the objects added, changed (with fields) and removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<&'a [crate::kubernetes::diff::ObjectChange]>,
}

#[derive(Debug, Serialize)]
pub struct PlanReport<'a> {
    pub format: &'static str,
    pub version: u32,
    pub plan_id: &'a str,
    pub plan_file: String,
    pub name: &'a str,
    pub changes: usize,
    pub unchanged: usize,
    pub steps: Vec<PlanStepReport<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ApplyStepReport<'a> {
    pub id: &'a str,
    pub target: &'a str,
    pub from: Option<&'a str>,
    pub to: &'a str,
    pub status: StepStatus,
}

#[derive(Debug, Serialize)]
pub struct ApplyReport<'a> {
    pub format: &'static str,
    pub version: u32,
    pub plan_id: &'a str,
    pub exit_code: u8,
    #[serde(flatten)]
    pub outcome: &'a ApplyOutcome,
    pub steps: Vec<ApplyStepReport<'a>>,
    pub ledger: String,
    pub ledger_head: Option<String>,
}
