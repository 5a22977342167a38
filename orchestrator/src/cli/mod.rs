//! Command-line interface: argument parsing, dispatch, and mapping every failure to an exit code.
//!
//! Results go to stdout (human text, or one JSON document with `--output json`); progress and
//! logs go to stderr.

mod agent_cmd;
mod agent_self;
mod apply;
mod approve;
mod backout;
mod demo;
mod dibr_cmd;
mod fleet_cmd;
#[cfg(feature = "ssh")]
mod hosts;
mod kube_cmd;
mod ledger_cmd;
mod migrate_cmd;
mod output;
mod plan_cmd;
#[cfg(feature = "aws")]
mod rds_cmd;
mod state_cmd;
mod versions_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit;

pub use output::{OutputArg, OutputFormat};

use crate::printer::Printer;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Plan, apply and audit deployments to regulated sites",
    max_term_width = 100
)]
pub struct Cli {
    /// Output format for results on stdout (`markdown`: `ferry plan` only).
    #[arg(long, global = true, value_enum, default_value_t = OutputArg::Human)]
    pub output: OutputArg,
    /// Directory for the ledger, the apply lock and saved back-out plans.
    #[arg(long, global = true, env = "FERRY_STATE_DIR", default_value = ".ferry")]
    pub state_dir: PathBuf,
    /// Ledger file (default: STATE_DIR/ledger.jsonl).
    #[arg(long, global = true, env = "FERRY_LEDGER")]
    pub ledger: Option<PathBuf>,
    /// Team state: the ledger and the apply lock in PostgreSQL, shared by every operator and
    /// CI runner (`postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=CA.pem&password=env:NAME&schema=ferry`;
    /// set it up with `ferry state init`). Default: the state directory.
    #[arg(long, global = true, env = "FERRY_STATE")]
    pub state: Option<String>,
    /// Who is acting, as recorded in the ledger (default: the OS user).
    #[arg(long, global = true, env = "FERRY_ACTOR")]
    pub actor: Option<String>,
    /// More logging on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an inventory and release plans; report every problem with file, line and field.
    Validate {
        #[arg(short, long)]
        inventory: PathBuf,
        plans: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the inventory and plan formats.
    Schema {
        #[arg(value_enum)]
        which: Option<SchemaWhich>,
    },
    /// Observe the targets and write a saved plan. Exit 0: no changes, 2: changes present.
    Plan {
        #[arg(short, long)]
        inventory: PathBuf,
        plan: PathBuf,
        /// Where to write the saved plan.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Carry out exactly a saved plan.
    Apply {
        /// The saved plan; with --auto-approve, the release or migration plan (YAML).
        plan: PathBuf,
        /// Plan and apply in one run, with no review in between (for pipelines that review
        /// the inputs instead): the saved plan is written to --out and recorded exactly as
        /// `ferry plan` does, then carried out through the connections that observed it.
        #[arg(long, requires_all = ["inventory", "out"], conflicts_with_all = ["resume", "trust_plan_file"])]
        auto_approve: bool,
        /// With --auto-approve: the inventory.
        #[arg(short, long, requires = "auto_approve")]
        inventory: Option<PathBuf>,
        /// With --auto-approve: where to write the saved plan.
        #[arg(short = 'o', long = "out", requires = "auto_approve")]
        out: Option<PathBuf>,
        /// Continue a plan that was interrupted or halted, skipping completed steps.
        #[arg(long)]
        resume: bool,
        /// Lease of the apply lock; a crashed holder's lock can be taken over after it.
        #[arg(long, default_value_t = 30)]
        lock_lease_seconds: u64,
        /// Confirm a manual step (runbooks): the step is recorded as confirmed by you.
        #[arg(long, value_name = "STEP")]
        confirm: Vec<String>,
        /// Apply a saved plan this state directory's ledger never recorded (made with another
        /// state directory); recorded as `plan_trusted`. A plan whose bytes differ from what
        /// was recorded is refused even so.
        #[arg(long)]
        trust_plan_file: bool,
        /// When a site's maintenance window is closed, wait for it to open (Ctrl-C stops).
        #[arg(long, conflicts_with = "outside_window")]
        wait: bool,
        /// Start steps on sites whose maintenance window is closed; needs --reason, recorded
        /// in the ledger with the actor.
        #[arg(long, requires = "reason")]
        outside_window: bool,
        /// Why the window is overridden (recorded).
        #[arg(long, requires = "outside_window", value_name = "TEXT")]
        reason: Option<String>,
    },
    /// A migration plan's evidence: verify again, or report from the ledger.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Return an app on a site to its previous recorded release.
    Backout {
        #[arg(short, long)]
        inventory: PathBuf,
        #[arg(long)]
        app: String,
        #[arg(long)]
        site: String,
        /// Go back to this release instead of the previous recorded one.
        #[arg(long)]
        to: Option<String>,
        /// Show the back-out plan without applying it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Kubernetes: return an app on a site to a revision of its release history (kept in the
    /// cluster), or remove it (`--uninstall`, e.g. after a failed first install).
    Rollback {
        app: String,
        #[arg(short, long)]
        inventory: PathBuf,
        #[arg(long)]
        site: String,
        /// Revision to return to (see `ferry history`).
        #[arg(
            long,
            required_unless_present = "uninstall",
            conflicts_with = "uninstall"
        )]
        to: Option<u32>,
        /// Delete every object of the app that ferry made (namespaces and release records stay).
        #[arg(long)]
        uninstall: bool,
        /// Show the plan without applying it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Kubernetes tools.
    Kube {
        #[command(subcommand)]
        command: KubeCommand,
    },
    /// Kubernetes: the release history an app has in its cluster, one line per revision.
    History {
        app: String,
        #[arg(short, long)]
        inventory: PathBuf,
        #[arg(long)]
        site: String,
    },
    /// Approve a gate of a saved plan, signed with your key; recorded in the ledger.
    Approve {
        plan: PathBuf,
        #[arg(long)]
        gate: String,
        /// The approver, by name as in the inventory's `approvers`.
        #[arg(long = "as", value_name = "PERSON")]
        person: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Write the DIBR guide (Markdown + HTML) of a saved plan, filled from the ledger.
    Dibr {
        #[arg(short, long)]
        inventory: PathBuf,
        plan: PathBuf,
        /// Directory for dibr.md, dibr.html and the revision history kept across runs.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Also print dibr-letter.pdf and dibr-a4.pdf (headless Chromium).
        #[arg(long)]
        pdf: bool,
    },
    /// Make an Ed25519 signing key for approvals; prints the public key for the inventory.
    Keygen {
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Version catalogs: revisions, active majors, trash and purge (apps with `lifecycle`).
    Versions {
        #[command(subcommand)]
        command: versions_cmd::VersionsCommand,
    },
    /// Publish the desired state of each site (its apps at the inventory's versions) to a
    /// signed channel (TUF metadata: versions that only grow, an expiry) that agents pull.
    Publish(agent_cmd::PublishArgs),
    /// The central collector of agents' ledgers and reports.
    Collect {
        #[command(subcommand)]
        command: fleet_cmd::CollectCommand,
    },
    /// The agents' fleet as the collector sees it.
    Fleet {
        #[command(subcommand)]
        command: fleet_cmd::FleetCommand,
    },
    /// The pull-mode agent of an on-premise server.
    Agent {
        #[command(subcommand)]
        command: agent_cmd::AgentCommand,
    },
    /// The state store: set up a PostgreSQL one, move a state directory's ledger into it.
    State {
        #[command(subcommand)]
        command: state_cmd::StateCommand,
    },
    /// The apply lock: who holds it; break it (recorded).
    Lock {
        #[command(subcommand)]
        command: state_cmd::LockCommand,
    },
    /// Inspect and verify the audit ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Manage trusted SSH host keys.
    #[cfg(feature = "ssh")]
    Hosts {
        #[command(subcommand)]
        command: HostsCommand,
    },
    /// RDS snapshots of an inventory database.
    #[cfg(feature = "aws")]
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// On-call runbooks (YAML in `runbooks/`), run through the plan/apply engine and ledger.
    #[cfg(feature = "aws")]
    Runbook {
        #[command(subcommand)]
        command: RunbookCommand,
    },
    /// Plan and apply the example releases of inventories/local.yaml, then verify the ledger.
    Demo {
        /// Repository root holding inventories/ and plans/.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Print a shell completion script (e.g. `ferry completions bash > /etc/bash_completion.d/ferry`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (ferry.1 and one per command) into a directory.
    Man {
        #[arg(short = 'o', long = "out", default_value = "man")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Verify a migration again, alone (read-only on both sides): every chunk's rows and
    /// SHA-256 on both databases, every copied object read back against the manifest;
    /// differences named by key. Recorded. Exit 5 when a difference no rule allows is found.
    Verify { plan: PathBuf },
    /// What the ledger holds of a migration: steps, write fence, rows and chunks copied per
    /// table, the verification with both hashes and every difference, sequences, each bucket
    /// copy's manifest root and verification.
    Report { plan: PathBuf },
    /// A bucket copy's manifest, rebuilt from the ledger's records: one line per object
    /// (`SHA256 SIZE "KEY"`), sorted; its SHA-256 is the root the copy recorded.
    Manifest {
        plan: PathBuf,
        /// The copy's name (`buckets[].name` in the plan).
        copy: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Check the hash chain; name the first entry altered, removed or reordered.
    Verify {
        /// Also require the chain to end at this hash (detects truncation).
        #[arg(long)]
        expect_head: Option<String>,
        /// Check approvals against this inventory's approvers (keys and roles), not only their
        /// signatures.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
        /// Also check the chain against signed checkpoints kept outside the ledger (the file
        /// `ledger checkpoint --out` appends to): finds a rewrite of the whole history.
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
        /// The public key (`ed25519:...`) the checkpoints must be signed with.
        #[arg(long, value_name = "KEY", requires = "checkpoints")]
        checkpoint_key: Option<String>,
    },
    /// Sign the head of the ledger (which must verify), record the checkpoint, and append it
    /// to a file kept where the ledger's keeper cannot rewrite it.
    Checkpoint {
        /// The signing key: `file:PATH` or `env:NAME` of a `ferry keygen` key.
        #[arg(long)]
        key: String,
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
    },
    /// List entries, filtered.
    Show {
        #[command(flatten)]
        filter: EntryFilter,
    },
    /// Export entries for auditors (CSV or one JSON document), with the chain's verification.
    Export {
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write to this file instead of stdout.
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
        #[command(flatten)]
        filter: EntryFilter,
    },
    /// Repair a torn last line (a write cut short by a crash or a full disk): a whole entry
    /// missing its newline is completed; other torn bytes are moved to LEDGER.torn-TIME and the
    /// file cut back to its last full line. Recorded as `ledger_repaired`. Refuses a ledger
    /// that does not verify before the torn line: repair never hides tampering.
    Repair {
        /// Why (recorded with the repair).
        #[arg(long)]
        reason: String,
    },
}

/// Which entries to list or export.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EntryFilter {
    #[arg(long)]
    pub plan: Option<String>,
    #[arg(long)]
    pub site: Option<String>,
    #[arg(long)]
    pub app: Option<String>,
    #[arg(long)]
    pub event: Option<String>,
    /// RFC 3339 time; entries at or after it.
    #[arg(long)]
    pub since: Option<String>,
    /// RFC 3339 time; entries before it.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Show an endpoint's host key fingerprint and record it in its known_hosts once confirmed.
    Trust {
        endpoint: String,
        #[arg(short, long)]
        inventory: PathBuf,
        /// Confirm without a prompt: the fingerprint you checked on the endpoint (SHA256:...).
        #[arg(long)]
        fingerprint: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Every snapshot of the database's instance, oldest first.
    List {
        database: String,
        #[arg(short, long)]
        inventory: PathBuf,
        /// AWS Backup's recovery points of the instance too (SnapshotType `awsbackup`).
        #[arg(long)]
        aws_backup: bool,
    },
    /// Delete ferry's own snapshots of the instance beyond the newest N (recorded); others'
    /// snapshots, automated ones and AWS Backup's are never touched.
    Prune {
        database: String,
        #[arg(short, long)]
        inventory: PathBuf,
        /// How many to keep (default: the database's `snapshot_retention`).
        #[arg(long)]
        keep: Option<u32>,
        /// Say what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Take a snapshot now and wait until it is available (recorded in the ledger).
    Create {
        database: String,
        #[arg(short, long)]
        inventory: PathBuf,
        /// Snapshot id (default `ferry-INSTANCE-YYYYMMDD-HHMMSS`).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value_t = 3600)]
        timeout_seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunbookCommand {
    List {
        #[arg(long, default_value = "runbooks")]
        dir: PathBuf,
    },
    Show {
        name: String,
        #[arg(long, default_value = "runbooks")]
        dir: PathBuf,
    },
    /// Plan the runbook (printed), then apply it; `--plan-only` stops after the plan.
    Run {
        name: String,
        #[arg(short, long)]
        inventory: PathBuf,
        #[arg(long, default_value = "runbooks")]
        dir: PathBuf,
        /// `NAME=VALUE`, repeated.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Where the plan is written (default: STATE_DIR/runbooks/NAME-ID.json).
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
        #[arg(long)]
        plan_only: bool,
        /// Confirm a manual step in advance (by its runbook step id).
        #[arg(long, value_name = "STEP")]
        confirm: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaWhich {
    Inventory,
    Plan,
    /// A migration plan (`kind: migration`).
    Migration,
}

pub use crate::engine::Error as CliError;

#[derive(Debug, Subcommand)]
pub enum KubeCommand {
    /// Print the least RBAC (Namespaces, a ClusterRole, a Role per namespace, their bindings)
    /// that ferry needs for the inventory's Kubernetes apps, for a cluster admin to apply.
    Rbac {
        #[arg(short, long)]
        inventory: std::path::PathBuf,
        /// The user the bindings name (default: `ferry`).
        #[arg(long, conflicts_with = "service_account")]
        user: Option<String>,
        /// A service account instead: NAMESPACE/NAME.
        #[arg(long)]
        service_account: Option<String>,
        /// Name of the roles and bindings.
        #[arg(long, default_value = "ferry-deployer")]
        name: String,
    },
}

/// Shared settings of one invocation, and the printer its results go to.
pub struct Ctx {
    pub output: OutputFormat,
    pub state_dir: PathBuf,
    /// `--state`, as given (a PostgreSQL store's URL).
    pub state_url: Option<String>,
    pub ledger: crate::ledger::Ledger,
    pub actor: String,
    printer: std::cell::RefCell<Box<dyn Printer>>,
}

impl Ctx {
    /// Results go to stdout, through the printer `--output` chose.
    pub fn new(
        output: OutputFormat,
        markdown: bool,
        state_dir: PathBuf,
        ledger: crate::ledger::Ledger,
        actor: String,
    ) -> Self {
        let json = output == OutputFormat::Json;
        let stdout = Box::new(std::io::stdout());
        Self {
            output,
            state_dir,
            state_url: None,
            ledger,
            actor,
            printer: std::cell::RefCell::new(crate::printer::for_output(json, markdown, stdout)),
        }
    }

    /// The printer, for one result (never held across an await).
    pub fn out(&self) -> std::cell::RefMut<'_, Box<dyn Printer>> {
        self.printer.borrow_mut()
    }

    /// The engine's view of this invocation's state.
    pub fn state(&self) -> crate::engine::State {
        crate::engine::State {
            state_dir: self.state_dir.clone(),
            ledger: self.ledger.clone(),
            actor: self.actor.clone(),
        }
    }
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let markdown = cli.output == OutputArg::Markdown;
    let ledger = match open_ledger(&cli) {
        Ok(l) => l,
        Err(e) => {
            let json = cli.output == OutputArg::Json;
            crate::printer::for_output(json, false, Box::new(std::io::stdout()))
                .error(&e, e.exit_code());
            return ExitCode::from(e.exit_code());
        }
    };
    let mut ctx = Ctx::new(
        match cli.output {
            OutputArg::Json => OutputFormat::Json,
            OutputArg::Human | OutputArg::Markdown => OutputFormat::Human,
        },
        markdown,
        cli.state_dir.clone(),
        ledger,
        cli.actor.clone().unwrap_or_else(os_user),
    );
    ctx.state_url = cli.state.clone();
    if markdown && !matches!(cli.command, Command::Plan { .. }) {
        let e =
            CliError::Refused("--output markdown is for `ferry plan`; use human or json".into());
        ctx.out().error(&e, e.exit_code());
        return ExitCode::from(e.exit_code());
    }
    let result = match cli.command {
        Command::Validate { inventory, plans } => plan_cmd::validate(&ctx, &inventory, &plans),
        Command::Schema { which } => plan_cmd::schema(which),
        Command::Plan {
            inventory,
            plan,
            out,
        } => runtime().and_then(|rt| rt.block_on(plan_cmd::plan(&ctx, &inventory, &plan, &out))),
        Command::Apply {
            plan,
            auto_approve,
            inventory,
            out,
            resume,
            lock_lease_seconds,
            confirm,
            trust_plan_file,
            wait,
            outside_window: _,
            reason,
        } => runtime().and_then(|rt| {
            let opts = apply::Options {
                resume,
                lease: std::time::Duration::from_secs(lock_lease_seconds.max(1)),
                confirm: &confirm,
                trust_plan_file,
                window: crate::engine::apply::WindowChoice {
                    wait,
                    override_reason: reason.as_deref(),
                    clock: None,
                },
                drivers: None,
                observed_after: None,
            };
            match (auto_approve, inventory, out) {
                (true, Some(inventory), Some(out)) => {
                    rt.block_on(apply::plan_and_apply(&ctx, &inventory, &plan, &out, opts))
                }
                _ => rt.block_on(apply::apply_cmd(&ctx, &plan, opts)),
            }
        }),
        Command::Backout {
            inventory,
            app,
            site,
            to,
            dry_run,
        } => runtime().and_then(|rt| {
            rt.block_on(backout::backout(
                &ctx,
                &inventory,
                &app,
                &site,
                backout::Request {
                    to: to.as_deref(),
                    dry_run,
                    ..Default::default()
                },
            ))
        }),
        Command::Rollback {
            app,
            inventory,
            site,
            to,
            uninstall,
            dry_run,
        } => runtime().and_then(|rt| {
            rt.block_on(backout::backout(
                &ctx,
                &inventory,
                &app,
                &site,
                backout::Request {
                    to: None,
                    revision: to,
                    uninstall,
                    dry_run,
                },
            ))
        }),
        Command::Kube {
            command:
                KubeCommand::Rbac {
                    inventory,
                    user,
                    service_account,
                    name,
                },
        } => kube_cmd::subject(user.as_deref(), service_account.as_deref())
            .and_then(|s| kube_cmd::rbac(&ctx, &inventory, &name, &s)),
        Command::History {
            app,
            inventory,
            site,
        } => runtime().and_then(|rt| rt.block_on(backout::history(&ctx, &inventory, &app, &site))),
        Command::Ledger { command } => ledger_cmd::run(&ctx, command),
        Command::Publish(args) => agent_cmd::publish(&ctx, &args),
        Command::Agent { command } => agent_cmd::run(&ctx, command),
        Command::Collect { command } => fleet_cmd::run_collect(&ctx, command),
        Command::Fleet { command } => fleet_cmd::run_fleet(&ctx, command),
        Command::State { command } => state_cmd::run_state(&ctx, command),
        Command::Lock { command } => state_cmd::run_lock(&ctx, command),
        Command::Approve {
            plan,
            gate,
            person,
            comment,
        } => approve::approve(&ctx, &plan, &gate, &person, comment.as_deref()),
        Command::Keygen { out } => approve::keygen(&ctx, &out),
        Command::Versions { command } => versions_cmd::run(&ctx, command),
        Command::Dibr {
            inventory,
            plan,
            out,
            pdf,
        } => dibr_cmd::dibr(&ctx, &inventory, &plan, &out, pdf),
        #[cfg(feature = "ssh")]
        Command::Hosts {
            command:
                HostsCommand::Trust {
                    endpoint,
                    inventory,
                    fingerprint,
                },
        } => runtime().and_then(|rt| {
            rt.block_on(hosts::trust(
                &ctx,
                &inventory,
                &endpoint,
                fingerprint.as_deref(),
            ))
        }),
        #[cfg(feature = "aws")]
        Command::Snapshot { command } => runtime().and_then(|rt| {
            rt.block_on(async {
                match command {
                    SnapshotCommand::List {
                        database,
                        inventory,
                        aws_backup,
                    } => rds_cmd::snapshot_list(&ctx, &inventory, &database, aws_backup).await,
                    SnapshotCommand::Prune {
                        database,
                        inventory,
                        keep,
                        dry_run,
                    } => rds_cmd::snapshot_prune(&ctx, &inventory, &database, keep, dry_run).await,
                    SnapshotCommand::Create {
                        database,
                        inventory,
                        id,
                        timeout_seconds,
                    } => {
                        rds_cmd::snapshot_create(
                            &ctx,
                            &inventory,
                            &database,
                            id.as_deref(),
                            timeout_seconds,
                        )
                        .await
                    }
                }
            })
        }),
        #[cfg(feature = "aws")]
        Command::Runbook { command } => match command {
            RunbookCommand::List { dir } => rds_cmd::runbook_list(&ctx, &dir),
            RunbookCommand::Show { name, dir } => rds_cmd::runbook_show(&ctx, &dir, &name),
            RunbookCommand::Run {
                name,
                inventory,
                dir,
                params,
                out,
                plan_only,
                confirm,
            } => runtime().and_then(|rt| {
                rt.block_on(rds_cmd::runbook_run(
                    &ctx,
                    rds_cmd::RunArgs {
                        dir: &dir,
                        name: &name,
                        inventory: &inventory,
                        params: &params,
                        out: out.as_deref(),
                        plan_only,
                        confirm: &confirm,
                    },
                ))
            }),
        },
        Command::Migrate { command } => match command {
            MigrateCommand::Verify { plan } => {
                runtime().and_then(|rt| rt.block_on(migrate_cmd::verify(&ctx, &plan)))
            }
            MigrateCommand::Report { plan } => migrate_cmd::report(&ctx, &plan),
            MigrateCommand::Manifest { plan, copy } => migrate_cmd::manifest(&ctx, &plan, &copy),
        },
        Command::Demo { root } => runtime().and_then(|rt| rt.block_on(demo::demo(&ctx, &root))),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ferry", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Man { out } => man_pages(&ctx, &out),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            ctx.out().error(&e, code);
            ExitCode::from(code)
        }
    }
}

/// ferry.1 and a page per (sub)command, from the same clap definitions as the parser.
fn man_pages(ctx: &Ctx, out: &std::path::Path) -> Result<u8, CliError> {
    let cmd = <Cli as clap::CommandFactory>::command();
    std::fs::create_dir_all(out)
        .and_then(|()| clap_mangen::generate_to(cmd, out))
        .map_err(|e| {
            CliError::Refused(format!("cannot write man pages to {}: {e}", out.display()))
        })?;
    ctx.out().man_pages(out);
    Ok(exit::OK)
}

/// The ledger and lock of this invocation: the PostgreSQL store `--state` names, or the
/// state directory's files.
fn open_ledger(cli: &Cli) -> Result<crate::ledger::Ledger, CliError> {
    let Some(url) = &cli.state else {
        return Ok(crate::ledger::Ledger::local(
            cli.ledger
                .clone()
                .unwrap_or_else(|| cli.state_dir.join("ledger.jsonl")),
            &cli.state_dir,
        ));
    };
    if cli.ledger.is_some() {
        return Err(CliError::Refused(
            "--ledger names a ledger file and --state a PostgreSQL store: give one".into(),
        ));
    }
    if !crate::state::postgres::StateUrl::is_postgres(url) {
        return Err(CliError::Refused(format!(
            "--state `{url}` is not a `postgres://` URL (a state directory is `--state-dir DIR`)"
        )));
    }
    let url = crate::state::postgres::StateUrl::parse(url).map_err(CliError::Refused)?;
    Ok(crate::ledger::Ledger::with_backend(std::sync::Arc::new(
        crate::state::postgres::PgState::new(url),
    )))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid cannot fail; getpwuid returns null or a pointer to a static record
            // that we copy out at once, before any other call could overwrite it.
            unsafe {
                let uid = libc::getuid();
                let pw = libc::getpwuid(uid);
                if pw.is_null() || (*pw).pw_name.is_null() {
                    format!("uid:{uid}")
                } else {
                    std::ffi::CStr::from_ptr((*pw).pw_name)
                        .to_string_lossy()
                        .into_owned()
                }
            }
        })
}
