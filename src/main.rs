//! The `stowage` binary: parses the command line and runs one command (`serve`, `admin`,
//! `fsck`, `migrate`, the client, `bench`, `completions`) over the library, one function per
//! command. Errors are reported here, at the edge, with `anyhow`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use stowage::admin::AdminCommand;
use stowage::client::{ConnectionArgs, ObjectCommand};
use stowage::config::{BlobStoreKind, Config, LogFormat, MetadataStore, Overrides, S3Listen};

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
        /// Serve GET /metrics on this address only, not beside the API (default: beside the
        /// API; env STOWAGE_METRICS_LISTEN).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Address of the S3-compatible API, or `off` (default 127.0.0.1:5613; env
        /// STOWAGE_S3_API_LISTEN).
        #[arg(long, value_parser = parse_s3_listen)]
        s3_api_listen: Option<S3Listen>,
        #[command(flatten)]
        common: Common,
    },
    /// Manage organizations, users, memberships and quotas.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        #[command(flatten)]
        common: Common,
        /// Print JSON instead of text (for scripts).
        #[arg(long, global = true)]
        json: bool,
        /// Create the data directory (a new, empty store) if it does not exist; without this
        /// flag a missing data directory is refused.
        #[arg(long, global = true)]
        create_data_dir: bool,
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
    /// Take a consistent backup of the running store into a folder that is itself a data
    /// directory; run again into the same folder to update it incrementally.
    Backup {
        /// The backup folder (created; an earlier backup there is updated in one step).
        #[arg(long)]
        to: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Put a backup back into an empty store: a fresh data directory, or PostgreSQL + S3.
    Restore {
        /// The backup folder (made by `stowage backup`).
        #[arg(long)]
        from: PathBuf,
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
        /// Never show progress bars (they appear only on a terminal, for transfers of 4 MB or more).
        #[arg(long, global = true)]
        no_progress: bool,
    },
    /// Load generator: drives a running server (stowage, or S3-compatible) and reports ops/s, MB/s and latency percentiles.
    Bench(Box<stowage::bench::BenchArgs>),
    /// Print shell completions (e.g. `stowage completions bash > ~/.local/share/bash-completion/completions/stowage`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stowage: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause said once: a message that already quotes its
/// cause (`cannot open …: Permission denied`) is not followed by that cause again.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let sentence = cause.to_string();
        if text.contains(&sentence) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&sentence);
    }
    text
}

/// Runs one command.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            metrics_listen,
            s3_api_listen,
            common,
        } => serve(common, listen, metrics_listen, s3_api_listen),
        Command::Admin {
            command,
            common,
            json,
            create_data_dir,
        } => admin(common, command, json, create_data_dir),
        Command::Fsck {
            repair,
            verify_content,
            json,
            common,
        } => fsck(common, repair, verify_content, json),
        Command::Migrate { to, json, common } => migrate(common, &to, json),
        Command::Backup { to, json, common } => backup(common, &to, json),
        Command::Restore { from, json, common } => restore(common, &from, json),
        Command::Login { connection } => {
            let output = runtime()?.block_on(stowage::client::login(&connection))?;
            print_output(&output)
        }
        Command::Object {
            command,
            mut connection,
            no_progress,
        } => {
            connection.no_progress = no_progress;
            let output = runtime()?.block_on(stowage::client::run_object(&connection, command))?;
            if output.is_empty() {
                return Ok(());
            }
            print_output(&output)
        }
        Command::Bench(args) => {
            let output = runtime()?
                .block_on(stowage::bench::run(*args))
                .map_err(anyhow::Error::msg)?;
            print_output(&output)
        }
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "stowage", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

/// The layered configuration of a command that works on a store (no `--listen`).
fn store_config(common: Common) -> anyhow::Result<Config> {
    Ok(Config::load(&Overrides {
        config_file: common.config,
        listen: None,
        data_dir: common.data_dir,
        metrics_listen: None,
        s3_api_listen: None,
    })?)
}

fn parse_s3_listen(text: &str) -> Result<S3Listen, String> {
    text.parse()
}

/// `stowage serve`.
fn serve(
    common: Common,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    s3_api_listen: Option<S3Listen>,
) -> anyhow::Result<()> {
    let config = Config::load(&Overrides {
        config_file: common.config,
        listen,
        data_dir: common.data_dir,
        metrics_listen,
        s3_api_listen,
    })?;
    init_logging(config.log_format);
    runtime()?.block_on(stowage::server::serve(config))?;
    Ok(())
}

