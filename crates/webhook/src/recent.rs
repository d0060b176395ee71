//! The last hour of deliveries per app, in memory, for the console's charts: attempts per second by
//! outcome, and a latency histogram per minute (p50/p99). Fixed-size rings: an app costs about
//! 120 KiB however busy it is, and recording is a few array writes under a short lock.

use followd_graph::outbox::Outcome;
use followd_graph::AppId;
use std::collections::HashMap;
use std::sync::Mutex;

/// Seconds kept.
pub const SECONDS: usize = 3600;
/// Minutes kept.
pub const MINUTES: usize = 60;
/// Latency buckets: bucket `i` holds attempts under `2^i` × 100 µs (the last one everything above).
pub const BUCKETS: usize = 20;

/// One app's rings.
struct AppRings {
    /// Which second each slot holds (Unix s), so a stale slot reads as zero.
    sec_stamp: Box<[u64; SECONDS]>,
    per_sec: Box<[[u32; 6]; SECONDS]>,
    min_stamp: [u64; MINUTES],
    per_min: Box<[[u32; BUCKETS]; MINUTES]>,
}

impl AppRings {
    fn new() -> Self {
        AppRings {
            sec_stamp: Box::new([u64::MAX; SECONDS]),
            per_sec: Box::new([[0; 6]; SECONDS]),
            min_stamp: [u64::MAX; MINUTES],
            per_min: Box::new([[0; BUCKETS]; MINUTES]),
        }
    }
}

/// Every app's last hour.
#[derive(Default)]
pub struct Recent {
    apps: Mutex<HashMap<AppId, AppRings>>,
}

/// The index of an outcome in a per-second row (the order of [`Outcome::ALL`]).
pub fn outcome_index(o: Outcome) -> usize {
    Outcome::ALL.iter().position(|&x| x == o).unwrap_or(0)
}

/// The bucket of an attempt that took `micros`.
pub fn bucket_of(micros: u64) -> usize {
    let mut b = 0;
    let mut bound = 100u64;
    while micros >= bound && b < BUCKETS - 1 {
        b += 1;
        bound *= 2;
    }
    b
}

/// The upper bound of bucket `b`, µs (the value a percentile in that bucket reads as).
pub fn bucket_bound(b: usize) -> u64 {
    100u64 << b.min(BUCKETS - 1)
}

/// One minute's latency summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteLatency {
    /// Attempts in the minute.
    pub count: u64,
    /// Median, µs (a bucket's upper bound); 0 without attempts.
    pub p50_us: u64,
    /// 99th percentile, µs (a bucket's upper bound); 0 without attempts.
    pub p99_us: u64,
}

/// What a chart reads: the last hour up to `now`, oldest first.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Per second, `SECONDS` rows of counts by outcome (index as [`Outcome::ALL`]).
    pub per_sec: Vec<[u32; 6]>,
    /// Per minute, `MINUTES` rows.
    pub per_min: Vec<MinuteLatency>,
}

impl Recent {
    /// Records one attempt of `app` that ended at `now_secs` and took `micros`.
    pub fn record(&self, app: AppId, outcome: Outcome, micros: u64, now_secs: u64) {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let r = apps.entry(app).or_insert_with(AppRings::new);
        let s = (now_secs % SECONDS as u64) as usize;
        if r.sec_stamp[s] != now_secs {
            r.sec_stamp[s] = now_secs;
            r.per_sec[s] = [0; 6];
        }
        r.per_sec[s][outcome_index(outcome)] += 1;
        let minute = now_secs / 60;
        let m = (minute % MINUTES as u64) as usize;
        if r.min_stamp[m] != minute {
            r.min_stamp[m] = minute;
            r.per_min[m] = [0; BUCKETS];
        }
        r.per_min[m][bucket_of(micros)] += 1;
    }

    /// The last hour of `app` as of `now_secs`.
    pub fn snapshot(&self, app: AppId, now_secs: u64) -> Snapshot {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let r = apps.get(&app);
        let per_sec = (0..SECONDS as u64)
            .map(|i| {
                let t = (now_secs + 1 + i).wrapping_sub(SECONDS as u64);
                let s = (t % SECONDS as u64) as usize;
                r.filter(|r| r.sec_stamp[s] == t).map(|r| r.per_sec[s]).unwrap_or([0; 6])
            })
            .collect();
        let now_min = now_secs / 60;
        let per_min = (0..MINUTES as u64)
            .map(|i| {
                let t = (now_min + 1 + i).wrapping_sub(MINUTES as u64);
                let m = (t % MINUTES as u64) as usize;
                r.filter(|r| r.min_stamp[m] == t).map(|r| summarize(&r.per_min[m])).unwrap_or_default()
            })
            .collect();
        Snapshot { per_sec, per_min }
    }
}

fn summarize(h: &[u32; BUCKETS]) -> MinuteLatency {
    let count: u64 = h.iter().map(|&n| n as u64).sum();
    if count == 0 {
        return MinuteLatency::default();
    }
    let pct = |p: f64| {
        let rank = ((count as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in h.iter().enumerate() {
            seen += n as u64;
            if seen >= rank {
                return bucket_bound(b);
            }
        }
        bucket_bound(BUCKETS - 1)
    };
    MinuteLatency { count, p50_us: pct(0.5), p99_us: pct(0.99) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_minutes_roll_over_and_apps_stay_apart() {
        let r = Recent::default();
        let t = 1_000_000;
        r.record(1, Outcome::Ok, 150, t);
        r.record(1, Outcome::Ok, 150, t);
        r.record(1, Outcome::Timeout, 5_000_000, t);
        r.record(2, Outcome::Ok, 150, t);
        let s = r.snapshot(1, t);
        assert_eq!(s.per_sec.len(), SECONDS);
        assert_eq!(s.per_sec[SECONDS - 1][outcome_index(Outcome::Ok)], 2);
        assert_eq!(s.per_sec[SECONDS - 1][outcome_index(Outcome::Timeout)], 1);
        let last = s.per_min[MINUTES - 1];
        assert_eq!(last.count, 3);
        assert_eq!(last.p50_us, 200);
        assert!(last.p99_us >= 5_000_000);
        assert_eq!(r.snapshot(2, t).per_sec[SECONDS - 1][0], 1);
        // An hour later the slot holds a new second: the old counts are gone, not added to.
        let later = t + SECONDS as u64;
        r.record(1, Outcome::Ok, 150, later);
        let s = r.snapshot(1, later);
        assert_eq!(s.per_sec[SECONDS - 1][outcome_index(Outcome::Ok)], 1);
        assert_eq!(s.per_sec.iter().map(|row| row.iter().sum::<u32>()).sum::<u32>(), 1);
        assert_eq!(r.snapshot(3, t).per_min.iter().map(|m| m.count).sum::<u64>(), 0);
    }

    #[test]
    fn buckets_double() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(99), 0);
        assert_eq!(bucket_of(100), 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }
}
