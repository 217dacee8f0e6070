//! Idempotency keys of checkouts, answered from memory.
//!
//! A checkout's answer is decided by the journal (the `Reserve` carries the key and the request's
//! digest), and its stored row is a projection written behind the answer. Looking the key up in
//! SQLite on every checkout would put a read back on the request path, so the keys live here: a
//! bounded map from (buyer, key) to the request digest and where the answer is. It is filled by
//! the checkout handler (claim, then the answer), by the projector for every keyed `Reserve` it
//! reads from the journal (so a request whose client went away is settled too), and at start from
//! the stored answers of the last [`KEY_RETENTION`]; the server reports ready only after that, so
//! a retry after a crash always finds its first answer.
//!
//! Bounded: at its capacity ([`crate::Config::checkout_keys_max`]) the oldest settled entries
//! are dropped even if younger than the retention, and from then on a key not found here is
//! looked up in the store ([`Lookup::Unknown`]) until the dropped ones have aged out. Answers
//! decided before the engine (unknown SKU, changed price) are kept here only: nothing was
//! reserved, and after a restart such a request is evaluated again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use surge_engine::Sequence;

use crate::error::ApiError;

/// How long a key is kept at least (API.md: "kept at least 24 h").
pub const KEY_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The most keys held in memory by default: about 100 bytes each.
pub const KEYS_MAX_DEFAULT: usize = 2_000_000;

/// A buyer's key, digested to a fixed size (the buyer is part of it: keys are scoped to buyers).
pub type KeyId = [u8; 16];

/// A request's digest: the same body gives the same digest.
pub type RequestHash = [u8; 16];

pub fn key_id(buyer: i64, key: &str) -> KeyId {
    let mut digest = Sha256::new();
    digest.update(buyer.to_le_bytes());
    digest.update(key.as_bytes());
    digest.finalize()[..16].try_into().expect("16 bytes")
}

/// Where a key's answer is.
#[derive(Clone, Debug)]
enum State {
    /// A request holds it now.
    InFlight,
    /// The answer is the journaled `Reserve` with this sequence (its row is a projection).
    Journaled(Sequence),
    /// Refused before the engine; the refusal itself.
    Refused(Arc<ApiError>),
}

#[derive(Clone, Debug)]
struct Entry {
    request_hash: RequestHash,
    state: State,
    /// Nanoseconds since the epoch when the entry was made, for its retention.
    at: u64,
}

/// What a checkout finds under its key.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The key was free and is now held by this request.
    Claimed(Claim<'a>),
    /// Another request with the same key and body is being processed: `409`.
    InFlight,
    /// The key was used with another body: `422 idempotency_key_reused`.
    Reused,
    /// Answered by the journaled reservation with this sequence: replay it.
    Journaled(Sequence),
    /// Refused before the engine: replay this.
    Refused(Arc<ApiError>),
    /// Not in memory, and memory does not hold every key of the retention period: ask the store.
    Unknown,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<KeyId, Entry>,
    /// Entries by age, oldest first; `(at, key)`. Stale pairs (the key was dropped and made anew)
    /// are skipped when they reach the front.
    by_age: VecDeque<(u64, KeyId)>,
    /// Entries made before this time may have been dropped for room.
    complete_since: u64,
}

/// The checkout keys. See the module documentation.
#[derive(Debug)]
pub struct CheckoutKeys {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl CheckoutKeys {
    pub fn new(capacity: usize) -> CheckoutKeys {
        CheckoutKeys { inner: Mutex::new(Inner::default()), capacity: capacity.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks the key up at `now` (ns since the epoch) and claims it when it is free.
    pub fn claim(&self, key: KeyId, request_hash: RequestHash, now: u64) -> Lookup<'_> {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        match inner.entries.get(&key) {
            Some(entry) if entry.request_hash != request_hash => Lookup::Reused,
            Some(entry) => match &entry.state {
                State::InFlight => Lookup::InFlight,
                State::Journaled(sequence) => Lookup::Journaled(*sequence),
                State::Refused(answer) => Lookup::Refused(Arc::clone(answer)),
            },
            None if inner.complete_since > now.saturating_sub(retention_ns()) => Lookup::Unknown,
            None => {
                self.insert(&mut inner, key, request_hash, State::InFlight, now);
                Lookup::Claimed(Claim { keys: self, key, submitted: false })
            }
        }
    }

