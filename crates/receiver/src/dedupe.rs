//! Handling a retried delivery once.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Remembers webhook ids (`webhook-id`) for a time to live, so a retried delivery of the same event
/// is recognised. Cheap to share behind an `Arc`; expired ids are dropped as new ones arrive.
///
/// ```
/// use std::time::Duration;
/// let d = followd_receiver::Dedupe::new(Duration::from_secs(3600));
/// assert!(d.first_time("evt_1"));
/// assert!(!d.first_time("evt_1"));
/// assert!(d.first_time("evt_2"));
/// ```
pub struct Dedupe {
    ttl: Duration,
    seen: Mutex<HashMap<String, Instant>>,
}

impl Dedupe {
    /// A deduper that remembers each id for `ttl` (longer than the sender's whole retry schedule:
    /// followd retries for about 23 hours by default).
    pub fn new(ttl: Duration) -> Self {
        Dedupe { ttl, seen: Mutex::new(HashMap::new()) }
    }

    /// True the first time `id` is seen within the time to live; false for a repeat.
    ///
    /// ```
    /// let d = followd_receiver::Dedupe::new(std::time::Duration::ZERO);
    /// assert!(d.first_time("x"));
    /// assert!(d.first_time("x"), "a zero TTL remembers nothing");
    /// ```
    pub fn first_time(&self, id: &str) -> bool {
        self.first_time_at(id, Instant::now())
    }

    fn first_time_at(&self, id: &str, now: Instant) -> bool {
        let mut seen = self.seen.lock();
        if seen.len() >= 1024 && seen.len().is_power_of_two() {
            seen.retain(|_, t| now.duration_since(*t) < self.ttl);
        }
        match seen.get(id) {
            Some(t) if now.duration_since(*t) < self.ttl => false,
            _ => {
                seen.insert(id.to_owned(), now);
                true
            }
        }
    }

    /// Forgets `id` (for example when handling it failed and the retry should be processed).
    ///
    /// ```
    /// let d = followd_receiver::Dedupe::new(std::time::Duration::from_secs(60));
    /// assert!(d.first_time("a"));
    /// d.forget("a");
    /// assert!(d.first_time("a"));
    /// ```
    pub fn forget(&self, id: &str) {
        self.seen.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let d = Dedupe::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(d.first_time_at("a", t0));
        assert!(!d.first_time_at("a", t0 + Duration::from_secs(9)));
        assert!(d.first_time_at("a", t0 + Duration::from_secs(11)));
    }
}