/// `stowage admin`: refuses a data directory that does not exist unless asked to create one.
fn admin(common: Common, command: AdminCommand, json: bool, create_data_dir: bool) -> anyhow::Result<()> {
    let config = store_config(common)?;
    if !create_data_dir {
        stowage::server::require_data_dir(&config)?;
    }
    let output = runtime()?.block_on(stowage::admin::run(&config, command, json))?;
    print_output(&output)
}

/// `stowage fsck`: prints the report; exits 1 when a problem remains.
fn fsck(common: Common, repair: bool, verify_content: bool, json: bool) -> anyhow::Result<()> {
    let config = store_config(common)?;
    stowage::server::require_data_dir(&config)?;
    if config.metadata == MetadataStore::Sqlite && !config.db_path().exists() {
        anyhow::bail!(
            "{} holds no stowage data (no metadata.sqlite3): pass --data-dir with the directory `stowage serve` uses",
            config.data_dir.display()
        );
    }
    let mut report = runtime()?.block_on(async {
        let opened = stowage::server::open_data_dir(&config).await?;
        let blobs = stowage::server::open_blobs(&config, false).await?;
        Ok::<_, anyhow::Error>(stowage::fsck::check(&*opened.meta, &*blobs, repair, verify_content).await?)
    })?;
    stowage::fsck::check_modes(&config.data_dir, repair, &mut report)?;
    if config.blob_store == BlobStoreKind::Local {
        report.unfinished_uploads = stowage::blob::local::LocalBlobs::attach(&config.blob_dir()).unfinished_uploads();
    }
    let text = if json {
        serde_json::to_string_pretty(&report)?
    } else {
        report.to_text()
    };
    print_output(&text)?;
    if report.unresolved() > 0 {
        anyhow::bail!("{} problem(s) found", report.unresolved());
    }
    Ok(())
}

/// `stowage migrate`: copies the store to the destination configuration and verifies the copy.
fn migrate(common: Common, to: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let source = store_config(common)?;
    let destination = Config::from_file(to)?;
    let report = runtime()?.block_on(async {
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
    Ok(())
}

/// `stowage backup --to DIR`.
fn backup(common: Common, to: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let config = store_config(common)?;
    let report = runtime()?.block_on(stowage::backup::backup(&config, to))?;
    let summary = report.summary("backed up", to);
    if json {
        eprintln!("{summary}");
        print_output(&serde_json::to_string_pretty(&report)?)?;
    } else {
        print_output(&summary)?;
    }
    Ok(())
}

/// `stowage restore --from DIR`.
fn restore(common: Common, from: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let config = store_config(common)?;
    let mut progress = |line: &str| eprintln!("restore: {line}");
    let report = runtime()?.block_on(stowage::backup::restore(from, &config, &mut progress))?;
    let summary = match &report {
        stowage::backup::RestoreReport::Embedded(copy) => copy.summary("restored", &config.data_dir),
        stowage::backup::RestoreReport::Distributed(migrated) => format!(
            "restored {} organization(s), {} user(s), {} object(s) ({} bytes) into the configured store; verified {} object(s): {} difference(s)",
            migrated.organizations,
            migrated.users,
            migrated.copied + migrated.skipped,
            migrated.bytes_copied,
            migrated.verified_objects,
            migrated.differences.len()
        ),
    };
    if json {
        eprintln!("{summary}");
        print_output(&serde_json::to_string_pretty(&report)?)?;
    } else {
        print_output(&summary)?;
    }
    if let stowage::backup::RestoreReport::Distributed(migrated) = &report
        && !migrated.differences.is_empty()
    {
        anyhow::bail!(
            "the restored store differs from the backup: {}",
            migrated.differences.join("; ")
        );
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

/// Logs to standard error, as text or as one JSON object per line (`log_format`). Text is
/// coloured only when standard error is a terminal, never in a file or a pipe.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOWAGE_LOG").unwrap_or_else(|_| "stowage=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag and argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (the command itself)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "stowage", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
        Cli::command().debug_assert();
    }

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let inner = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use (os error 98)");
        let error = anyhow::Error::new(inner).context("cannot bind: Address already in use (os error 98)");
        assert_eq!(error_text(&error), "cannot bind: Address already in use (os error 98)");
        let error = anyhow::anyhow!("disk full").context("cannot write the key");
        assert_eq!(error_text(&error), "cannot write the key: disk full");
    }
}
