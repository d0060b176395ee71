//! Handling a retried delivery once.
//!
//! The ids live in a bounded concurrent cache (`quick_cache`), so a receiver's memory stays bounded
//! whatever the traffic, and deliveries of different events do not wait on one lock. When it is full,
//! roughly the ids touched longest ago are forgotten first; an id is otherwise forgotten once its time
//! to live has passed since it was last marked.

use quick_cache::sync::{Cache, EntryAction, EntryResult};
use std::time::{Duration, Instant};

/// What a [`Dedupe`] knows of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the time to live: it is now marked in progress; call [`Dedupe::finish`] or
    /// [`Dedupe::forget`] when done.
    New,
    /// Another delivery of it is being handled right now: answer so that the sender retries later
    /// (a success answer would lose the event if that handling then fails).
    InProgress,
    /// Handled successfully within the time to live: answer OK without handling it again.
    Done,
}

/// Remembers webhook ids (`webhook-id`) for a time to live, so a retried delivery of the same event
/// is handled once. Cheap to share behind an `Arc`; holds at most [`DEFAULT_CAPACITY`] ids unless told
/// otherwise with [`Dedupe::capacity`].
///
/// ```
/// use followd_receiver::dedupe::{Dedupe, Seen};
/// let d = Dedupe::new(std::time::Duration::from_secs(3600));
/// assert_eq!(d.begin("evt_1"), Seen::New);
/// assert_eq!(d.begin("evt_1"), Seen::InProgress);
/// d.finish("evt_1");
/// assert_eq!(d.begin("evt_1"), Seen::Done);
/// ```
pub struct Dedupe {
    ttl: Duration,
    /// id → (when it was last marked, whether handling finished)
    seen: Cache<String, (Instant, bool)>,
}

/// How many ids a [`Dedupe`] holds unless told otherwise: a day of a little over 11 events a second,
/// at about 150 bytes an id (some 150 MB when full; memory grows only as ids arrive).
///
/// ```
/// assert_eq!(followd_receiver::dedupe::DEFAULT_CAPACITY, 1_000_000);
/// ```
pub const DEFAULT_CAPACITY: usize = 1_000_000;

impl Dedupe {
    /// A deduper that remembers each id for `ttl` (longer than the sender's whole retry schedule:
    /// followd retries for about 23 hours by default), holding at most [`DEFAULT_CAPACITY`] ids.
    /// Past that, roughly the ids touched longest ago are forgotten first, so a retry of one of them would be
    /// handled again: size the capacity for the ids that arrive within `ttl`.
    ///
    /// ```
    /// let d = followd_receiver::dedupe::Dedupe::new(std::time::Duration::from_secs(86_400));
    /// assert!(d.first_time("a"));
    /// ```
    pub fn new(ttl: Duration) -> Self {
        Dedupe { ttl, seen: Cache::new(DEFAULT_CAPACITY) }
    }

    /// The same deduper holding at most `ids` ids (at least 1) instead of [`DEFAULT_CAPACITY`]; call it
    /// before use, as it starts empty.
    ///
    /// ```
    /// use followd_receiver::dedupe::Dedupe;
    /// let d = Dedupe::new(std::time::Duration::from_secs(86_400)).capacity(10_000);
    /// assert!(d.first_time("a"));
    /// assert!(!d.first_time("a"));
    /// ```
    pub fn capacity(self, ids: usize) -> Self {
        Dedupe { ttl: self.ttl, seen: Cache::new(ids.max(1)) }
    }

    /// Looks `id` up and, when it is new, marks it in progress.
    ///
    /// ```
    /// use followd_receiver::dedupe::{Dedupe, Seen};
    /// let d = Dedupe::new(std::time::Duration::from_secs(60));
    /// assert_eq!(d.begin("x"), Seen::New);
    /// d.forget("x"); // handling failed: the sender's retry will be handled
    /// assert_eq!(d.begin("x"), Seen::New);
    /// ```
    pub fn begin(&self, id: &str) -> Seen {
        self.begin_at(id, Instant::now())
    }

    fn begin_at(&self, id: &str, now: Instant) -> Seen {
        // Atomic per id: a live entry is read under the shard's lock, and an absent or expired one is
        // replaced through a placeholder that other callers for the same id wait on, so exactly one
        // of several concurrent deliveries of a new id gets `New`.
        let fresh = |t: Instant| now.saturating_duration_since(t) < self.ttl;
        let claim = match self.seen.entry(id, None, |_, &mut (t, done)| match (fresh(t), done) {
            (true, true) => EntryAction::Retain(Seen::Done),
            (true, false) => EntryAction::Retain(Seen::InProgress),
            (false, _) => EntryAction::ReplaceWithGuard,
        }) {
            EntryResult::Retained(seen) => return seen,
            EntryResult::Vacant(claim) | EntryResult::Replaced(claim, _) => claim,
            // The callback never removes, and without a timeout the call waits for the placeholder.
            EntryResult::Removed(..) | EntryResult::Timeout => unreachable!("no removal and no timeout were asked for"),
        };
        // Fails only if `forget` or `finish` of this very id ran in between, which leaves the id as they
        // left it: the caller holds the claim either way.
        let _ = claim.insert((now, false));
        Seen::New
    }

