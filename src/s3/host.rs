//! Virtual-host-style addressing (`s3_api_domain`): `BUCKET.DOMAIN[:PORT]` names a bucket; any
//! other host (the domain itself, an IP address, a load balancer's name) is path style. The port
//! a client puts in its `Host` header is ignored when matching.

use std::borrow::Cow;

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

pub(super) struct Domain {
    /// Lowercase, without a trailing dot.
    domain: String,
}

impl Domain {
    pub(super) fn new(domain: &str) -> Domain {
        Domain {
            domain: domain.trim().trim_end_matches('.').to_ascii_lowercase(),
        }
    }

    /// The bucket a `Host` header names, if it is `BUCKET.DOMAIN`.
    fn bucket_of(&self, host: &str) -> Option<String> {
        let name = without_port(host).trim_end_matches('.').to_ascii_lowercase();
        let bucket = name.strip_suffix(self.domain.as_str())?.strip_suffix('.')?;
        (!bucket.is_empty()).then(|| bucket.to_owned())
    }
}

/// The host name of a `Host` header: `[::1]:80` → `[::1]`, `a.b:9000` → `a.b`.
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

impl S3Host for Domain {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some(bucket) => VirtualHost::new(Cow::Borrowed(self.domain.as_str())).with_bucket(bucket),
            None => VirtualHost::new(Cow::Borrowed(without_port(host))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_read_from_the_host_whatever_its_port() {
        let domain = Domain::new("S3.Example.test");
        assert_eq!(domain.bucket_of("own.s3.example.test:45641").as_deref(), Some("own"));
        assert_eq!(domain.bucket_of("own.s3.example.test").as_deref(), Some("own"));
        assert_eq!(domain.bucket_of("a.b.s3.example.test.").as_deref(), Some("a.b"));
        for path_style in [
            "s3.example.test:45641",
            "127.0.0.1:5613",
            "[::1]:5613",
            "evil-s3.example.test",
            "other.test",
        ] {
            assert_eq!(domain.bucket_of(path_style), None, "{path_style}");
            let parsed = domain.parse_host_header(path_style).unwrap();
            assert!(parsed.bucket().is_none(), "{path_style}");
        }
    }
}
