//! Limits failed authentications per client address and per user id: after `limit` failures
//! within `window` from an address or for a user id, further *failed* attempts are answered 429
//! instead of 401. A correct credential always passes, so neither a stranger who knows a user id
//! nor a noisy neighbour behind the same address (a NAT, a proxy) can lock anyone out.
//! Successful requests are never counted.
//! IPv6 addresses are counted per /64, the smallest block one client usually holds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ids::UserId;

/// Most subjects remembered; older windows are dropped first when the table is full.
const MAX_SUBJECTS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Subject {
    Address(IpAddr),
    User(i64),
}

/// The address as counted: IPv4 as is, IPv6 by its /64 prefix.
fn counted(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

pub(crate) struct FailureLimiter {
    limit: u32,
    window: Duration,
    windows: Mutex<HashMap<Subject, Window>>,
}

impl FailureLimiter {
    /// `limit` failures per `window`; a limit of 0 turns limiting off.
    pub(crate) fn new(limit: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            limit,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn over(&self, subject: Subject, now: Instant) -> Option<u64> {
        let windows = self.windows.lock().ok()?;
        let window = windows.get(&subject)?;
        let elapsed = now.duration_since(window.started);
        (window.failures >= self.limit && elapsed < self.window).then(|| (self.window - elapsed).as_secs().max(1))
    }

    /// `Some(seconds to wait)` when the address is over its limit: checked after a failure.
    pub(super) fn address_blocked(&self, address: IpAddr) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        self.over(Subject::Address(counted(address)), Instant::now())
    }

    /// `Some(seconds to wait)` when the user id is over its limit: checked after a failure.
    pub(crate) fn user_blocked(&self, user: Option<UserId>) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        self.over(Subject::User(user?.0), Instant::now())
    }

    /// Counts one failed authentication against the address and the user id.
    pub(crate) fn record_failure(&self, address: IpAddr, user: Option<UserId>) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let Ok(mut windows) = self.windows.lock() else { return };
        if windows.len() >= MAX_SUBJECTS {
            windows.retain(|_, w| now.duration_since(w.started) < self.window);
            if windows.len() >= MAX_SUBJECTS {
                // Still full of live windows (a flood from many addresses): start over rather
                // than grow without bound.
                windows.clear();
            }
        }
        let subjects = [
            Some(Subject::Address(counted(address))),
            user.map(|u| Subject::User(u.0)),
        ];
        for subject in subjects.into_iter().flatten() {
            let window = windows.entry(subject).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now.duration_since(window.started) >= self.window {
                *window = Window {
                    started: now,
                    failures: 0,
                };
            }
            window.failures = window.failures.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_blocked_users_are_only_throttled_on_failure() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let user = UserId::parse("7");
        for _ in 0..3 {
            assert_eq!(limiter.address_blocked(a), None);
            limiter.record_failure(a, user);
        }
        assert!(limiter.address_blocked(a).is_some(), "the address is over");
        assert_eq!(limiter.address_blocked(b), None, "another address is not");
        assert!(
            limiter.user_blocked(user).is_some(),
            "failures for the user id turn into 429"
        );
        assert!(
            limiter.user_blocked(UserId::parse("007")).is_some(),
            "however the id is spelled"
        );
        assert_eq!(limiter.user_blocked(UserId::parse("8")), None);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let limiter = FailureLimiter::new(2, Duration::from_secs(60));
        limiter.record_failure("2001:db8::1".parse().unwrap(), None);
        limiter.record_failure("2001:db8::2".parse().unwrap(), None);
        assert!(limiter.address_blocked("2001:db8::ffff".parse().unwrap()).is_some());
        assert_eq!(limiter.address_blocked("2001:db8:0:1::1".parse().unwrap()), None);
    }

    #[test]
    fn windows_end_and_zero_disables() {
        let limiter = FailureLimiter::new(1, Duration::from_millis(20));
        let a: IpAddr = "::1".parse().unwrap();
        limiter.record_failure(a, None);
        assert!(limiter.address_blocked(a).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(limiter.address_blocked(a), None);
        let off = FailureLimiter::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            off.record_failure(a, UserId::parse("1"));
        }
        assert_eq!(off.address_blocked(a), None);
        assert_eq!(off.user_blocked(UserId::parse("1")), None);
    }
}
