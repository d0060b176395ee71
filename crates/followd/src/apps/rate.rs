//! Rate limits, answered with `60007` (decisions.md §3).
//!
//! Two kinds of caller need two kinds of budget. The admin REST API is called by the app's own
//! backend, so Tencent's rule applies: so many calls per second per app and per API, off unless the
//! app sets `rate_limit_per_second`. The client API is called by end users' devices, which the
//! operator does not control: one budget per app would let a single user (a buggy reconnect loop, a
//! script) use it up for everyone, so each user has a budget of their own (`client_rate_limit_per_second`)
//! and, for `follow_check`, the SDK's own limit (`client_check_calls` per `client_check_window_secs`).
//!
//! The limiters are `governor`'s GCRA: a token bucket kept as one atomic timestamp, so a REST check is
//! one compare-and-swap and a budget refills smoothly instead of resetting at a second boundary. The
//! per-user ones are keyed by the verified UserID (a caller without a valid UserSig never gets this
//! far, so nobody can grow the maps with made-up names). A user's entry is only needed while their
//! bucket is not full again, so every [`SWEEP_SECS`] the first call to arrive drops the entries of
//! users whose budget has refilled: the maps hold the users active in the last [`SWEEP_SECS`] plus
//! one refill time, at about 100 to 150 bytes per user per limiter (the UserID, an 8-byte state and
//! the hash table's share; measured at 138 bytes a user with a million users).

use followd_protocol::api::{Api, ApiError};
use followd_protocol::{code, UserId};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often, in seconds, the per-user limiters forget users whose budget is full again.
pub const SWEEP_SECS: u64 = 10;

/// The admin REST API's limit: `per_second` calls per second to each API (a burst of the same size).
pub struct PerApi {
    /// The budget, for the error message ("more than 5 calls per second").
    what: String,
    /// One limiter per [`Api`], in the order of [`Api::ALL`] (a lock-free check on the hot path).
    limiters: Vec<DefaultDirectRateLimiter>,
}

impl PerApi {
    /// `None` when `per_second` is absent or 0 (off).
    pub fn new(per_second: Option<u32>) -> Option<PerApi> {
        let n = NonZeroU32::new(per_second?)?;
        Some(PerApi::with_quota(Quota::per_second(n), format!("more than {n} calls per second")))
    }

    fn with_quota(quota: Quota, what: String) -> PerApi {
        PerApi { what, limiters: Api::ALL.iter().map(|_| DefaultDirectRateLimiter::direct(quota)).collect() }
    }

    /// Counts one call to `api`; `60007` when over.
    pub fn check(&self, api: Api) -> Result<(), ApiError> {
        self.limiters[api.index()].check().map_err(|e| refused(format!("{}: {}", api.name(), self.what), &e))
    }
}

/// A budget per end user, shared by every call it covers.
pub struct PerUser {
    limiter: DefaultKeyedRateLimiter<UserId>,
    /// What the budget is, for the error message ("client API: 50 calls per second").
    what: String,
    /// Unix second at or after which the next call sweeps.
    next_sweep: AtomicU64,
}

impl PerUser {
    /// `per_second` calls per second with a burst of the same size; `None` when 0 (off).
    pub fn per_second(per_second: u32, what: &str) -> Option<PerUser> {
        let n = NonZeroU32::new(per_second)?;
        Some(PerUser::with_quota(Quota::per_second(n), format!("{what}: more than {n} calls per second")))
    }

    /// `calls` per `window`, refilled evenly (one call every `window / calls`), with a burst of
    /// `calls`; `None` when `calls` is 0 (off) or so large that the refill interval rounds to zero.
    pub fn per_window(calls: u32, window: Duration, what: &str) -> Option<PerUser> {
        let n = NonZeroU32::new(calls)?;
        let quota = Quota::with_period(window / calls)?.allow_burst(n);
        Some(PerUser::with_quota(quota, format!("{what}: more than {n} calls in {} s", window.as_secs())))
    }

    fn with_quota(quota: Quota, what: String) -> PerUser {
        PerUser { limiter: DefaultKeyedRateLimiter::keyed(quota), what, next_sweep: AtomicU64::new(0) }
    }

    /// Counts one call of `user` at Unix second `now` (which only times the sweeps); `60007` when over.
    pub fn check(&self, user: &UserId, now: u64) -> Result<(), ApiError> {
        let outcome = self.limiter.check_key(user);
        self.sweep_if_due(now);
        outcome.map_err(|e| refused(format!("{user}: {}", self.what), &e))
    }

    /// Drops the users whose budget is full again, at most once per [`SWEEP_SECS`] (one caller wins the
    /// race; the others go on). The map is locked while it is walked: about a millisecond per 100,000
    /// tracked users, once every [`SWEEP_SECS`].
    fn sweep_if_due(&self, now: u64) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now >= due && self.next_sweep.compare_exchange(due, now + SWEEP_SECS, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }

    /// How many users the limiter tracks right now.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

fn refused(what: String, e: &NotUntil<<DefaultClock as governor::clock::Clock>::Instant>) -> ApiError {
    let wait = e.wait_time_from(DefaultClock::default().now());
    ApiError::new(code::RATE_LIMITED, format!("{what}; retry in {} ms", wait.as_millis().max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn per_user_budgets_are_separate_and_a_refusal_says_when_to_retry() {
        // One call a minute: a test this fast never sees a refill.
        let l = PerUser::per_window(2, Duration::from_secs(120), "follow_check").unwrap();
        assert!(l.check(&user("u"), 0).is_ok());
        assert!(l.check(&user("u"), 0).is_ok());
        let e = l.check(&user("u"), 0).unwrap_err();
        assert_eq!(e.code, code::RATE_LIMITED);
        assert!(e.info.starts_with("u: follow_check: more than 2 calls in 120 s; retry in "), "{}", e.info);
        assert!(l.check(&user("v"), 0).is_ok(), "another user has a budget of their own");
    }

    #[test]
    fn zero_means_off() {
        assert!(PerUser::per_second(0, "x").is_none());
        assert!(PerUser::per_window(0, Duration::from_secs(5), "x").is_none());
        assert!(PerApi::new(Some(0)).is_none());
        assert!(PerApi::new(None).is_none());
    }

    #[test]
    fn per_api_budgets_are_separate() {
        let l = PerApi::with_quota(Quota::with_period(Duration::from_secs(60)).unwrap(), "more than 1 call a minute".into());
        assert!(l.check(Api::FollowAdd).is_ok());
        assert!(l.check(Api::FollowGet).is_ok(), "each API has its own budget");
        let e = l.check(Api::FollowAdd).unwrap_err();
        assert!(e.info.starts_with("follow_add: more than 1 call a minute; retry in "), "{}", e.info);
    }

    #[test]
    fn sweeps_forget_users_whose_budget_is_full_again() {
        // A refill of a millisecond: entries become forgettable almost at once.
        let l = PerUser::per_second(1000, "client API").unwrap();
        for i in 0..100 {
            l.check(&user(&format!("u{i}")), 0).unwrap();
        }
        assert_eq!(l.tracked(), 100, "the first call's sweep ran before the others arrived");
        // Not due yet: nothing is dropped however much real time passes.
        l.sweep_if_due(SWEEP_SECS - 1);
        assert_eq!(l.tracked(), 100);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut now = SWEEP_SECS;
        while l.tracked() > 0 {
            assert!(std::time::Instant::now() < deadline, "still tracking {} users", l.tracked());
            std::thread::yield_now();
            l.sweep_if_due(now);
            now += SWEEP_SECS;
        }
    }
}