    /// Marks `id` handled: repeats within the time to live are [`Seen::Done`].
    ///
    /// ```
    /// use followd_receiver::dedupe::{Dedupe, Seen};
    /// let d = Dedupe::new(std::time::Duration::from_secs(60));
    /// d.begin("x");
    /// d.finish("x");
    /// assert_eq!(d.begin("x"), Seen::Done);
    /// ```
    pub fn finish(&self, id: &str) {
        self.seen.insert(id.to_owned(), (Instant::now(), true));
    }

    /// Forgets `id` (handling failed, so the sender's retry should be handled).
    ///
    /// ```
    /// let d = followd_receiver::dedupe::Dedupe::new(std::time::Duration::from_secs(60));
    /// assert!(d.first_time("a"));
    /// d.forget("a");
    /// assert!(d.first_time("a"));
    /// ```
    pub fn forget(&self, id: &str) {
        self.seen.remove(id);
    }

    /// For handlers that cannot fail: true the first time `id` is seen within the time to live (and
    /// marks it done at once), false for a repeat.
    ///
    /// ```
    /// let d = followd_receiver::dedupe::Dedupe::new(std::time::Duration::from_secs(3600));
    /// assert!(d.first_time("evt_1"));
    /// assert!(!d.first_time("evt_1"));
    /// assert!(followd_receiver::dedupe::Dedupe::new(std::time::Duration::ZERO).first_time("x"));
    /// ```
    pub fn first_time(&self, id: &str) -> bool {
        let new = self.begin(id) == Seen::New;
        if new {
            self.finish(id);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn entries_expire() {
        let d = Dedupe::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(d.begin_at("a", t0), Seen::New);
        assert_eq!(d.begin_at("a", t0 + Duration::from_secs(9)), Seen::InProgress);
        assert_eq!(d.begin_at("a", t0 + Duration::from_secs(11)), Seen::New);
        assert_eq!(d.begin_at("a", t0 + Duration::from_secs(12)), Seen::InProgress, "marked again when it expired");
    }

    /// `threads` threads call `begin_at(id, at)` at the same moment for each id (a spinning barrier
    /// per id, so they really overlap); returns how many got `New` for each.
    fn race(d: &Arc<Dedupe>, ids: &[String], threads: usize, at: Instant) -> Vec<usize> {
        let arrived = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (d, arrived, ids) = (d.clone(), arrived.clone(), ids.to_vec());
                std::thread::spawn(move || {
                    ids.iter()
                        .enumerate()
                        .map(|(i, id)| {
                            arrived.fetch_add(1, Ordering::SeqCst);
                            for spins in 0.. {
                                if arrived.load(Ordering::SeqCst) >= (i + 1) * threads {
                                    break;
                                }
                                // Spin briefly so the threads leave together, then let a descheduled one run.
                                if spins > 100 {
                                    std::thread::yield_now();
                                }
                            }
                            d.begin_at(id, at) == Seen::New
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<bool>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (0..ids.len()).map(|i| results.iter().filter(|r| r[i]).count()).collect()
    }

    #[test]
    fn concurrent_deliveries_of_a_new_id_get_new_exactly_once() {
        let d = Arc::new(Dedupe::new(Duration::from_secs(60)));
        let ids: Vec<String> = (0..1000).map(|i| format!("evt_{i}")).collect();
        let t0 = Instant::now();
        assert!(race(&d, &ids, 2, t0).iter().all(|&n| n == 1), "one New per id");
        // The same ids once their time to live has passed: an expired entry is replaced once, too.
        assert!(race(&d, &ids, 2, t0 + Duration::from_secs(61)).iter().all(|&n| n == 1), "one New per expired id");
        assert!(race(&d, &ids, 2, t0 + Duration::from_secs(62)).iter().all(|&n| n == 0), "then none");
    }

    #[test]
    fn capacity_bounds_the_ids_kept_and_the_latest_stay() {
        let d = Dedupe::new(Duration::from_secs(3600)).capacity(1000);
        for i in 0..20_000 {
            assert!(d.first_time(&format!("evt_{i}")));
        }
        assert!(d.seen.len() <= 1000, "{} ids kept", d.seen.len());
        assert!((19_500..20_000).all(|i| !d.first_time(&format!("evt_{i}"))), "the latest ids are remembered");
    }
}
