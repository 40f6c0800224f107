//! Limits failed authentications per client address and per user id: after `limit` failures
//! within `window`, further attempts from that address (or for that user id) are refused with
//! 429 until the window ends. Successful requests are never counted or throttled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most subjects remembered; older windows are dropped first when the table is full.
const MAX_SUBJECTS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Address(IpAddr),
    User(String),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

pub struct FailureLimiter {
    limit: u32,
    window: Duration,
    windows: Mutex<HashMap<Subject, Window>>,
}

impl FailureLimiter {
    /// `limit` failures per `window`; a limit of 0 turns limiting off.
    pub fn new(limit: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            limit,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn subjects(address: IpAddr, user: Option<&str>) -> Vec<Subject> {
        let mut subjects = vec![Subject::Address(address)];
        if let Some(user) = user.filter(|u| !u.is_empty()) {
            subjects.push(Subject::User(user.chars().take(64).collect()));
        }
        subjects
    }

    /// `Some(seconds to wait)` when the address or the user id is over its limit.
    pub fn blocked(&self, address: IpAddr, user: Option<&str>) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let now = Instant::now();
        let windows = self.windows.lock().ok()?;
        Self::subjects(address, user)
            .iter()
            .filter_map(|subject| windows.get(subject))
            .filter(|w| w.failures >= self.limit && now.duration_since(w.started) < self.window)
            .map(|w| (self.window - now.duration_since(w.started)).as_secs().max(1))
            .max()
    }

    /// Counts one failed authentication against the address and the user id.
    pub fn record_failure(&self, address: IpAddr, user: Option<&str>) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let Ok(mut windows) = self.windows.lock() else { return };
        if windows.len() >= MAX_SUBJECTS {
            windows.retain(|_, w| now.duration_since(w.started) < self.window);
        }
        for subject in Self::subjects(address, user) {
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
    fn limits_per_address_and_per_user() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.blocked(a, Some("7")), None);
            limiter.record_failure(a, Some("7"));
        }
        assert!(limiter.blocked(a, None).is_some(), "the address is over");
        assert!(
            limiter.blocked(b, Some("7")).is_some(),
            "the user id is over, from any address"
        );
        assert_eq!(limiter.blocked(b, Some("8")), None);
    }

    #[test]
    fn windows_end_and_zero_disables() {
        let limiter = FailureLimiter::new(1, Duration::from_millis(20));
        let a: IpAddr = "::1".parse().unwrap();
        limiter.record_failure(a, None);
        assert!(limiter.blocked(a, None).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(limiter.blocked(a, None), None);
        let off = FailureLimiter::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            off.record_failure(a, Some("1"));
        }
        assert_eq!(off.blocked(a, Some("1")), None);
    }
}
