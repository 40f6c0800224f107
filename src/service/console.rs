//! What the web console asks of the service beyond the API's use cases: sign-in sessions kept in
//! the metadata store (so that several servers sharing PostgreSQL share them), the organizations
//! a user belongs to, one file's body, the figures of what a delete would remove, and the members
//! of an organization for its admins. Every check lives here, below the pages: a page that offers
//! an action and a forged request that asks for it meet the same decision.
//!
//! A session ends at once (the next request finds it gone) when it has been idle for
//! `console_idle_timeout_secs`, when it is older than `console_session_max_secs`, when its user
//! is disabled or when the user's API token changes (the session keeps a tag of the sealed token
//! it began with). Losing a membership ends the session's use of that organization at once,
//! since every organization page is authorized on each request.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use super::{Access, AuthError, Principal, Service, ServiceError, ServiceResult, StorageFailure, now_ms};
use crate::blob::BlobStream;
use crate::crypto::{SealedToken, generate_token, hash_matches, request_hash};
use crate::ids::{OrgId, UserId, random_hex};
use crate::key::{FolderPath, Key};
use crate::meta::{
    ConsoleSession, KeyKind, ListEntry, Membership, ObjectMeta, Organization, Permissions, Quota, Usage, User,
};

/// A session's last use is written at most this often (each request of an active session would
/// otherwise be a write).
const TOUCH_EVERY_MS: i64 = 60 * 1000;

/// A new session: the secret goes into the cookie (only its hash is stored; the session's CSRF
/// token is read with it on every request).
#[derive(Debug, Clone)]
pub(crate) struct NewSession {
    pub(crate) secret: String,
}

/// The signed-in user of a console request.
#[derive(Debug, Clone)]
pub(crate) struct ConsoleUser {
    pub(crate) principal: Principal,
    pub(crate) name: String,
    pub(crate) csrf: String,
    /// Whether the user is a server administrator (the server pages are offered).
    pub(crate) server_admin: bool,
}

impl ConsoleUser {
    pub(crate) fn id(&self) -> UserId {
        self.principal.user
    }
}

/// An organization as one of its members sees it.
#[derive(Debug, Clone)]
pub(crate) struct OrgView {
    pub(crate) org: Organization,
    pub(crate) permissions: Permissions,
    pub(crate) quota: Quota,
}

/// A member of an organization, with the user's name.
#[derive(Debug, Clone)]
pub(crate) struct MemberView {
    pub(crate) membership: Membership,
    pub(crate) name: String,
    pub(crate) disabled: bool,
}

/// What deleting a key would remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeletePlan {
    pub(crate) is_folder: bool,
    pub(crate) usage: Usage,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A tag of a sealed token: changes whenever the token is rotated.
fn token_tag(token: &SealedToken) -> String {
    let mut digest = Sha256::new();
    digest.update(&token.nonce);
    digest.update(&token.ciphertext);
    hex::encode(digest.finalize())
}

impl Service {
    /// Signs in with a user id and the user's API token, under the same failed-authentication
    /// limits as the API.
    pub(crate) async fn sign_in(&self, user_raw: &str, token: &str, client: IpAddr) -> ServiceResult<NewSession> {
        let claimed = UserId::parse(user_raw.trim());
        let outcome = self.check_token(user_raw.trim(), token.trim()).await;
        let user = self.count_failure(outcome, client, claimed)?;
        let secret = random_hex(32);
        let now = now_ms();
        let session = ConsoleSession {
            id_hash: sha256_hex(secret.as_bytes()),
            user: user.id,
            csrf: random_hex(32),
            token_tag: token_tag(&user.token),
            created: now,
            last_seen: now,
        };
        self.meta.create_session(&session).await?;
        Ok(NewSession { secret })
    }

    async fn check_token(&self, user_raw: &str, token: &str) -> ServiceResult<User> {
        let user_id = UserId::parse(user_raw).ok_or_else(|| AuthError::UnknownUser(user_raw.to_owned()))?;
        let user = match self.meta.user(user_id).await? {
            Some(user) if !user.disabled => user,
            _ => return Err(AuthError::UnknownUser(user_raw.to_owned()).into()),
        };
        let stored = self.server_key.unseal(user.id, &user.token).map_err(|e| {
            let cause = format!("cannot read the token of user {}: {e}", user.id);
            ServiceError::Unavailable(StorageFailure::Token(cause.into()))
        })?;
        // Both sides hashed the same way, compared in constant time.
        if !hash_matches(&request_hash(&stored, "console"), &request_hash(token, "console")) {
            return Err(AuthError::WrongToken(user_raw.to_owned()).into());
        }
        Ok(user)
    }

