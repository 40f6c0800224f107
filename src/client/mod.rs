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
    /// API token (env STOWAGE_API_TOKEN).
    #[arg(long, global = true)]
    pub(crate) api_token: Option<String>,
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
        let api_token = pick(&self.api_token, "STOWAGE_API_TOKEN", &saved.api_token)
            .ok_or_else(|| missing("API token", "--api-token", "STOWAGE_API_TOKEN"))?;
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
        } => {
            if stdout {
                get_to_stdout(args, &client, &org, &keys).await.map(|()| String::new())
            } else {
                let destination = destination.unwrap_or_else(|| PathBuf::from("."));
                let names = get_into(args, &client, &org, &keys, &destination).await?;
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

/// Downloads the zip of a job into a temporary file beside `dir` and returns it.
async fn download_zip(
    args: &ConnectionArgs,
    client: &ApiClient,
    org: &str,
    keys: &[String],
    dir: &Path,
) -> Result<tempfile::NamedTempFile, ClientError> {
    let url = client.download_url(org, keys).await?;
    let response = client.fetch(&url).await?;
    let length = response.content_length();
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
        file.write_all(&chunk).await?;
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
        }
    }
    file.flush().await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(temp)
}

async fn get_into(
    args: &ConnectionArgs,
    client: &ApiClient,
    org: &str,
    keys: &[String],
    destination: &Path,
) -> Result<Vec<String>, ClientError> {
    std::fs::create_dir_all(destination)?;
    let archive = download_zip(args, client, org, keys, destination).await?;
    let destination = destination.to_owned();
    let path = archive.path().to_owned();
    let names = tokio::task::spawn_blocking(move || extract::extract_zip(&path, &destination))
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
) -> Result<(), ClientError> {
    let [key] = keys else {
        return Err(ClientError::Usage("--stdout takes exactly one key".into()));
    };
    let archive = download_zip(args, client, org, keys, &std::env::temp_dir()).await?;
    let path = archive.path().to_owned();
    let key = key.clone();
    tokio::task::spawn_blocking(move || {
        let mut stdout = std::io::stdout().lock();
        extract::copy_single_entry(&path, &key, &mut stdout)?;
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
