//! The `stowage` binary: parses the command line and runs the library's subcommands: `serve`,
//! `admin`, `fsck`, `migrate`, `login`, `object` and `bench`. It also sets up logging (text or
//! JSON). Errors are reported here, at the edge, with `anyhow`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stowage::admin::AdminCommand;
use stowage::client::{ConnectionArgs, ObjectCommand};
use stowage::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "stowage",
    version,
    about = "A self-hosted object store that speaks QuantConnect's Object Store API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Data directory (default ./stowage-data; env STOWAGE_DATA_DIR).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// TOML configuration file (default ./stowage.toml when present; env STOWAGE_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server.
    Serve {
        /// Address to listen on (default 127.0.0.1:5612; env STOWAGE_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[command(flatten)]
        common: Common,
    },
    /// Manage organizations, users, memberships and quotas.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        #[command(flatten)]
        common: Common,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Check metadata against stored bodies and usage figures; report (and repair) differences.
    Fsck {
        /// Fix what can be fixed: rebuild folder rows, drop objects whose body is gone, delete orphan blobs.
        #[arg(long)]
        repair: bool,
        /// Also read every body and compare its md5 with the metadata.
        #[arg(long)]
        verify_content: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Copy the whole store to other backends (e.g. PostgreSQL + S3), resumably, and verify it.
    Migrate {
        /// TOML configuration of the destination (metadata, blob_store, s3_*, server_key, data_dir).
        #[arg(long)]
        to: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Check credentials with /authenticate and save them for `stowage object`.
    Login {
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// A client of the API: set, get, list, properties, delete.
    Object {
        #[command(subcommand)]
        command: ObjectCommand,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Load generator: drives a running server (stowage, or S3-compatible) and reports ops/s, MB/s and latency percentiles.
    Bench(Box<stowage::bench::BenchArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stowage: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Serve { listen, common } => {
            let config = Config::load(&Overrides {
                config_file: common.config,
                listen,
                data_dir: common.data_dir,
            })?;
            init_logging(&config.log_format);
            runtime.block_on(stowage::server::serve(config))?;
        }
        Command::Admin { command, common, json } => {
            let config = Config::load(&Overrides {
                config_file: common.config,
                listen: None,
                data_dir: common.data_dir,
            })?;
            let output = runtime.block_on(stowage::admin::run(&config, command, json))?;
            print_output(&output)?;
        }
        Command::Fsck {
            repair,
            verify_content,
            json,
            common,
        } => {
            let config = Config::load(&Overrides {
                config_file: common.config,
                listen: None,
                data_dir: common.data_dir,
            })?;
            if config.metadata == "sqlite" && !config.db_path().exists() {
                anyhow::bail!("{} holds no stowage data", config.data_dir.display());
            }
            let mut report = runtime.block_on(async {
                let opened = stowage::server::open_data_dir(&config).await?;
                let blobs = stowage::server::open_blobs(&config, false).await?;
                Ok::<_, anyhow::Error>(stowage::fsck::check(&*opened.meta, &*blobs, repair, verify_content).await?)
            })?;
            if config.blob_store == "local" {
                report.unfinished_uploads =
                    stowage::blob::local::LocalBlobs::attach(&config.blob_dir()).unfinished_uploads();
            }
            let text = if json {
                serde_json::to_string_pretty(&report)?
            } else {
                report.to_text()
            };
            print_output(&text)?;
            if report.unresolved() > 0 {
                return Err(anyhow::anyhow!("{} problem(s) found", report.unresolved()));
            }
        }
        Command::Migrate { to, json, common } => {
            let source = Config::load(&Overrides {
                config_file: common.config,
                listen: None,
                data_dir: common.data_dir,
            })?;
            let destination = Config::from_file(&to)?;
            let report = runtime.block_on(async {
                let from = stowage::server::open_data_dir(&source).await?;
                let from_blobs = stowage::server::open_blobs(&source, false).await?;
                let to = stowage::server::open_data_dir(&destination).await?;
                let to_blobs = stowage::server::open_blobs(&destination, true).await?;
                let mut progress = |line: &str| eprintln!("migrate: {line}");
                Ok::<_, anyhow::Error>(
                    stowage::migrate::migrate(
                        stowage::migrate::Side {
                            meta: &*from.meta,
                            blobs: &*from_blobs,
                            key: &from.key,
                        },
                        stowage::migrate::Side {
                            meta: &*to.meta,
                            blobs: &*to_blobs,
                            key: &to.key,
                        },
                        &mut progress,
                    )
                    .await?,
                )
            })?;
            let text = if json {
                serde_json::to_string_pretty(&report)?
            } else {
                let mut lines = report.differences.clone();
                lines.push(format!(
                    "migrated {} organization(s), {} user(s), {} object(s) ({} bytes copied, {} already in place); verified {} object(s), {} byte(s): {} difference(s)",
                    report.organizations, report.users, report.copied + report.skipped, report.bytes_copied,
                    report.skipped, report.verified_objects, report.verified_bytes, report.differences.len()
                ));
                lines.join("\n")
            };
            print_output(&text)?;
            if !report.differences.is_empty() {
                anyhow::bail!("the copy differs from the source");
            }
        }
        Command::Login { connection } => {
            let output = runtime.block_on(stowage::client::login(&connection))?;
            print_output(&output)?;
        }
        Command::Object { command, connection } => {
            let output = runtime.block_on(stowage::client::run_object(&connection, command))?;
            if !output.is_empty() {
                print_output(&output)?;
            }
        }
        Command::Bench(args) => {
            let output = runtime
                .block_on(stowage::bench::run(*args))
                .map_err(anyhow::Error::msg)?;
            print_output(&output)?;
        }
    }
    Ok(())
}

/// Prints a command's output; a reader that went away (`| head`) is not an error.
fn print_output(output: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{output}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Logs to standard error, as text or as one JSON object per line (`log_format`).
fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOWAGE_LOG").unwrap_or_else(|_| "stowage=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}