    /// Claims a key that the store was asked about and does not hold ([`Lookup::Unknown`]).
    pub fn claim_unknown(&self, key: KeyId, request_hash: RequestHash, now: u64) -> Lookup<'_> {
        let mut inner = self.lock();
        if inner.entries.contains_key(&key) {
            drop(inner);
            return self.claim(key, request_hash, now);
        }
        self.insert(&mut inner, key, request_hash, State::InFlight, now);
        Lookup::Claimed(Claim { keys: self, key, submitted: false })
    }

    /// Records that the key's answer is the journaled reservation `sequence`: from the request
    /// that got it, from the projector reading the journal, or from the stored rows at start.
    /// `at` is when the key was first used (ns since the epoch).
    pub fn journaled(&self, key: KeyId, request_hash: RequestHash, sequence: Sequence, at: u64) {
        let mut inner = self.lock();
        match inner.entries.get_mut(&key) {
            Some(entry) => entry.state = State::Journaled(sequence),
            None => self.insert(&mut inner, key, request_hash, State::Journaled(sequence), at),
        }
    }

    /// The journaled reservation of an in-flight key has an answer that is not kept (`503`): the
    /// key is free again, whether or not its request is still waiting.
    pub fn release_in_flight(&self, key: KeyId) {
        let mut inner = self.lock();
        if matches!(inner.entries.get(&key), Some(Entry { state: State::InFlight, .. })) {
            inner.entries.remove(&key);
        }
    }

    fn insert(
        &self,
        inner: &mut Inner,
        key: KeyId,
        request_hash: RequestHash,
        state: State,
        at: u64,
    ) {
        inner.entries.insert(key, Entry { request_hash, state, at });
        inner.by_age.push_back((at, key));
        // Over capacity: drop the oldest settled entries. In-flight ones are young and few; they
        // are kept (and pushed to the back) so that no running request loses its claim.
        let mut inspected = 0;
        while inner.entries.len() > self.capacity && inspected < inner.by_age.len() {
            inspected += 1;
            let Some((entry_at, oldest)) = inner.by_age.pop_front() else { break };
            match inner.entries.get(&oldest) {
                Some(entry) if entry.at == entry_at => {
                    if matches!(entry.state, State::InFlight) {
                        inner.by_age.push_back((entry_at, oldest));
                    } else {
                        inner.entries.remove(&oldest);
                        inner.complete_since = inner.complete_since.max(entry_at + 1);
                    }
                }
                _ => {}
            }
        }
    }

    /// Drops the entries older than the retention at `now`.
    fn expire(&self, inner: &mut Inner, now: u64) {
        let cutoff = now.saturating_sub(retention_ns());
        while let Some(&(at, key)) = inner.by_age.front() {
            if at >= cutoff {
                break;
            }
            inner.by_age.pop_front();
            if inner
                .entries
                .get(&key)
                .is_some_and(|entry| entry.at == at && !matches!(entry.state, State::InFlight))
            {
                inner.entries.remove(&key);
            }
        }
    }
}

fn retention_ns() -> u64 {
    u64::try_from(KEY_RETENTION.as_nanos()).expect("fits u64")
}

/// A key held by one request. Dropped before the command was submitted (an error, a client that
/// went away), it frees the key; after [`Claim::submitted`] the journal decides, and the key is
/// settled by whoever learns the outcome first (this request or the projector).
#[derive(Debug)]
pub struct Claim<'a> {
    keys: &'a CheckoutKeys,
    key: KeyId,
    submitted: bool,
}

