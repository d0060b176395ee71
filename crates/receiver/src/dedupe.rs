//! Handling a retried delivery once.

use parking_lot::Mutex;
use std::collections::HashMap;
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
/// is handled once. Cheap to share behind an `Arc`; expired ids are dropped as new ones arrive.
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
    seen: Mutex<HashMap<String, (Instant, bool)>>,
}

impl Dedupe {
    /// A deduper that remembers each id for `ttl` (longer than the sender's whole retry schedule:
    /// followd retries for about 23 hours by default).
    ///
    /// ```
    /// let d = followd_receiver::dedupe::Dedupe::new(std::time::Duration::from_secs(86_400));
    /// assert!(d.first_time("a"));
    /// ```
    pub fn new(ttl: Duration) -> Self {
        Dedupe { ttl, seen: Mutex::new(HashMap::new()) }
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
        let mut seen = self.seen.lock();
        if seen.len() >= 1024 && seen.len().is_power_of_two() {
            seen.retain(|_, (t, _)| now.duration_since(*t) < self.ttl);
        }
        match seen.get(id) {
            Some((t, done)) if now.duration_since(*t) < self.ttl => {
                if *done {
                    Seen::Done
                } else {
                    Seen::InProgress
                }
            }
            _ => {
                seen.insert(id.to_owned(), (now, false));
                Seen::New
            }
        }
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
        self.seen.lock().insert(id.to_owned(), (Instant::now(), true));
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
        self.seen.lock().remove(id);
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

    #[test]
    fn entries_expire() {
        let d = Dedupe::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(d.begin_at("a", t0), Seen::New);
        assert_eq!(d.begin_at("a", t0 + Duration::from_secs(9)), Seen::InProgress);
        assert_eq!(d.begin_at("a", t0 + Duration::from_secs(11)), Seen::New);
    }
}
