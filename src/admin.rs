//! `stowage admin`: organizations, users, tokens, memberships and quotas, worked directly on a
//! data directory (safe while the server runs: SQLite WAL with a busy timeout). People get
//! readable lines; `--json` gives scripts JSON.

use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::{Config, parse_byte_count};
use crate::crypto::generate_token;
use crate::ids::{OrgId, UserId};
use crate::meta::{Identities, MetaError, Permissions};
use crate::server::{Opened, ServeError, open_data_dir};
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
}

#[derive(Debug, Args)]
pub(crate) struct Output {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization.
    Create {
        #[arg(long)]
        name: String,
        /// Storage quota in bytes ("10 GiB" also works); default: the server's default.
        #[arg(long, value_parser = parse_byte_count)]
        max_bytes: Option<u64>,
        /// File-count quota; default: the server's default.
        #[arg(long)]
        max_files: Option<u64>,
    },
    /// List organizations with usage and quotas.
    List,
    /// Set or reset an organization's quotas ("default" returns to the server's default).
    SetQuota {
        #[arg(long)]
        org: String,
        #[arg(long)]
        max_bytes: Option<String>,
        #[arg(long)]
        max_files: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user with a new API token (shown once).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List users.
    List,
    /// Replace a user's API token; the old one stops working at once.
    RotateToken {
        #[arg(long)]
        user: String,
    },
    /// Refuse every request of a user.
    Disable {
        #[arg(long)]
        user: String,
    },
    /// Accept a disabled user again.
    Enable {
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a user to an organization (or update its permissions).
    Add {
        #[arg(long)]
        org: String,
        #[arg(long)]
        user: String,
        /// Comma-separated: read, write, delete.
        #[arg(long, default_value = "read,write,delete")]
        permissions: String,
        /// Also manages members and quotas.
        #[arg(long)]
        admin: bool,
    },
    /// Change a member's permissions.
    Set {
        #[arg(long)]
        org: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        permissions: String,
        #[arg(long)]
        admin: bool,
    },
    /// Remove a user from an organization.
    Remove {
        #[arg(long)]
        org: String,
        #[arg(long)]
        user: String,
    },
    /// List the members of an organization.
    List {
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

fn permissions(list: &str, admin: bool) -> Result<Permissions, AdminError> {
    let mut p = Permissions::parse(list).map_err(AdminError::Invalid)?;
    p.admin |= admin;
    Ok(p)
}

/// `None` = leave as is, `Some(None)` = back to the default, `Some(Some(n))` = set.
fn quota_value(raw: Option<&str>, bytes: bool) -> Result<Option<Option<u64>>, AdminError> {
    match raw {
        None => Ok(None),
        Some("default") => Ok(Some(None)),
        Some(text) if bytes => parse_byte_count(text)
            .map(|n| Some(Some(n)))
            .map_err(AdminError::Invalid),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .map(|n| Some(Some(n)))
            .map_err(|_| AdminError::Invalid(format!("'{text}' is not a file count"))),
    }
}

fn limit_text(value: Option<u64>, default: u64) -> String {
    match value {
        Some(n) => n.to_string(),
        None => format!("{default} (default)"),
    }
}

/// Runs one admin command and returns what to print.
pub async fn run(config: &Config, command: AdminCommand, json_output: bool) -> Result<String, AdminError> {
    let Opened { meta, key } = open_data_dir(config).await?;
    let out = match command {
        AdminCommand::Org(OrgCommand::Create {
            name,
            max_bytes,
            max_files,
        }) => {
            let id = meta.create_org(&name, max_bytes, max_files, now_ms()).await?;
            if json_output {
                json!({ "organizationId": id.as_str() }).to_string()
            } else {
                format!("created organization {id} ({name})")
            }
        }
        AdminCommand::Org(OrgCommand::List) => {
            let orgs = meta.list_orgs().await?;
            if json_output {
                let list: Vec<_> = orgs
                    .iter()
                    .map(|o| {
                        json!({
                            "organizationId": o.id.as_str(), "name": o.name,
                            "maxBytes": o.max_bytes.unwrap_or(config.default_max_bytes),
                            "maxFiles": o.max_files.unwrap_or(config.default_max_files),
                            "usedBytes": o.usage.bytes, "usedFiles": o.usage.files,
                        })
                    })
                    .collect();
                serde_json::Value::Array(list).to_string()
            } else {
                let mut lines = vec![format!(
                    "{:<32}  {:<20}  {:>14}  {:>8}  max bytes / max files",
                    "organization", "name", "used bytes", "files"
                )];
                for o in &orgs {
                    lines.push(format!(
                        "{:<32}  {:<20}  {:>14}  {:>8}  {} / {}",
                        o.id,
                        o.name,
                        o.usage.bytes,
                        o.usage.files,
                        limit_text(o.max_bytes, config.default_max_bytes),
                        limit_text(o.max_files, config.default_max_files)
                    ));
                }
                lines.join("\n")
            }
        }
        AdminCommand::Org(OrgCommand::SetQuota {
            org,
            max_bytes,
            max_files,
        }) => {
            let id = org_id(&org)?;
            let current = meta
                .org(&id)
                .await?
                .ok_or_else(|| AdminError::UnknownOrg(org.clone()))?;
            let bytes = quota_value(max_bytes.as_deref(), true)?.unwrap_or(current.max_bytes);
            let files = quota_value(max_files.as_deref(), false)?.unwrap_or(current.max_files);
            if !meta.set_quota(&id, bytes, files).await? {
                return Err(AdminError::UnknownOrg(org));
            }
            if json_output {
                json!({ "organizationId": id.as_str(), "maxBytes": bytes, "maxFiles": files }).to_string()
            } else {
                format!(
                    "organization {id}: max bytes {}, max files {}",
                    limit_text(bytes, config.default_max_bytes),
                    limit_text(files, config.default_max_files)
                )
            }
        }
        AdminCommand::User(UserCommand::Create { name }) => {
            let token = generate_token();
            let (sealing_key, sealed) = (key.clone(), token.clone());
            let id = meta
                .create_user(&name, now_ms(), Box::new(move |id| sealing_key.seal(id, &sealed).ok()))
                .await?
                .ok_or_else(|| AdminError::Invalid("the user could not be created".into()))?;
            if json_output {
                json!({ "userId": id.0, "apiToken": token }).to_string()
            } else {
                format!("created user {id} ({name})\napi token (shown once): {token}")
            }
        }
        AdminCommand::User(UserCommand::List) => {
            let users = meta.list_users().await?;
            if json_output {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| json!({ "userId": u.id.0, "name": u.name, "disabled": u.disabled }))
                    .collect();
                serde_json::Value::Array(list).to_string()
            } else {
                let mut lines = vec![format!("{:>8}  {:<24}  status", "user", "name")];
                for u in &users {
                    lines.push(format!(
                        "{:>8}  {:<24}  {}",
                        u.id,
                        u.name,
                        if u.disabled { "disabled" } else { "active" }
                    ));
                }
                lines.join("\n")
            }
        }
        AdminCommand::User(UserCommand::RotateToken { user }) => {
            let id = user_id(&user)?;
            let token = generate_token();
            let sealed = key.seal(id, &token).map_err(|e| AdminError::Invalid(e.to_string()))?;
            if !meta.set_user_token(id, sealed).await? {
                return Err(AdminError::UnknownUser(user));
            }
            if json_output {
                json!({ "userId": id.0, "apiToken": token }).to_string()
            } else {
                format!("user {id}: new api token (shown once): {token}\nthe old token no longer works")
            }
        }
        AdminCommand::User(UserCommand::Disable { user }) => set_disabled(&*meta, &user, true, json_output).await?,
        AdminCommand::User(UserCommand::Enable { user }) => set_disabled(&*meta, &user, false, json_output).await?,
        AdminCommand::Member(MemberCommand::Add {
            org,
            user,
            permissions: list,
            admin,
        })
        | AdminCommand::Member(MemberCommand::Set {
            org,
            user,
            permissions: list,
            admin,
        }) => {
            let (org_id, user_id) = (org_id(&org)?, user_id(&user)?);
            let p = permissions(&list, admin)?;
            if meta.org(&org_id).await?.is_none() {
                return Err(AdminError::UnknownOrg(org));
            }
            if !meta.set_member(&org_id, user_id, p).await? {
                return Err(AdminError::UnknownUser(user));
            }
            if json_output {
                json!({ "organizationId": org_id.as_str(), "userId": user_id.0, "permissions": p.describe() })
                    .to_string()
            } else {
                format!("user {user_id} in organization {org_id}: {}", p.describe())
            }
        }
        AdminCommand::Member(MemberCommand::Remove { org, user }) => {
            let (org_id, user_id) = (org_id(&org)?, user_id(&user)?);
            if !meta.remove_member(&org_id, user_id).await? {
                return Err(AdminError::Invalid(format!(
                    "user {user_id} is not a member of organization {org_id}"
                )));
            }
            if json_output {
                json!({ "organizationId": org_id.as_str(), "userId": user_id.0, "removed": true }).to_string()
            } else {
                format!("removed user {user_id} from organization {org_id}")
            }
        }
        AdminCommand::Member(MemberCommand::List { org }) => {
            let id = org_id(&org)?;
            if meta.org(&id).await?.is_none() {
                return Err(AdminError::UnknownOrg(org));
            }
            let members = meta.members(&id).await?;
            if json_output {
                let list: Vec<_> = members
                    .iter()
                    .map(|m| json!({ "userId": m.user.0, "permissions": m.permissions.describe() }))
                    .collect();
                serde_json::Value::Array(list).to_string()
            } else {
                let mut lines = vec![format!("{:>8}  permissions", "user")];
                for m in &members {
                    lines.push(format!("{:>8}  {}", m.user, m.permissions.describe()));
                }
                lines.join("\n")
            }
        }
    };
    Ok(out)
}

async fn set_disabled(
    meta: &dyn Identities,
    user: &str,
    disabled: bool,
    json_output: bool,
) -> Result<String, AdminError> {
    let id = user_id(user)?;
    if !meta.set_user_disabled(id, disabled).await? {
        return Err(AdminError::UnknownUser(user.to_owned()));
    }
    Ok(if json_output {
        json!({ "userId": id.0, "disabled": disabled }).to_string()
    } else {
        format!("user {id} {}", if disabled { "disabled" } else { "enabled" })
    })
}
