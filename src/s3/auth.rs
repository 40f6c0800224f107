//! Who is calling: the secret of an S3 access key (looked up at every request, so a revoked key
//! or a disabled user is refused at once) and the access check that turns a verified signature
//! into the key's [`S3Identity`], stashed in the request for the operations.

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

use super::CallRecord;
use crate::service::{S3Identity, Service};

tokio::task_local! {
    /// The identity the secret lookup of this request found, so that the access check that
    /// follows in the same request does not read the key again.
    pub(super) static LOOKED_UP: std::cell::RefCell<Option<S3Identity>>;
}

/// Secrets of S3 keys, from the service.
pub(super) struct Keys {
    service: Arc<Service>,
}

impl Keys {
    pub(super) fn new(service: Arc<Service>) -> Keys {
        Keys { service }
    }
}

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.service.s3_identity(access_key).await {
            Ok(identity) => {
                let secret = SecretKey::from(identity.secret.clone());
                let _ = LOOKED_UP.try_with(|slot| *slot.borrow_mut() = Some(identity));
                Ok(secret)
            }
            Err(e) => Err(super::error::to_s3(e)),
        }
    }
}

/// The access check: a request must be signed; its key's identity travels with it.
pub(super) struct Access {
    service: Arc<Service>,
}

impl Access {
    pub(super) fn new(service: Arc<Service>) -> Access {
        Access { service }
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let operation = cx.s3_op().name().to_owned();
        let record = cx.extensions_mut().get::<Arc<CallRecord>>().cloned();
        let Some(credentials) = cx.credentials() else {
            if let Some(record) = &record {
                record.operation(&operation);
            }
            return Err(s3_error!(
                AccessDenied,
                "This request is not signed: stowage's S3 API needs an access key (stowage admin s3-key create) and AWS Signature Version 4"
            ));
        };
        let found = LOOKED_UP
            .try_with(|slot| slot.borrow_mut().take())
            .ok()
            .flatten()
            .filter(|identity| identity.access_key() == credentials.access_key);
        let identity = match found {
            Some(identity) => identity,
            None => self
                .service
                .s3_identity(&credentials.access_key)
                .await
                .map_err(super::error::to_s3)?,
        };
        if let Some(record) = &record {
            record.authenticated(&operation);
        }
        cx.extensions_mut().insert(identity);
        Ok(())
    }
}

/// The identity the access check stashed in a request.
pub(super) fn identity<T>(request: &s3s::S3Request<T>) -> S3Result<&S3Identity> {
    request
        .extensions
        .get::<S3Identity>()
        .ok_or_else(|| s3_error!(AccessDenied, "This request is not signed"))
}
