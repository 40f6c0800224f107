//! `stowage admin`: organizations, users, tokens, memberships and quotas, worked directly on a
//! data directory (safe while the server runs: SQLite WAL with a busy timeout). People get
//! aligned tables with sizes in KiB/MiB/GiB; `--json` gives scripts JSON (sizes in bytes).
//! One method of [`Admin`] per command.

use std::collections::HashMap;

use clap::Subcommand;
use serde_json::json;

use crate::config::{Config, parse_byte_count};
use crate::crypto::{ServerKey, generate_s3_access_key, generate_s3_secret, generate_token};
use crate::ids::{BucketAlias, OrgId, UserId};
use crate::meta::{BucketRefusal, MetaError, MetaStore, Permissions, S3Key};
use crate::server::{SchemaState, SchemaVersions, ServeError, open_data_dir, schema_versions};
use crate::service::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Open(#[from] ServeError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("organization not found: {0}")]
    UnknownOrg(String),
    #[error("user not found: {0}")]
    UnknownUser(String),
    #[error("S3 key not found: {0} (see `stowage admin s3-key list`)")]
    UnknownS3Key(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Organizations and their quotas.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Users and their API tokens.
    #[command(subcommand)]
    User(UserCommand),
    /// Who belongs to which organization, with which permissions.
    #[command(subcommand)]
    Member(MemberCommand),
    /// S3 access keys: credentials for the S3 API, apart from API tokens.
    #[command(subcommand, name = "s3-key")]
    S3Key(S3KeyCommand),
    /// Show the schema version of the metadata store and of the small-body store (without
    /// upgrading them: a server, `admin` or `fsck` upgrades a store when it opens it).
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization (its name must not be taken).
    Create {
        /// The organization's name, shown in listings; unique.
        #[arg(long)]
        name: String,
        /// Storage quota, e.g. "50 GiB" or a number of bytes; default: the server's default_max_bytes.
        #[arg(long, value_parser = parse_byte_count)]
        max_bytes: Option<u64>,
        /// File-count quota; default: the server's default_max_files.
        #[arg(long)]
        max_files: Option<u64>,
        /// The organization's S3 bucket name (its id works as a bucket name too): 3 to 63
        /// lowercase letters, digits, dots and hyphens, unique.
        #[arg(long)]
        bucket: Option<String>,
    },
    /// List organizations with usage, quotas and bucket names.
    List,
    /// Give an organization an S3 bucket name, replacing the one it had (or take it away with
    /// --remove). Its id keeps working as a bucket name.
    #[command(group(clap::ArgGroup::new("name").required(true).args(["bucket", "remove"])))]
    SetBucket {
        /// The organization's id (see `org list`).
        #[arg(long)]
        org: String,
        /// The new bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, unique.
        #[arg(long)]
        bucket: Option<String>,
        /// Take the organization's bucket name away.
        #[arg(long)]
        remove: bool,
    },
    /// Set or reset an organization's quotas (at least one of --max-bytes and --max-files).
    #[command(group(clap::ArgGroup::new("quota").required(true).multiple(true).args(["max_bytes", "max_files"])))]
    SetQuota {
        /// The organization's id (see `org list`).
        #[arg(long)]
        org: String,
        /// New storage quota, e.g. "1 GiB" or a number of bytes, or the word `default` for the server's default_max_bytes.
        #[arg(long)]
        max_bytes: Option<String>,
        /// New file-count quota, or the word `default` for the server's default_max_files.
        #[arg(long)]
        max_files: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user with a new API token (shown once).
    Create {
        /// The user's name, shown in listings.
        #[arg(long)]
        name: String,
        /// Make the user a server administrator: it may create and delete buckets
        /// (organizations) through the S3 API. The first user of a store always is one.
        #[arg(long)]
        server_admin: bool,
    },
    /// List users.
    List,
    /// Change a user's server-administrator flag.
    Set {
        /// The user's id (a number; see `user list`).
        #[arg(long)]
        user: String,
        /// true: the user may create and delete buckets (organizations) through the S3 API;
        /// false: it may not.
        #[arg(long, required = true, action = clap::ArgAction::Set)]
        server_admin: Option<bool>,
    },
    /// Replace a user's API token; the old one stops working at once.
    RotateToken {
        /// The user's id (a number; see `user list`).
        #[arg(long)]
        user: String,
    },
    /// Refuse every request of a user.
    Disable {
        /// The user's id (a number; see `user list`).
        #[arg(long)]
        user: String,
    },
    /// Accept a disabled user again.
    Enable {
        /// The user's id (a number; see `user list`).
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum S3KeyCommand {
    /// Create an S3 access key for a user (the secret is shown once).
    Create {
        /// The user's id (a number; see `user list`); the key acts with the user's memberships.
        #[arg(long)]
        user: String,
        /// Limit the key to this organization (bucket), whatever else the user belongs to.
        #[arg(long)]
        org: Option<String>,
        /// Limit the key to reading, whatever the user's permissions.
        #[arg(long)]
        read_only: bool,
    },
    /// List S3 access keys (never their secrets).
    List {
        /// Only this user's keys.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke an S3 access key; requests signed with it are refused at once.
    Revoke {
        /// The access key id (see `s3-key list`).
        #[arg(long)]
        key: String,
    },
}

/// Help of `--admin`, the same on `member add` and `member set`.
const ADMIN_FLAG_HELP: &str = "Mark the member as an administrator of the organization. The mark is recorded and \
     shown by `member list`; it grants no API call beyond --permissions, because organizations, \
     members and quotas are managed only with `stowage admin` on the server";

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a user to an organization (or replace its permissions).
    Add {
        /// The organization's id (see `org list`).
        #[arg(long)]
        org: String,
        /// The user's id (a number; see `user list`).
        #[arg(long)]
        user: String,
        /// Comma-separated, at least one of: read, write, delete.
        #[arg(long, default_value = "read,write,delete")]
        permissions: String,
        #[arg(long, help = ADMIN_FLAG_HELP)]
        admin: bool,
    },
    /// Replace a member's permissions (and its administrator mark: absent without --admin).
    Set {
        /// The organization's id (see `org list`).
        #[arg(long)]
        org: String,
        /// The user's id (a number; see `user list`).
        #[arg(long)]
        user: String,
        /// Comma-separated, at least one of: read, write, delete.
        #[arg(long)]
        permissions: String,
        #[arg(long, help = ADMIN_FLAG_HELP)]
        admin: bool,
    },
    /// Remove a user from an organization.
    Remove {
        /// The organization's id (see `org list`).
        #[arg(long)]
        org: String,
        /// The user's id (a number; see `user list`).
        #[arg(long)]
        user: String,
    },
    /// List the members of an organization, with their names.
    List {
        /// The organization's id (see `org list`).
        #[arg(long)]
        org: String,
    },
}

fn org_id(raw: &str) -> Result<OrgId, AdminError> {
    OrgId::parse(raw.trim()).ok_or_else(|| AdminError::UnknownOrg(raw.to_owned()))
}

fn user_id(raw: &str) -> Result<UserId, AdminError> {
    UserId::parse(raw).ok_or_else(|| AdminError::UnknownUser(raw.to_owned()))
}

/// The bucket name of `--bucket`, checked against S3's naming rules.
fn bucket_alias(raw: &str) -> Result<BucketAlias, AdminError> {
    BucketAlias::parse(raw.trim()).map_err(|e| AdminError::Invalid(format!("{e} (--bucket)")))
}

/// Why a bucket name could not be given, for a person.
fn refusal_sentence(bucket: &str, refusal: BucketRefusal) -> String {
    match refusal {
        BucketRefusal::UnknownOrg => "the organization was not found".into(),
        BucketRefusal::Taken(owner) => {
            format!("the bucket name \"{bucket}\" is taken by organization {owner}: choose another name")
        }
    }
}

fn bucket_refusal(bucket: &BucketAlias, refusal: BucketRefusal) -> AdminError {
    AdminError::Invalid(refusal_sentence(bucket.as_str(), refusal))
}

/// The permissions of `--permissions` (read, write, delete; at least one) and `--admin`.
fn permissions(list: &str, admin: bool) -> Result<Permissions, AdminError> {
    let words: Vec<&str> = list.split(',').map(str::trim).filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return Err(AdminError::Invalid(
            "--permissions is empty: give at least one of read, write, delete (comma-separated)".into(),
        ));
    }
    if let Some(word) = words.iter().find(|w| !["read", "write", "delete"].contains(w)) {
        return Err(AdminError::Invalid(format!(
            "unknown permission \"{word}\": the permissions are read, write and delete (comma-separated); \
             --admin marks an administrator"
        )));
    }
    let mut p = Permissions::parse(list).map_err(AdminError::Invalid)?;
    p.admin = admin;
    Ok(p)
}

/// `None` = leave as is, `Some(None)` = back to the default, `Some(Some(n))` = set.
fn quota_value(raw: Option<&str>, bytes: bool) -> Result<Option<Option<u64>>, AdminError> {
    match raw.map(str::trim) {
        None => Ok(None),
        Some("default") => Ok(Some(None)),
        Some(text) if bytes => parse_byte_count(text)
            .map(|n| Some(Some(n)))
            .map_err(AdminError::Invalid),
        Some(text) => text.parse::<u64>().map(|n| Some(Some(n))).map_err(|_| {
            AdminError::Invalid(format!(
                "\"{text}\" is not a file count: give a whole number, or `default`"
            ))
        }),
    }
}

/// A size people read: `10.0 GiB`, `512 B`.
fn size_text(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

fn limit_text(value: Option<u64>, default: u64, show: fn(u64) -> String) -> String {
    match value {
        Some(n) => show(n),
        None => format!("{} (default)", show(default)),
    }
}

/// One line of `stowage admin schema`.
fn schema_line(store: &str, state: SchemaState) -> String {
    let newest = state.newest;
    match state.version {
        None => format!("{store}: not created yet (a first start creates it at schema version {newest})"),
        Some(v) if v < newest => {
            format!("{store}: schema version {v}; this stowage upgrades it to version {newest} when it opens it")
        }
        Some(v) if v == newest => format!("{store}: schema version {v} (up to date)"),
        Some(v) => {
            format!("{store}: schema version {v}, newer than this stowage knows (up to {newest}): run a newer stowage")
        }
    }
}

async fn schema(config: &Config, json_output: bool) -> Result<String, AdminError> {
    Ok(schema_report(schema_versions(config).await?, json_output))
}

fn schema_report(versions: SchemaVersions, json_output: bool) -> String {
    if json_output {
        return serde_json::to_string(&versions).unwrap_or_default();
    }
    let mut lines = vec![schema_line("metadata store", versions.metadata)];
    lines.push(match versions.small_bodies {
        Some(state) => schema_line("small-body store", state),
        None => "small-body store: none (the bodies are in S3)".to_owned(),
    });
    lines.join("\n")
}

/// Columns for people: every column as wide as its widest cell, numbers aligned right.
struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `columns`: (header, right-aligned).
    fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .chain([self.headers[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
                    if self.right[i] {
                        format!("{pad}{cell}")
                    } else {
                        format!("{cell}{pad}")
                    }
                })
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        let mut lines = vec![line(self.headers.clone())];
        lines.extend(self.rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
        lines.join("\n")
    }
}

/// Runs one admin command on the stores `config` names and returns what to print.
pub async fn run(config: &Config, command: AdminCommand, json_output: bool) -> Result<String, AdminError> {
    // Before opening: opening the stores would upgrade them.
    if let AdminCommand::Schema = command {
        return schema(config, json_output).await;
    }
    let opened = open_data_dir(config).await?;
    let admin = Admin {
        meta: &*opened.meta,
        key: &opened.key,
        config,
        json: json_output,
    };
    match command {
        AdminCommand::Org(command) => admin.org(command).await,
        AdminCommand::User(command) => admin.user(command).await,
        AdminCommand::Member(command) => admin.member(command).await,
        AdminCommand::S3Key(command) => admin.s3_key(command).await,
        AdminCommand::Schema => schema(config, json_output).await,
    }
}

/// One admin command's context: the stores, the defaults, and the output wanted.
struct Admin<'a> {
    meta: &'a dyn MetaStore,
    key: &'a ServerKey,
    config: &'a Config,
    json: bool,
}

impl Admin<'_> {
    async fn org(&self, command: OrgCommand) -> Result<String, AdminError> {
        match command {
            OrgCommand::Create {
                name,
                max_bytes,
                max_files,
                bucket,
            } => self.create_org(&name, max_bytes, max_files, bucket.as_deref()).await,
            OrgCommand::List => self.list_orgs().await,
            OrgCommand::SetBucket { org, bucket, .. } => self.set_bucket(&org, bucket.as_deref()).await,
            OrgCommand::SetQuota {
                org,
                max_bytes,
                max_files,
            } => self.set_quota(&org, max_bytes.as_deref(), max_files.as_deref()).await,
        }
    }

    async fn user(&self, command: UserCommand) -> Result<String, AdminError> {
        match command {
            UserCommand::Create { name, server_admin } => self.create_user(&name, server_admin).await,
            UserCommand::List => self.list_users().await,
            UserCommand::Set { user, server_admin } => {
                self.set_server_admin(&user, server_admin.unwrap_or_default()).await
            }
            UserCommand::RotateToken { user } => self.rotate_token(&user).await,
            UserCommand::Disable { user } => self.set_disabled(&user, true).await,
            UserCommand::Enable { user } => self.set_disabled(&user, false).await,
        }
    }

    async fn s3_key(&self, command: S3KeyCommand) -> Result<String, AdminError> {
        match command {
            S3KeyCommand::Create { user, org, read_only } => self.create_s3_key(&user, org.as_deref(), read_only).await,
            S3KeyCommand::List { user } => self.list_s3_keys(user.as_deref()).await,
            S3KeyCommand::Revoke { key } => self.revoke_s3_key(&key).await,
        }
    }

    async fn member(&self, command: MemberCommand) -> Result<String, AdminError> {
        match command {
            MemberCommand::Add {
                org,
                user,
                permissions: list,
                admin,
            }
            | MemberCommand::Set {
                org,
                user,
                permissions: list,
                admin,
            } => self.set_member(&org, &user, &list, admin).await,
            MemberCommand::Remove { org, user } => self.remove_member(&org, &user).await,
            MemberCommand::List { org } => self.list_members(&org).await,
        }
    }

    /// Duplicate names are refused here, before the insert (the schema has no unique name): two
    /// admin commands racing with the same new name could still both succeed.
    async fn create_org(
        &self,
        name: &str,
        max_bytes: Option<u64>,
        max_files: Option<u64>,
        bucket: Option<&str>,
    ) -> Result<String, AdminError> {
        let bucket = bucket.map(bucket_alias).transpose()?;
        let name = name.trim();
        if name.is_empty() {
            return Err(AdminError::Invalid(
                "--name is empty: give the organization a name".into(),
            ));
        }
        if let Some(existing) = self.meta.list_orgs().await?.into_iter().find(|o| o.name == name) {
            return Err(AdminError::Invalid(format!(
                "an organization named \"{name}\" already exists ({}): choose another name",
                existing.id
            )));
        }
        let id = match &bucket {
            None => self.meta.create_org(name, max_bytes, max_files, now_ms()).await?,
            Some(bucket) => {
                let id = self
                    .meta
                    .create_bucket_org(name, bucket, None, now_ms())
                    .await?
                    .map_err(|refusal| bucket_refusal(bucket, refusal))?;
                if max_bytes.is_some() || max_files.is_some() {
                    self.meta.set_quota(&id, max_bytes, max_files).await?;
                }
                id
            }
        };
        Ok(if self.json {
            json!({ "organizationId": id.as_str(), "bucket": bucket.as_ref().map(BucketAlias::as_str) }).to_string()
        } else if let Some(bucket) = &bucket {
            format!("created organization {id} ({name}), bucket name {bucket}")
        } else {
            format!("created organization {id} ({name})")
        })
    }

    async fn set_bucket(&self, org: &str, bucket: Option<&str>) -> Result<String, AdminError> {
        let id = org_id(org)?;
        let bucket = bucket.map(bucket_alias).transpose()?;
        match self.meta.set_org_bucket(&id, bucket.as_ref()).await? {
            Ok(()) => {}
            Err(BucketRefusal::UnknownOrg) => return Err(AdminError::UnknownOrg(org.to_owned())),
            Err(refusal) => {
                let bucket = bucket.as_ref().map(BucketAlias::as_str).unwrap_or_default();
                return Err(AdminError::Invalid(refusal_sentence(bucket, refusal)));
            }
        }
        Ok(if self.json {
            json!({ "organizationId": id.as_str(), "bucket": bucket.as_ref().map(BucketAlias::as_str) }).to_string()
        } else if let Some(bucket) = &bucket {
            format!("organization {id}: bucket name {bucket} (its id works as a bucket name too)")
        } else {
            format!("organization {id}: no bucket name (its id works as a bucket name)")
        })
    }

    async fn list_orgs(&self) -> Result<String, AdminError> {
        let orgs = self.meta.list_orgs().await?;
        let (default_bytes, default_files) = (self.config.default_max_bytes, self.config.default_max_files);
        if self.json {
            let list: Vec<_> = orgs
                .iter()
                .map(|o| {
                    json!({
                        "organizationId": o.id.as_str(), "name": o.name, "bucket": o.bucket,
                        "maxBytes": o.max_bytes.unwrap_or(default_bytes),
                        "maxFiles": o.max_files.unwrap_or(default_files),
                        "usedBytes": o.usage.bytes, "usedFiles": o.usage.files,
                    })
                })
                .collect();
            return Ok(serde_json::Value::Array(list).to_string());
        }
        let mut table = Table::new(&[
            ("organization", false),
            ("name", false),
            ("bucket", false),
            ("used", true),
            ("files", true),
            ("max bytes", true),
            ("max files", true),
        ]);
        for o in &orgs {
            table.row(vec![
                o.id.to_string(),
                o.name.clone(),
                o.bucket.clone().unwrap_or_else(|| "-".into()),
                size_text(o.usage.bytes),
                o.usage.files.to_string(),
                limit_text(o.max_bytes, default_bytes, size_text),
                limit_text(o.max_files, default_files, |n| n.to_string()),
            ]);
        }
        Ok(table.render())
    }

    async fn set_quota(
        &self,
        org: &str,
        max_bytes: Option<&str>,
        max_files: Option<&str>,
    ) -> Result<String, AdminError> {
        let id = org_id(org)?;
        let bytes = quota_value(max_bytes, true)?;
        let files = quota_value(max_files, false)?;
        if bytes.is_none() && files.is_none() {
            return Err(AdminError::Invalid(
                "nothing to set: give --max-bytes, --max-files, or both".into(),
            ));
        }
        let current = self
            .meta
            .org(&id)
            .await?
            .ok_or_else(|| AdminError::UnknownOrg(org.to_owned()))?;
        let bytes = bytes.unwrap_or(current.max_bytes);
        let files = files.unwrap_or(current.max_files);
        if !self.meta.set_quota(&id, bytes, files).await? {
            return Err(AdminError::UnknownOrg(org.to_owned()));
        }
        Ok(if self.json {
            json!({ "organizationId": id.as_str(), "maxBytes": bytes, "maxFiles": files }).to_string()
        } else {
            format!(
                "organization {id}: max bytes {}, max files {}",
                limit_text(bytes, self.config.default_max_bytes, size_text),
                limit_text(files, self.config.default_max_files, |n| n.to_string())
            )
        })
    }

    async fn create_user(&self, name: &str, server_admin: bool) -> Result<String, AdminError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(AdminError::Invalid("--name is empty: give the user a name".into()));
        }
        let token = generate_token();
        let (sealing_key, sealed) = (self.key.clone(), token.clone());
        let id = self
            .meta
            .create_user(
                name,
                server_admin,
                now_ms(),
                Box::new(move |id| sealing_key.seal(id, &sealed).ok()),
            )
            .await?
            .ok_or_else(|| AdminError::Invalid("the user could not be created".into()))?;
        // The first user of a store is a server administrator even without the flag.
        let server_admin = self.meta.user(id).await?.is_some_and(|u| u.server_admin);
        Ok(if self.json {
            json!({ "userId": id.0, "apiToken": token, "serverAdmin": server_admin }).to_string()
        } else {
            let admin = if server_admin { ", server administrator" } else { "" };
            format!("created user {id} ({name}{admin})\napi token (shown once): {token}")
        })
    }

    async fn set_server_admin(&self, user: &str, server_admin: bool) -> Result<String, AdminError> {
        let id = user_id(user)?;
        if !self.meta.set_user_server_admin(id, server_admin).await? {
            return Err(AdminError::UnknownUser(user.to_owned()));
        }
        Ok(if self.json {
            json!({ "userId": id.0, "serverAdmin": server_admin }).to_string()
        } else if server_admin {
            format!("user {id} is a server administrator (may create and delete buckets through the S3 API)")
        } else {
            format!("user {id} is not a server administrator")
        })
    }

    async fn list_users(&self) -> Result<String, AdminError> {
        let users = self.meta.list_users().await?;
        if self.json {
            let list: Vec<_> = users
                .iter()
                .map(|u| json!({ "userId": u.id.0, "name": u.name, "disabled": u.disabled, "serverAdmin": u.server_admin }))
                .collect();
            return Ok(serde_json::Value::Array(list).to_string());
        }
        let mut table = Table::new(&[
            ("user", true),
            ("name", false),
            ("status", false),
            ("server admin", false),
        ]);
        for u in &users {
            let status = if u.disabled { "disabled" } else { "active" };
            let admin = if u.server_admin { "yes" } else { "no" };
            table.row(vec![u.id.to_string(), u.name.clone(), status.into(), admin.into()]);
        }
        Ok(table.render())
    }

    async fn rotate_token(&self, user: &str) -> Result<String, AdminError> {
        let id = user_id(user)?;
        let token = generate_token();
        let sealed = self
            .key
            .seal(id, &token)
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        if !self.meta.set_user_token(id, sealed).await? {
            return Err(AdminError::UnknownUser(user.to_owned()));
        }
        Ok(if self.json {
            json!({ "userId": id.0, "apiToken": token }).to_string()
        } else {
            format!("user {id}: new api token (shown once): {token}\nthe old token no longer works")
        })
    }

    async fn set_disabled(&self, user: &str, disabled: bool) -> Result<String, AdminError> {
        let id = user_id(user)?;
        if !self.meta.set_user_disabled(id, disabled).await? {
            return Err(AdminError::UnknownUser(user.to_owned()));
        }
        Ok(if self.json {
            json!({ "userId": id.0, "disabled": disabled }).to_string()
        } else {
            format!("user {id} {}", if disabled { "disabled" } else { "enabled" })
        })
    }

    async fn create_s3_key(&self, user: &str, org: Option<&str>, read_only: bool) -> Result<String, AdminError> {
        let user_id = user_id(user)?;
        if self.meta.user(user_id).await?.is_none() {
            return Err(AdminError::UnknownUser(user.to_owned()));
        }
        let org = match org {
            None => None,
            Some(raw) => {
                let id = org_id(raw)?;
                if self.meta.org(&id).await?.is_none() {
                    return Err(AdminError::UnknownOrg(raw.to_owned()));
                }
                if self.meta.membership(&id, user_id).await?.is_none() {
                    return Err(AdminError::Invalid(format!(
                        "user {user_id} is not a member of organization {id}, so a key limited to it could reach \
                         nothing: add the membership first (stowage admin member add)"
                    )));
                }
                Some(id)
            }
        };
        let (access_key, secret) = (generate_s3_access_key(), generate_s3_secret());
        let sealed = self
            .key
            .seal_s3_secret(&access_key, &secret)
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        let key = S3Key {
            access_key: access_key.clone(),
            user: user_id,
            org: org.clone(),
            read_only,
            secret: sealed,
            created: now_ms(),
            revoked: None,
            user_disabled: false,
        };
        if !self.meta.create_s3_key(&key).await? {
            return Err(AdminError::UnknownUser(user.to_owned()));
        }
        let org_text = org.as_ref().map(OrgId::as_str);
        Ok(if self.json {
            json!({
                "accessKeyId": access_key, "secretAccessKey": secret, "userId": user_id.0,
                "organizationId": org_text, "readOnly": read_only,
            })
            .to_string()
        } else {
            format!(
                "created S3 key for user {user_id} ({}, {})\naccess key id: {access_key}\nsecret access key (shown once): {secret}",
                org_text.map_or_else(
                    || "all its organizations".to_owned(),
                    |o| format!("organization {o} only")
                ),
                if read_only { "read only" } else { "its permissions" },
            )
        })
    }

    async fn list_s3_keys(&self, user: Option<&str>) -> Result<String, AdminError> {
        let user = user.map(user_id).transpose()?;
        let keys = self.meta.list_s3_keys(user).await?;
        let status = |k: &S3Key| match (k.revoked, k.user_disabled) {
            (Some(_), _) => "revoked",
            (None, true) => "user disabled",
            (None, false) => "active",
        };
        if self.json {
            let list: Vec<_> = keys
                .iter()
                .map(|k| {
                    json!({
                        "accessKeyId": k.access_key, "userId": k.user.0,
                        "organizationId": k.org.as_ref().map(OrgId::as_str), "readOnly": k.read_only,
                        "created": k.created, "revoked": k.revoked, "active": k.usable(), "status": status(k),
                    })
                })
                .collect();
            return Ok(serde_json::Value::Array(list).to_string());
        }
        let mut table = Table::new(&[
            ("access key id", false),
            ("user", true),
            ("organization", false),
            ("access", false),
            ("status", false),
        ]);
        for k in &keys {
            table.row(vec![
                k.access_key.clone(),
                k.user.to_string(),
                k.org.as_ref().map_or_else(|| "all".to_owned(), OrgId::to_string),
                if k.read_only { "read-only" } else { "permissions" }.into(),
                status(k).into(),
            ]);
        }
        Ok(table.render())
    }

    async fn revoke_s3_key(&self, key: &str) -> Result<String, AdminError> {
        let key = key.trim();
        if !self.meta.revoke_s3_key(key, now_ms()).await? {
            return Err(AdminError::UnknownS3Key(key.to_owned()));
        }
        Ok(if self.json {
            json!({ "accessKeyId": key, "revoked": true }).to_string()
        } else {
            format!("S3 key {key} revoked: requests signed with it are refused from now on")
        })
    }

    async fn set_member(&self, org: &str, user: &str, list: &str, admin: bool) -> Result<String, AdminError> {
        let (org_id, user_id) = (org_id(org)?, user_id(user)?);
        let p = permissions(list, admin)?;
        if self.meta.org(&org_id).await?.is_none() {
            return Err(AdminError::UnknownOrg(org.to_owned()));
        }
        if !self.meta.set_member(&org_id, user_id, p).await? {
            return Err(AdminError::UnknownUser(user.to_owned()));
        }
        Ok(if self.json {
            json!({ "organizationId": org_id.as_str(), "userId": user_id.0, "permissions": p.describe() }).to_string()
        } else {
            format!("user {user_id} in organization {org_id}: {}", p.describe())
        })
    }

    async fn remove_member(&self, org: &str, user: &str) -> Result<String, AdminError> {
        let (org_id, user_id) = (org_id(org)?, user_id(user)?);
        if !self.meta.remove_member(&org_id, user_id).await? {
            return Err(AdminError::Invalid(format!(
                "user {user_id} is not a member of organization {org_id}"
            )));
        }
        Ok(if self.json {
            json!({ "organizationId": org_id.as_str(), "userId": user_id.0, "removed": true }).to_string()
        } else {
            format!("removed user {user_id} from organization {org_id}")
        })
    }

    async fn list_members(&self, org: &str) -> Result<String, AdminError> {
        let id = org_id(org)?;
        if self.meta.org(&id).await?.is_none() {
            return Err(AdminError::UnknownOrg(org.to_owned()));
        }
        let members = self.meta.members(&id).await?;
        let names: HashMap<UserId, String> = self
            .meta
            .list_users()
            .await?
            .into_iter()
            .map(|u| (u.id, u.name))
            .collect();
        let name = |user: UserId| names.get(&user).cloned().unwrap_or_default();
        if self.json {
            let list: Vec<_> = members
                .iter()
                .map(|m| json!({ "userId": m.user.0, "name": name(m.user), "permissions": m.permissions.describe() }))
                .collect();
            return Ok(serde_json::Value::Array(list).to_string());
        }
        let mut table = Table::new(&[("user", true), ("name", false), ("permissions", false)]);
        for m in &members {
            table.row(vec![m.user.to_string(), name(m.user), m.permissions.describe()]);
        }
        Ok(table.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_whatever_the_cell_widths() {
        let mut table = Table::new(&[("user", true), ("name", false), ("status", false)]);
        table.row(vec!["1".into(), "a-very-long-user-name".into(), "active".into()]);
        table.row(vec!["12345".into(), "bo".into(), "disabled".into()]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], " user  name                   status");
        assert_eq!(lines[1], "    1  a-very-long-user-name  active");
        assert_eq!(lines[2], "12345  bo                     disabled");
    }

    #[test]
    fn sizes_are_for_people() {
        assert_eq!(size_text(10 * 1024 * 1024 * 1024), "10.0 GiB");
        assert_eq!(size_text(512), "512 B");
        assert_eq!(limit_text(None, 1024, size_text), "1.0 KiB (default)");
    }

    #[test]
    fn permissions_need_known_words_and_at_least_one() {
        assert!(matches!(permissions("", false), Err(AdminError::Invalid(m)) if m.contains("is empty")));
        assert!(matches!(permissions(" , ", false), Err(AdminError::Invalid(m)) if m.contains("is empty")));
        assert!(
            matches!(permissions("read,fly", false), Err(AdminError::Invalid(m)) if m.contains("unknown permission \"fly\""))
        );
        assert!(matches!(permissions("admin", false), Err(AdminError::Invalid(m)) if m.contains("\"admin\"")));
        let p = permissions("read, write", true).unwrap_or_default();
        assert_eq!(p.describe(), "read,write,admin");
    }
}
