//! S3 error answers: each service error becomes the S3 code clients expect, with the service's
//! sentence as the message. A storage failure answers `ServiceUnavailable` with its fixed sentence;
//! the whole cause chain goes to the log only.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use s3s::{S3Error, S3ErrorCode};

use crate::key::KeyError;
use crate::service::{AuthError, ServiceError};

/// The S3 error for a service error.
pub(super) fn to_s3(error: ServiceError) -> S3Error {
    let message = xml_safe(&error.to_string());
    let code = match &error {
        ServiceError::Unauthorized(AuthError::InvalidAccessKey(_)) => S3ErrorCode::InvalidAccessKeyId,
        ServiceError::Unauthorized(_)
        | ServiceError::PermissionDenied(_)
        | ServiceError::KeyReadOnly(_)
        | ServiceError::NotServerAdmin
        | ServiceError::KeyCannotManageBuckets
        | ServiceError::ServerAdminOnly => S3ErrorCode::AccessDenied,
        ServiceError::OrganizationNotFound | ServiceError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        ServiceError::BadKey(KeyError::TooLong { .. }) => S3ErrorCode::KeyTooLongError,
        ServiceError::BadKey(_) | ServiceError::AncestorIsFile { .. } | ServiceError::KeyIsFolder(_) => {
            S3ErrorCode::InvalidArgument
        }
        ServiceError::BadBucketName(_) => S3ErrorCode::InvalidBucketName,
        ServiceError::BucketTaken(_) => S3ErrorCode::BucketAlreadyExists,
        ServiceError::BucketAlreadyOwned(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        ServiceError::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        ServiceError::ObjectNotFound(_) | ServiceError::IsFolder(_) => S3ErrorCode::NoSuchKey,
        ServiceError::Quota(_) => {
            let mut refusal = S3Error::with_message(S3ErrorCode::Custom("QuotaExceeded".into()), message);
            refusal.set_status_code(StatusCode::FORBIDDEN);
            return refusal;
        }
        ServiceError::TooLarge { .. } => S3ErrorCode::EntityTooLarge,
        ServiceError::RateLimited { .. } | ServiceError::TooManyUploads { .. } => S3ErrorCode::SlowDown,
        ServiceError::UploadBroken => S3ErrorCode::IncompleteBody,
        ServiceError::ObjectExists(_) => S3ErrorCode::PreconditionFailed,
        ServiceError::BadDigest { .. } => S3ErrorCode::BadDigest,
        ServiceError::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
        ServiceError::InvalidPart(_) => S3ErrorCode::InvalidPart,
        ServiceError::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        ServiceError::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
        ServiceError::PartNumberOutOfRange(_) => S3ErrorCode::InvalidArgument,
        ServiceError::Unavailable(failure) => {
            tracing::error!(error = %crate::service::error::CauseChain(failure), "storage failure");
            S3ErrorCode::ServiceUnavailable
        }
        ServiceError::InvalidRequest(_)
        | ServiceError::NoKeys
        | ServiceError::NothingFound
        | ServiceError::TooManyKeys { .. }
        | ServiceError::JobTooLarge { .. }
        | ServiceError::JobNotFound(_)
        | ServiceError::JobExpired(_)
        | ServiceError::DuplicateOrgName(_)
        | ServiceError::EmptyName(_)
        | ServiceError::DisableSelf
        | ServiceError::UserNotFound(_)
        | ServiceError::NotAMember(_)
        | ServiceError::LastAdmin => S3ErrorCode::InvalidRequest,
    };
    S3Error::with_message(code, message)
}

/// A message XML can carry: control characters (which a key may hold, and which XML 1.0 cannot
/// contain even escaped) are written as `U+0001`.
fn xml_safe(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                format!("U+{:04X}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// 503 `SlowDown` for an address over the failed-authentication limit, before any work.
pub(super) fn slow_down(retry_after: u64, request_id: &str) -> Response {
    let message = format!("Too many failed authentications from this address; try again in {retry_after} seconds");
    let mut response = xml_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown", &message, request_id);
    if let Ok(value) = retry_after.to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// 501 `NotImplemented` for a browser-form upload (POST object), answered before its body is read.
pub(super) fn form_upload_not_implemented(request_id: &str) -> Response {
    let mut response = xml_error(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "Browser-form uploads (POST object) are not supported: use PutObject or a presigned PUT URL",
        request_id,
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

/// 500 `InternalError`, when the S3 layer itself failed to produce an answer.
pub(super) fn internal(request_id: &str) -> Response {
    xml_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "The server failed to answer this request; try again, and tell the operator if it persists",
        request_id,
    )
}

fn xml_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><RequestId>{request_id}</RequestId></Error>",
        escape(message)
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/xml"),
    );
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::QuotaExceeded;

    #[test]
    fn service_errors_become_the_codes_clients_expect() {
        let cases: Vec<(ServiceError, &str, u16)> = vec![
            (
                AuthError::InvalidAccessKey("AK".into()).into(),
                "InvalidAccessKeyId",
                403,
            ),
            (ServiceError::NoSuchBucket("b".into()), "NoSuchBucket", 404),
            (ServiceError::ObjectNotFound("k".into()), "NoSuchKey", 404),
            (ServiceError::BucketNotEmpty("b".into()), "BucketNotEmpty", 409),
            (ServiceError::ObjectExists("k".into()), "PreconditionFailed", 412),
            (ServiceError::TooLarge { limit: 1 }, "EntityTooLarge", 400),
            (ServiceError::InvalidPartOrder, "InvalidPartOrder", 400),
        ];
        for (error, code, status) in cases {
            let s3 = to_s3(error);
            assert_eq!(s3.code().as_str(), code);
            assert_eq!(s3.status_code().map(|s| s.as_u16()), Some(status), "{code}");
        }
    }

    #[test]
    fn messages_never_carry_control_characters() {
        let s3 = to_s3(ServiceError::BadKey(crate::key::KeyError::ControlCharacter(
            "ctl\u{1}x".into(),
        )));
        let message = s3.message().unwrap_or_default().to_owned();
        assert!(message.contains("ctlU+0001x"), "{message}");
        assert!(!message.chars().any(char::is_control), "{message}");
    }

    #[test]
    fn a_quota_refusal_has_its_own_code_and_names_the_limit() {
        let exceeded = QuotaExceeded::Bytes {
            used: 90,
            limit: 100,
            added: 20,
        };
        let s3 = to_s3(ServiceError::Quota(exceeded));
        assert_eq!(s3.code().as_str(), "QuotaExceeded");
        assert_eq!(s3.status_code(), Some(StatusCode::FORBIDDEN));
        assert!(s3.message().is_some_and(|m| m.contains("100")), "{:?}", s3.message());
    }
}