    /// The user of a session cookie's secret; `None` when the session is unknown, expired, or
    /// ended by a disabled user or a rotated token (the row is then deleted).
    pub(crate) async fn console_session(&self, secret: &str) -> ServiceResult<Option<ConsoleUser>> {
        let id_hash = sha256_hex(secret.as_bytes());
        let Some(session) = self.meta.session(&id_hash).await? else {
            return Ok(None);
        };
        let now = now_ms();
        let idle = session.last_seen.saturating_add(self.limits.console_idle_ms) <= now;
        let old = session.created.saturating_add(self.limits.console_max_ms) <= now;
        let user = self.meta.user(session.user).await?;
        let valid_user = user.filter(|u| !u.disabled && token_tag(&u.token) == session.token_tag);
        let Some(user) = valid_user.filter(|_| !idle && !old) else {
            self.meta.delete_session(&id_hash).await?;
            return Ok(None);
        };
        if now.saturating_sub(session.last_seen) >= TOUCH_EVERY_MS {
            self.meta.touch_session(&id_hash, now).await?;
        }
        Ok(Some(ConsoleUser {
            principal: Principal { user: user.id },
            name: user.name,
            csrf: session.csrf,
            server_admin: user.server_admin,
        }))
    }

    /// Ends the session of a cookie's secret (nothing happens when there is none).
    pub(crate) async fn sign_out(&self, secret: &str) -> ServiceResult<()> {
        self.meta.delete_session(&sha256_hex(secret.as_bytes())).await?;
        Ok(())
    }

    /// Forgets sessions past their idle or absolute expiry (run with collection).
    pub(crate) async fn forget_stale_sessions(&self) -> ServiceResult<u64> {
        let now = now_ms();
        Ok(self
            .meta
            .delete_stale_sessions(
                now.saturating_sub(self.limits.console_idle_ms),
                now.saturating_sub(self.limits.console_max_ms),
            )
            .await?)
    }

    /// The organizations the caller is a member of, by name.
    pub(crate) async fn my_orgs(&self, principal: &Principal) -> ServiceResult<Vec<OrgView>> {
        let mut out = Vec::new();
        for org in self.meta.list_orgs().await? {
            if let Some(membership) = self.meta.membership(&org.id, principal.user).await? {
                let quota = self.quota_of(&org.id).await?;
                out.push(OrgView {
                    org,
                    permissions: membership.permissions,
                    quota,
                });
            }
        }
        out.sort_by(|a, b| {
            a.org
                .name
                .cmp(&b.org.name)
                .then(a.org.id.as_str().cmp(b.org.id.as_str()))
        });
        Ok(out)
    }

    /// One organization of the caller, with the caller's permissions and its quota (a member
    /// without read sees it too: the page then offers nothing).
    pub(crate) async fn my_org(&self, principal: &Principal, org_raw: &str) -> ServiceResult<OrgView> {
        let org_id = OrgId::parse(org_raw.trim()).ok_or(ServiceError::OrganizationNotFound)?;
        let membership = self
            .meta
            .membership(&org_id, principal.user)
            .await?
            .ok_or(ServiceError::OrganizationNotFound)?;
        let org = self
            .meta
            .org(&org_id)
            .await?
            .ok_or(ServiceError::OrganizationNotFound)?;
        let quota = self.quota_of(&org_id).await?;
        Ok(OrgView {
            org,
            permissions: membership.permissions,
            quota,
        })
    }

    /// A file's properties and its body, for a straight download.
    pub(crate) async fn open_file(
        &self,
        principal: &Principal,
        org_raw: &str,
        key_raw: &str,
    ) -> ServiceResult<(ObjectMeta, BlobStream)> {
        let meta = self.properties(principal, org_raw, key_raw).await?;
        let stream = self.blobs.open(&meta.blob).await?;
        Ok((meta, stream))
    }

    /// Checks an upload before its body is read: write permission and the key's rules.
    pub(crate) async fn check_upload(&self, principal: &Principal, org_raw: &str, key_raw: &str) -> ServiceResult<()> {
        self.authorize(principal, org_raw, Access::Write).await?;
        Key::parse(key_raw)?;
        Ok(())
    }

