//! HTTP preconditions of S3 reads and writes (RFC 9110 section 13, as S3 applies them):
//! `If-Match`, `If-None-Match`, `If-Modified-Since` and `If-Unmodified-Since`.

use s3s::dto::{ETagCondition, Timestamp};

use crate::meta::Millis;

/// What the preconditions of a read say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: a condition the client required does not hold.
    PreconditionFailed,
}

/// The preconditions a request sent.
#[derive(Debug, Default)]
pub(super) struct Preconditions<'a> {
    pub(super) if_match: Option<&'a ETagCondition>,
    pub(super) if_none_match: Option<&'a ETagCondition>,
    pub(super) if_modified_since: Option<&'a Timestamp>,
    pub(super) if_unmodified_since: Option<&'a Timestamp>,
}

/// Evaluates preconditions against an object's ETag (without quotes) and modification time, in
/// RFC 9110's order: If-Match, else If-Unmodified-Since; then If-None-Match, else
/// If-Modified-Since. HTTP dates have whole seconds, so times compare in seconds.
pub(super) fn evaluate(conditions: &Preconditions<'_>, etag: &str, modified: Millis) -> Verdict {
    let modified_secs = modified.div_euclid(1000);
    let matches = |condition: &ETagCondition| match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => tag.value() == etag,
    };
    if let Some(condition) = conditions.if_match {
        if !matches(condition) {
            return Verdict::PreconditionFailed;
        }
    } else if let Some(since) = conditions.if_unmodified_since
        && modified_secs > seconds(since)
    {
        return Verdict::PreconditionFailed;
    }
    if let Some(condition) = conditions.if_none_match {
        if matches(condition) {
            return Verdict::NotModified;
        }
    } else if let Some(since) = conditions.if_modified_since
        && modified_secs <= seconds(since)
    {
        return Verdict::NotModified;
    }
    Verdict::Proceed
}

fn seconds(timestamp: &Timestamp) -> i64 {
    let time: time::OffsetDateTime = timestamp.clone().into();
    time.unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::ETag;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64))
    }

    #[test]
    fn preconditions_follow_rfc_9110_order() {
        let tag = ETagCondition::ETag(ETag::Strong("abc".into()));
        let other = ETagCondition::ETag(ETag::Strong("xyz".into()));
        let modified = 1_000_500; // 1000.5 s
        let check = |c: Preconditions<'_>| evaluate(&c, "abc", modified);
        assert_eq!(check(Preconditions::default()), Verdict::Proceed);
        let if_match = |t| Preconditions {
            if_match: Some(t),
            ..Default::default()
        };
        assert_eq!(check(if_match(&tag)), Verdict::Proceed);
        assert_eq!(check(if_match(&other)), Verdict::PreconditionFailed);
        assert_eq!(check(if_match(&ETagCondition::Any)), Verdict::Proceed);
        let none_match = |t| Preconditions {
            if_none_match: Some(t),
            ..Default::default()
        };
        assert_eq!(check(none_match(&tag)), Verdict::NotModified);
        assert_eq!(check(none_match(&other)), Verdict::Proceed);
        let (before, same, after) = (at(999), at(1000), at(1001));
        let since = |t| Preconditions {
            if_modified_since: Some(t),
            ..Default::default()
        };
        assert_eq!(check(since(&before)), Verdict::Proceed);
        assert_eq!(check(since(&same)), Verdict::NotModified);
        assert_eq!(check(since(&after)), Verdict::NotModified);
        let unmodified = |t| Preconditions {
            if_unmodified_since: Some(t),
            ..Default::default()
        };
        assert_eq!(check(unmodified(&before)), Verdict::PreconditionFailed);
        assert_eq!(check(unmodified(&same)), Verdict::Proceed);
        // If-Match that holds overrides a failing If-Unmodified-Since, as S3 documents.
        let both = Preconditions {
            if_match: Some(&tag),
            if_unmodified_since: Some(&before),
            ..Default::default()
        };
        assert_eq!(check(both), Verdict::Proceed);
        // If-None-Match that does not match overrides If-Modified-Since.
        let both = Preconditions {
            if_none_match: Some(&other),
            if_modified_since: Some(&after),
            ..Default::default()
        };
        assert_eq!(check(both), Verdict::Proceed);
    }
}
