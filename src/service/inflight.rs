//! Caps on work in flight: uploads per user ([`PerUser`]) and downloads over the whole server
//! ([`Slots`]). A slot is held by a guard and given back when the guard is dropped, so an upload
//! or download that ends any way (success, refusal, a client that goes away) frees its slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::ids::UserId;

/// At most `limit` slots per user at once.
pub(super) struct PerUser {
    limit: u32,
    held: Arc<Mutex<HashMap<UserId, u32>>>,
}

/// One user's slot; given back when dropped.
pub struct UserSlot {
    user: UserId,
    held: Arc<Mutex<HashMap<UserId, u32>>>,
}

impl PerUser {
    pub(super) fn new(limit: u32) -> PerUser {
        PerUser {
            limit,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub(super) fn limit(&self) -> u32 {
        self.limit
    }

    /// A slot for `user`, or `None` when the user already holds `limit` of them.
    pub(super) fn try_acquire(&self, user: UserId) -> Option<UserSlot> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(user).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            user,
            held: self.held.clone(),
        })
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

/// At most `limit` slots over the whole server.
pub(super) struct Slots {
    limit: usize,
    held: Arc<AtomicUsize>,
}

/// One of [`Slots`]; given back when dropped.
pub(crate) struct Slot {
    held: Arc<AtomicUsize>,
}

impl Slots {
    pub(super) fn new(limit: usize) -> Slots {
        Slots {
            limit,
            held: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// A slot, or `None` when all `limit` are held.
    pub(super) fn try_acquire(&self) -> Option<Slot> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.limit).then_some(held + 1)
            })
            .ok()
            .map(|_| Slot {
                held: self.held.clone(),
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_slots_are_counted_apart_and_given_back() {
        let slots = PerUser::new(2);
        let (alice, bob) = (UserId(1), UserId(2));
        let first = slots.try_acquire(alice).expect("first");
        let _second = slots.try_acquire(alice).expect("second");
        assert!(slots.try_acquire(alice).is_none(), "a third is refused");
        assert!(slots.try_acquire(bob).is_some(), "another user has slots of their own");
        drop(first);
        assert!(slots.try_acquire(alice).is_some(), "a dropped slot is given back");
    }

    #[test]
    fn server_slots_are_capped_and_given_back() {
        let slots = Slots::new(2);
        let first = slots.try_acquire().expect("first");
        let _second = slots.try_acquire().expect("second");
        assert!(slots.try_acquire().is_none(), "a third is refused");
        drop(first);
        assert!(slots.try_acquire().is_some(), "a dropped slot is given back");
    }
}
