//! What `--output` accepts, and the printer it selects (`crate::printer`).

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
