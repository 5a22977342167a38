//! The `ferry` binary: parse arguments, install logging, run, exit with the returned code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before any TLS client exists (Docker over TLS, the AWS SDK): see the function's docs.
    ferry::install_crypto_provider();
    let cli = ferry::cli::Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    ferry::cli::run(cli)
}