    /// The md5 of each file of a listing page (files are listed by name, so the page's files are
    /// the range from its first file to its last), read with the caller's read permission.
    pub(crate) async fn page_md5s(
        &self,
        principal: &Principal,
        org_raw: &str,
        path_raw: &str,
        entries: &[ListEntry],
    ) -> ServiceResult<std::collections::HashMap<String, String>> {
        let mut files = entries.iter().filter(|e| !e.is_folder).map(|e| e.name.as_str());
        let Some(first) = files.next() else {
            return Ok(Default::default());
        };
        let last = files.next_back().unwrap_or(first);
        let org = self.authorize(principal, org_raw, Access::Read).await?;
        let folder = FolderPath::parse(path_raw)?;
        Ok(self
            .meta
            .file_md5s(&org, &folder, first, last)
            .await?
            .into_iter()
            .collect())
    }

    /// What deleting `key_raw` would remove (a file, or a folder with everything under it), for
    /// the confirmation; the caller must be allowed to delete.
    pub(crate) async fn delete_plan(
        &self,
        principal: &Principal,
        org_raw: &str,
        key_raw: &str,
    ) -> ServiceResult<DeletePlan> {
        let org = self.authorize(principal, org_raw, Access::Delete).await?;
        let key = Key::parse_file_or_folder(key_raw)?;
        if let KeyKind::File(meta) = self.meta.key_kind(&org, &key).await? {
            return Ok(DeletePlan {
                is_folder: false,
                usage: Usage {
                    bytes: meta.size,
                    files: 1,
                },
            });
        }
        let folder = FolderPath::parse(key.as_str())?;
        match self.meta.folder_usage(&org, &folder).await? {
            Some(usage) => Ok(DeletePlan { is_folder: true, usage }),
            None => Err(ServiceError::ObjectNotFound(key.to_string())),
        }
    }

    // --- members (organization admins) ---------------------------------------------------------

    /// The members of an organization, for its admins.
    pub(crate) async fn members(&self, principal: &Principal, org_raw: &str) -> ServiceResult<Vec<MemberView>> {
        let org = self.authorize(principal, org_raw, Access::Admin).await?;
        let mut out = Vec::new();
        for membership in self.meta.members(&org).await? {
            let user = self.meta.user(membership.user).await?;
            out.push(MemberView {
                name: user.as_ref().map(|u| u.name.clone()).unwrap_or_default(),
                disabled: user.is_none_or(|u| u.disabled),
                membership,
            });
        }
        Ok(out)
    }

    /// Adds a member, or changes a member's permissions. An admin cannot take the admin
    /// permission from the organization's last admin.
    pub(crate) async fn set_member(
        &self,
        principal: &Principal,
        org_raw: &str,
        user_raw: &str,
        permissions: Permissions,
    ) -> ServiceResult<()> {
        let org = self.authorize(principal, org_raw, Access::Admin).await?;
        let user = self.known_user(user_raw).await?;
        if !permissions.admin {
            self.keep_an_admin(&org, user).await?;
        }
        if !self.meta.set_member(&org, user, permissions).await? {
            return Err(ServiceError::UserNotFound(user_raw.trim().to_owned()));
        }
        Ok(())
    }

    /// Removes a member (their console sessions lose the organization at once).
    pub(crate) async fn remove_member(
        &self,
        principal: &Principal,
        org_raw: &str,
        user_raw: &str,
    ) -> ServiceResult<()> {
        let org = self.authorize(principal, org_raw, Access::Admin).await?;
        let user = UserId::parse(user_raw.trim()).ok_or_else(|| ServiceError::UserNotFound(user_raw.trim().into()))?;
        self.keep_an_admin(&org, user).await?;
        if !self.meta.remove_member(&org, user).await? {
            return Err(ServiceError::NotAMember(user_raw.trim().to_owned()));
        }
        Ok(())
    }

    async fn known_user(&self, user_raw: &str) -> ServiceResult<UserId> {
        let not_found = || ServiceError::UserNotFound(user_raw.trim().to_owned());
        let id = UserId::parse(user_raw.trim()).ok_or_else(not_found)?;
        self.meta.user(id).await?.ok_or_else(not_found)?;
        Ok(id)
    }

    /// Refuses a change that would leave `org` without an admin when `user` stops being one.
    async fn keep_an_admin(&self, org: &OrgId, user: UserId) -> ServiceResult<()> {
        let members = self.meta.members(org).await?;
        let other_admin = members.iter().any(|m| m.user != user && m.permissions.admin);
        let user_is_admin = members.iter().any(|m| m.user == user && m.permissions.admin);
        if user_is_admin && !other_admin {
            return Err(ServiceError::LastAdmin);
        }
        Ok(())
    }

    // --- the whole server (server administrators) ----------------------------------------------

