//! `stowage login` and `stowage object …`: a command-line client of the Object Store API (ours or
//! QuantConnect's). Credentials come from flags, then `STOWAGE_*` environment variables, then the
//! credentials file that `stowage login` writes. Large transfers show a progress bar on an
//! interactive terminal and none when output is piped.

pub(crate) mod api;
mod extract;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

pub use api::ClientError;
pub(crate) use api::{ApiClient, Credentials};

use crate::content::human_size;

/// Where clients go when nothing says otherwise.
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:5612/api/v2";
/// Transfers at least this large get a progress bar on a terminal.
const PROGRESS_THRESHOLD: u64 = 4 * 1024 * 1024;

/// Connection settings shared by `login` and `object`.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// API base URL (env STOWAGE_URL; default http://127.0.0.1:5612/api/v2).
    #[arg(long, global = true)]
    pub(crate) url: Option<String>,
    /// User id (env STOWAGE_USER_ID).
    #[arg(long, global = true)]
    pub(crate) user_id: Option<String>,
    /// API token (env STOWAGE_API_TOKEN). Visible to other users of this machine in the process
    /// list: prefer --api-token-stdin, the environment or `stowage login`.
    #[arg(long, global = true)]
    pub(crate) api_token: Option<String>,
    /// Read the API token from the first line of standard input (keeps it out of the process
    /// list), e.g. `pass show stowage | stowage login --api-token-stdin ...`.
    #[arg(long, global = true, conflicts_with = "api_token")]
    pub(crate) api_token_stdin: bool,
    /// Organization id (env STOWAGE_ORGANIZATION_ID).
    #[arg(long, global = true)]
    pub(crate) organization_id: Option<String>,
    /// Credentials file (env STOWAGE_CREDENTIALS; default ~/.config/stowage/credentials.json).
    #[arg(long, global = true)]
    pub credentials_file: Option<PathBuf>,
    /// Never show progress bars (a flag of `stowage object`; `login` transfers nothing).
    #[arg(skip)]
    pub no_progress: bool,
    /// Also trust the certificate authority in this PEM file for https URLs (a private CA or a
    /// self-signed server certificate; env STOWAGE_CA_CERT).
    #[arg(long, global = true, env = "STOWAGE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ObjectCommand {
    /// Upload a file, or standard input with `-` or no FILE.
    Set {
        /// The object's key, e.g. models/m1.json (folders are the parts before each `/`).
        key: String,
        /// The file to upload; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
    /// Download keys (files or folders) into a folder, or one file to standard output.
    Get {
        /// Keys of files, or folders (everything under them), to download.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Folder to extract into (default: the current folder).
        #[arg(long)]
        destination: Option<PathBuf>,
        /// Write the one file's bytes to standard output.
        #[arg(long, conflicts_with = "destination")]
        stdout: bool,
        /// Refuse a download that would write more than this (e.g. 500MB, 10GiB). Without it,
        /// the bound is what the server announced for the keys, plus a small allowance.
        #[arg(long, value_parser = parse_max_size)]
        max_size: Option<u64>,
    },
    /// List one folder level (default: the root).
    List {
        /// The folder to list, e.g. models (default: the root).
        path: Option<String>,
        /// Print JSON instead of a table (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Show a file's metadata.
    Properties {
        /// The file's key.
        key: String,
        /// Print JSON instead of text (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Delete a file, or a folder with everything under it.
    Delete {
        /// The key of a file, or a folder to delete with everything under it.
        key: String,
    },
}

/// What `stowage login` stores (mode 0600).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SavedCredentials {
    pub(crate) url: Option<String>,
    #[serde(rename = "userId")]
    pub(crate) user_id: Option<String>,
    #[serde(rename = "apiToken")]
    pub(crate) api_token: Option<String>,
    #[serde(rename = "organizationId")]
    pub(crate) organization_id: Option<String>,
}

/// `--max-size`: a number of bytes, or a number and a unit (`10GiB`, `500 MB`).
fn parse_max_size(text: &str) -> Result<u64, String> {
    crate::config::parse_byte_count(text)
}

/// The API token given on standard input (`--api-token-stdin`): its first line, trimmed.
fn token_from_stdin(input: &mut dyn std::io::BufRead) -> Result<String, ClientError> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| ClientError::Usage(format!("--api-token-stdin: cannot read standard input: {e}")))?;
    let token = line.trim();
    if token.is_empty() {
        return Err(ClientError::Usage(
            "--api-token-stdin: standard input held no token; give the token as its first line, \
             e.g. `printf '%s\\n' \"$TOKEN\" | stowage ... --api-token-stdin`"
                .into(),
        ));
    }
    Ok(token.to_owned())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl ConnectionArgs {
    pub(crate) fn credentials_path(&self) -> PathBuf {
        if let Some(path) = &self.credentials_file {
            return path.clone();
        }
        if let Some(path) = env("STOWAGE_CREDENTIALS") {
            return PathBuf::from(path);
        }
        let config_home = env("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|home| PathBuf::from(home).join(".config")))
            .unwrap_or_else(|| PathBuf::from("."));
        config_home.join("stowage").join("credentials.json")
    }

    fn saved(&self) -> Result<SavedCredentials, ClientError> {
        let path = self.credentials_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Usage(format!("the credentials file {} is malformed: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedCredentials::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Flags, then environment, then the credentials file.
    pub(crate) fn resolve(&self) -> Result<(Credentials, Option<String>), ClientError> {
        let saved = self.saved()?;
        let pick = |flag: &Option<String>, var: &str, file: &Option<String>| {
            flag.clone().or_else(|| env(var)).or_else(|| file.clone())
        };
        let url = pick(&self.url, "STOWAGE_URL", &saved.url).unwrap_or_else(|| DEFAULT_URL.to_owned());
        let missing = |what: &str, flag: &str, var: &str| {
            ClientError::Usage(format!("no {what}: pass {flag}, set {var}, or run `stowage login`"))
        };
        let user_id = pick(&self.user_id, "STOWAGE_USER_ID", &saved.user_id)
            .ok_or_else(|| missing("user id", "--user-id", "STOWAGE_USER_ID"))?;
        let given = match self.api_token_stdin {
            true => Some(token_from_stdin(&mut std::io::stdin().lock())?),
            false => self.api_token.clone(),
        };
        let api_token = pick(&given, "STOWAGE_API_TOKEN", &saved.api_token)
            .ok_or_else(|| missing("API token", "--api-token-stdin", "STOWAGE_API_TOKEN"))?;
        let org = pick(&self.organization_id, "STOWAGE_ORGANIZATION_ID", &saved.organization_id);
        Ok((
            Credentials {
                url,
                user_id,
                api_token,
            },
            org,
        ))
    }

    fn show_progress(&self, size: Option<u64>) -> bool {
        !self.no_progress && std::io::stderr().is_terminal() && size.is_none_or(|s| s >= PROGRESS_THRESHOLD)
    }
}

/// `stowage login`: checks the credentials with `/authenticate`, then saves them (mode 0600).
/// With an organization id, also checks that the organization exists and that the user may
/// read it: nothing is saved that would fail at the first `stowage object` command.
pub async fn login(args: &ConnectionArgs) -> Result<String, ClientError> {
    let (credentials, org) = args.resolve()?;
    let user = credentials.user_id.clone();
    let client = ApiClient::with_ca(credentials.clone(), args.ca_cert.as_deref())?;
    client.authenticate().await.map_err(|e| e.for_user(&user))?;
    if let Some(org) = &org {
        client.list_page(org, "", 0).await.map_err(|e| match e {
            ClientError::Server(sentence) => ClientError::Usage(format!(
                "user {user} cannot read organization {org}: {sentence} Check --organization-id \
                 (`stowage admin org list` on the server); nothing was saved"
            )),
            other => other.for_user(&user),
        })?;
    }
    let path = args.credentials_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let saved = SavedCredentials {
        url: Some(credentials.url.clone()),
        user_id: Some(credentials.user_id.clone()),
        api_token: Some(credentials.api_token),
        organization_id: org,
    };
    let text = serde_json::to_vec_pretty(&saved).map_err(|e| ClientError::Usage(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    crate::crypto::write_private_file(&tmp, &text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(format!(
        "logged in to {} as user {}; credentials saved in {}",
        credentials.url,
        credentials.user_id,
        path.display()
    ))
}

fn progress_bar(length: Option<u64>, message: &str) -> ProgressBar {
    let bar = match length {
        Some(length) => ProgressBar::new(length).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(message.to_owned());
    bar
}

/// Runs one `stowage object` command; what it returns is printed on standard output.
pub async fn run_object(args: &ConnectionArgs, command: ObjectCommand) -> Result<String, ClientError> {
    if let ObjectCommand::Set { file, .. } = &command
        && args.api_token_stdin
        && file.as_deref().is_none_or(|f| f.as_os_str() == "-")
    {
        return Err(ClientError::Usage(
            "--api-token-stdin reads the token from standard input, so the upload cannot come from there too: \
             name the file to upload, or give the token another way (STOWAGE_API_TOKEN, `stowage login`)"
                .into(),
        ));
    }
    let (credentials, org) = args.resolve()?;
    let user = credentials.user_id.clone();
    object_command(args, credentials, org, command)
        .await
        .map_err(|e| e.for_user(&user))
}

async fn object_command(
    args: &ConnectionArgs,
    credentials: Credentials,
    org: Option<String>,
    command: ObjectCommand,
) -> Result<String, ClientError> {
    let org = org.ok_or_else(|| {
        ClientError::Usage(
            "no organization id: pass --organization-id, set STOWAGE_ORGANIZATION_ID, or log in with one".into(),
        )
    })?;
    let client = ApiClient::with_ca(credentials, args.ca_cert.as_deref())?;
    match command {
        ObjectCommand::Set { key, file } => set(args, &client, &org, &key, file.as_deref()).await,
        ObjectCommand::Get {
            keys,
            destination,
            stdout,
            max_size,
        } => {
            if stdout {
                get_to_stdout(args, &client, &org, &keys, max_size)
                    .await
                    .map(|()| String::new())
            } else {
                let destination = destination.unwrap_or_else(|| PathBuf::from("."));
                let names = get_into(args, &client, &org, &keys, &destination, max_size).await?;
                Ok(format!(
                    "downloaded {} file(s) into {}",
                    names.len(),
                    destination.display()
                ))
            }
        }
        ObjectCommand::List { path, json } => list(&client, &org, path.as_deref().unwrap_or("/"), json).await,
        ObjectCommand::Properties { key, json } => {
            let meta = client.properties(&org, &key).await?;
            if json {
                return serde_json::to_string_pretty(&meta).map_err(|e| ClientError::Usage(e.to_string()));
            }
            let preview = match &meta.preview {
                Some(p) => format!("{:?}", p.chars().take(80).collect::<String>()),
                None => "(binary)".into(),
            };
            Ok(format!(
                "key:      {}\nsize:     {} ({} bytes)\nmd5:      {}\nmime:     {}\ncreated:  {}\nmodified: {}\npreview:  {}",
                meta.key,
                human_size(meta.size),
                meta.size,
                meta.md5,
                meta.mime,
                meta.created,
                meta.modified,
                preview
            ))
        }
        ObjectCommand::Delete { key } => {
            client.delete(&org, &key).await?;
            Ok(format!("deleted {key}"))
        }
    }
}

async fn set(
    args: &ConnectionArgs,
    client: &ApiClient,
    org: &str,
    key: &str,
    file: Option<&Path>,
) -> Result<String, ClientError> {
    let (body, length) = match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => {
            let handle = tokio::fs::File::open(path)
                .await
                .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))?;
            // Pipes and process substitutions have no length worth trusting: stream them.
            let metadata = handle.metadata().await?;
            let length = metadata.is_file().then_some(metadata.len());
            (tokio_util::either::Either::Left(handle), length)
        }
        None => (tokio_util::either::Either::Right(tokio::io::stdin()), None),
    };
    let bar = args
        .show_progress(length)
        .then(|| progress_bar(length, &format!("uploading {key}")));
    let counter = bar.clone();
    let stream = ReaderStream::with_capacity(body, 256 * 1024).inspect_ok(move |chunk| {
        if let Some(bar) = &counter {
            bar.inc(chunk.len() as u64);
        }
    });
    let result = client.set(org, key, reqwest::Body::wrap_stream(stream), length).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    Ok(format!("stored {key}"))
}

/// What the server says the keys hold, in bytes: a file's size from `/object/properties`, a
/// folder's (the total under it) from the listing of its parent; a key that is neither counts 0.
async fn announced_bytes(client: &ApiClient, org: &str, keys: &[String]) -> Result<u64, ClientError> {
    let mut total: u64 = 0;
    let mut seen = std::collections::HashSet::new();
    for key in keys {
        let key = key.trim_matches('/');
        if !seen.insert(key) {
            continue;
        }
        if key.is_empty() {
            let root = client.list_page(org, "/", 0).await?;
            total = total.saturating_add(root.used.unwrap_or(0));
            continue;
        }
        match client.properties(org, key).await {
            Ok(meta) => {
                total = total.saturating_add(meta.size);
                continue;
            }
            // Not a file: a folder, or nothing.
            Err(ClientError::Server(_)) => {}
            Err(other) => return Err(other),
        }
        let (parent, name) = key.rsplit_once('/').unwrap_or(("", key));
        let mut page = 0;
        loop {
            let listing = match client
                .list_page(org, if parent.is_empty() { "/" } else { parent }, page)
                .await
            {
                Ok(listing) => listing,
                Err(ClientError::Server(_)) => break,
                Err(other) => return Err(other),
            };
            if let Some(folder) = listing.objects.iter().find(|o| o.folder && o.name == name) {
                total = total.saturating_add(folder.size);
                break;
            }
            page += 1;
            if page >= listing.total_pages.unwrap_or(1) {
                break;
            }
        }
    }
    Ok(total)
}

/// Downloads the zip of a job into a temporary file beside `dir` and returns it, with the bound
/// of what it may hold: the sizes the server announced for the keys, or `max_size`.
async fn download_zip(
    args: &ConnectionArgs,
    client: &ApiClient,
    org: &str,
    keys: &[String],
    dir: &Path,
    max_size: Option<u64>,
) -> Result<(tempfile::NamedTempFile, extract::Budget), ClientError> {
    let url = client.download_url(org, keys).await?;
    let budget = extract::Budget::new(announced_bytes(client, org, keys).await?, max_size);
    let response = client.fetch(&url).await?;
    let length = response.content_length();
    if length.is_some_and(|length| length > budget.archive_limit()) {
        return Err(budget.exceeded("the archive"));
    }
    let mut received: u64 = 0;
    let bar = args.show_progress(length).then(|| progress_bar(length, "downloading"));
    let temp = tempfile::Builder::new()
        .prefix(".stowage-download-")
        .suffix(".zip")
        .tempfile_in(dir)?;
    let mut file = tokio::fs::File::from_std(temp.reopen()?);
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.try_next().await.map_err(|source| ClientError::Network {
        url: url.clone(),
        cause: source,
    })? {
        received = received.saturating_add(chunk.len() as u64);
        if received > budget.archive_limit() {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Err(budget.exceeded("the archive"));
        }
        file.write_all(&chunk).await?;
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
        }
    }
    file.flush().await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok((temp, budget))
}

async fn get_into(
    args: &ConnectionArgs,
    client: &ApiClient,
    org: &str,
    keys: &[String],
    destination: &Path,
    max_size: Option<u64>,
) -> Result<Vec<String>, ClientError> {
    std::fs::create_dir_all(destination)?;
    let (archive, budget) = download_zip(args, client, org, keys, destination, max_size).await?;
    let destination = destination.to_owned();
    let path = archive.path().to_owned();
    let names = tokio::task::spawn_blocking(move || extract::extract_zip(&path, &destination, &budget))
        .await
        .map_err(|e| ClientError::Usage(e.to_string()))??;
    drop(archive);
    Ok(names)
}

async fn get_to_stdout(
    args: &ConnectionArgs,
    client: &ApiClient,
    org: &str,
    keys: &[String],
    max_size: Option<u64>,
) -> Result<(), ClientError> {
    let [key] = keys else {
        return Err(ClientError::Usage("--stdout takes exactly one key".into()));
    };
    let (archive, budget) = download_zip(args, client, org, keys, &std::env::temp_dir(), max_size).await?;
    let path = archive.path().to_owned();
    let key = key.clone();
    tokio::task::spawn_blocking(move || {
        let mut stdout = std::io::stdout().lock();
        extract::copy_single_entry(&path, &key, &mut stdout, &budget)?;
        stdout.flush()?;
        Ok::<_, ClientError>(())
    })
    .await
    .map_err(|e| ClientError::Usage(e.to_string()))?
}

async fn list(client: &ApiClient, org: &str, path: &str, json: bool) -> Result<String, ClientError> {
    let mut objects = Vec::new();
    let mut page = 0;
    let first = loop {
        let listing = client.list_page(org, path, page).await?;
        let pages = listing.total_pages.unwrap_or(1);
        objects.extend(listing.objects.iter().cloned());
        if page == 0 && pages <= 1 {
            break listing;
        }
        page += 1;
        if page >= pages {
            break listing;
        }
    };
    if json {
        return serde_json::to_string_pretty(&objects).map_err(|e| ClientError::Usage(e.to_string()));
    }
    let mut lines = vec![format!("{:<40}  {:>10}  {:<24}  type", "name", "size", "modified")];
    for o in &objects {
        let name = if o.folder {
            format!("{}/", o.name)
        } else {
            o.name.clone()
        };
        lines.push(format!(
            "{:<40}  {:>10}  {:<24}  {}",
            name,
            human_size(o.size),
            o.modified.as_deref().unwrap_or(""),
            if o.folder { "folder" } else { "file" }
        ));
    }
    lines.push(format!(
        "{} entr{}; organization uses {}",
        objects.len(),
        if objects.len() == 1 { "y" } else { "ies" },
        first.used_human.unwrap_or_else(|| human_size(first.used.unwrap_or(0)))
    ));
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_the_first_line_of_standard_input() {
        let mut input = std::io::Cursor::new(b"  s3cret-token \nsecond line\n".to_vec());
        assert_eq!(token_from_stdin(&mut input).unwrap(), "s3cret-token");
        let refused = token_from_stdin(&mut std::io::Cursor::new(b"\n".to_vec())).unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("--api-token-stdin: standard input held no token;"),
            "{refused}"
        );
        assert_eq!(parse_max_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_max_size("500 MB"), Ok(500_000_000));
        assert!(parse_max_size("big").is_err_and(|e| e.contains("is not a size")));
    }
}