impl Claim<'_> {
    /// The reservation carrying this key is queued for the journal.
    pub fn submitted(&mut self) {
        self.submitted = true;
    }

    /// Settles the key with the journaled reservation that answered it.
    pub fn journaled(mut self, request_hash: RequestHash, sequence: Sequence, now: u64) {
        self.submitted = true;
        self.keys.journaled(self.key, request_hash, sequence, now);
    }

    /// Settles the key with a refusal decided before the engine.
    pub fn refused(mut self, answer: ApiError) {
        self.submitted = true;
        let mut inner = self.keys.lock();
        if let Some(entry) = inner.entries.get_mut(&self.key) {
            entry.state = State::Refused(Arc::new(answer));
        }
    }

    /// Frees the key: the answer is not kept (`429`, `500`, `503`).
    pub fn release(mut self) {
        self.submitted = false;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.submitted {
            self.keys.release_in_flight(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000_000_000;

    #[test]
    fn a_key_is_claimed_once_then_replayed_and_a_new_body_is_refused() {
        let keys = CheckoutKeys::new(16);
        let key = key_id(1, "k");
        let Lookup::Claimed(mut claim) = keys.claim(key, [1; 16], HOUR) else { panic!() };
        assert!(matches!(keys.claim(key, [1; 16], HOUR), Lookup::InFlight));
        assert!(matches!(keys.claim(key, [2; 16], HOUR), Lookup::Reused));
        claim.submitted();
        claim.journaled([1; 16], Sequence(7), HOUR);
        assert!(matches!(keys.claim(key, [1; 16], HOUR), Lookup::Journaled(Sequence(7))));
        assert!(matches!(keys.claim(key_id(2, "k"), [1; 16], HOUR), Lookup::Claimed(_)));
    }

    #[test]
    fn a_claim_dropped_before_submission_frees_the_key_and_after_it_does_not() {
        let keys = CheckoutKeys::new(16);
        let key = key_id(1, "k");
        let Lookup::Claimed(claim) = keys.claim(key, [1; 16], HOUR) else { panic!() };
        drop(claim);
        let Lookup::Claimed(mut claim) = keys.claim(key, [1; 16], HOUR) else { panic!() };
        claim.submitted();
        drop(claim);
        assert!(matches!(keys.claim(key, [1; 16], HOUR), Lookup::InFlight));
        // The projector settles it from the journal.
        keys.journaled(key, [1; 16], Sequence(9), HOUR);
        assert!(matches!(keys.claim(key, [1; 16], HOUR), Lookup::Journaled(Sequence(9))));
    }

    #[test]
    fn keys_are_kept_for_the_retention_and_dropped_after() {
        let keys = CheckoutKeys::new(16);
        let key = key_id(1, "k");
        keys.journaled(key, [1; 16], Sequence(3), HOUR);
        assert!(matches!(keys.claim(key, [1; 16], 24 * HOUR), Lookup::Journaled(_)));
        assert!(matches!(keys.claim(key, [1; 16], 25 * HOUR + 1), Lookup::Claimed(_)));
    }

    #[test]
    fn past_capacity_the_oldest_go_and_misses_ask_the_store() {
        let keys = CheckoutKeys::new(2);
        for (index, key) in ["a", "b", "c"].into_iter().enumerate() {
            let at = HOUR + index as u64;
            keys.journaled(key_id(1, key), [1; 16], Sequence(index as u64 + 1), at);
        }
        assert_eq!(keys.len(), 2);
        assert!(matches!(keys.claim(key_id(1, "a"), [1; 16], 2 * HOUR), Lookup::Unknown));
        assert!(matches!(keys.claim(key_id(1, "c"), [1; 16], 2 * HOUR), Lookup::Journaled(_)));
        // Once the dropped entry is older than the retention, a miss is a new key again.
        assert!(matches!(keys.claim(key_id(1, "z"), [1; 16], 26 * HOUR), Lookup::Claimed(_)));
    }

    #[test]
    fn in_flight_claims_survive_the_capacity_bound() {
        let keys = CheckoutKeys::new(1);
        let Lookup::Claimed(mut claim) = keys.claim(key_id(1, "held"), [1; 16], HOUR) else {
            panic!()
        };
        claim.submitted();
        keys.journaled(key_id(1, "other"), [1; 16], Sequence(2), HOUR + 1);
        assert!(matches!(keys.claim(key_id(1, "held"), [1; 16], HOUR + 2), Lookup::InFlight));
    }
}