    /// Refuses a caller who is not an enabled server administrator.
    async fn server_admin(&self, principal: &Principal) -> ServiceResult<()> {
        match self.meta.user(principal.user).await? {
            Some(user) if user.server_admin && !user.disabled => Ok(()),
            _ => Err(ServiceError::ServerAdminOnly),
        }
    }

    /// Every organization with the quota that applies to it, by name.
    pub(crate) async fn all_orgs(&self, principal: &Principal) -> ServiceResult<Vec<(Organization, Quota)>> {
        self.server_admin(principal).await?;
        let mut out = Vec::new();
        for org in self.meta.list_orgs().await? {
            let quota = self.quota_of(&org.id).await?;
            out.push((org, quota));
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name).then(a.0.id.as_str().cmp(b.0.id.as_str())));
        Ok(out)
    }

    /// Every user, by id.
    pub(crate) async fn all_users(&self, principal: &Principal) -> ServiceResult<Vec<User>> {
        self.server_admin(principal).await?;
        Ok(self.meta.list_users().await?)
    }

    /// Creates an organization (names are unique) with the caller as its admin member.
    pub(crate) async fn create_org(&self, principal: &Principal, name: &str) -> ServiceResult<OrgId> {
        self.server_admin(principal).await?;
        let name = name.trim();
        if name.is_empty() {
            return Err(ServiceError::EmptyName("The organization's name"));
        }
        if self.meta.list_orgs().await?.iter().any(|o| o.name == name) {
            return Err(ServiceError::DuplicateOrgName(name.to_owned()));
        }
        let org = self.meta.create_org(name, None, None, now_ms()).await?;
        self.meta.set_member(&org, principal.user, Permissions::ALL).await?;
        Ok(org)
    }

    /// Sets an organization's quotas; `None` is the server's default.
    pub(crate) async fn set_org_quota(
        &self,
        principal: &Principal,
        org_raw: &str,
        max_bytes: Option<u64>,
        max_files: Option<u64>,
    ) -> ServiceResult<()> {
        self.server_admin(principal).await?;
        let org = OrgId::parse(org_raw.trim()).ok_or(ServiceError::OrganizationNotFound)?;
        if !self.meta.set_quota(&org, max_bytes, max_files).await? {
            return Err(ServiceError::OrganizationNotFound);
        }
        Ok(())
    }

    /// Creates a user (not a server administrator); returns the id and the API token, shown once.
    pub(crate) async fn create_user(&self, principal: &Principal, name: &str) -> ServiceResult<(UserId, String)> {
        self.server_admin(principal).await?;
        let name = name.trim();
        if name.is_empty() {
            return Err(ServiceError::EmptyName("The user's name"));
        }
        let token = generate_token();
        let (key, sealed) = (self.server_key.clone(), token.clone());
        let seal = Box::new(move |id| key.seal(id, &sealed).ok());
        let id = self
            .meta
            .create_user(name, false, now_ms(), seal)
            .await?
            .ok_or_else(|| {
                ServiceError::Unavailable(StorageFailure::Token("the new user's token could not be sealed".into()))
            })?;
        Ok((id, token))
    }

    /// Disables or enables a user (a disabled user's requests, links and sessions stop at once).
    pub(crate) async fn set_user_disabled(
        &self,
        principal: &Principal,
        user_raw: &str,
        disabled: bool,
    ) -> ServiceResult<()> {
        self.server_admin(principal).await?;
        let user = self.known_user(user_raw).await?;
        if disabled && user == principal.user {
            return Err(ServiceError::DisableSelf);
        }
        self.meta.set_user_disabled(user, disabled).await?;
        Ok(())
    }

    /// Gives the caller a new API token (returned once) and makes the old one stop working, for
    /// the API and for every console session of the caller.
    pub(crate) async fn rotate_own_token(&self, principal: &Principal) -> ServiceResult<String> {
        let token = generate_token();
        let sealed = self.server_key.seal(principal.user, &token).map_err(|e| {
            let cause = format!("cannot seal a new token for user {}: {e}", principal.user);
            ServiceError::Unavailable(StorageFailure::Token(cause.into()))
        })?;
        if !self.meta.set_user_token(principal.user, sealed).await? {
            return Err(ServiceError::UserNotFound(principal.user.to_string()));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_token_changes_the_tag() {
        let a = SealedToken {
            nonce: vec![1; 12],
            ciphertext: vec![2; 48],
        };
        let b = SealedToken {
            nonce: vec![3; 12],
            ..a.clone()
        };
        assert_eq!(token_tag(&a), token_tag(&a.clone()));
        assert_ne!(token_tag(&a), token_tag(&b));
        assert_eq!(sha256_hex(b"abc").len(), 64);
    }
}
