//! The limits every API request goes through: at most `max_concurrent_requests` at once, each
//! answered within `request_timeout_ms`. The middleware that applies them, and says why,
//! is [`crate::surface::overload`]; this is the state it keeps.

use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The concurrency limit and the deadline of API requests.
pub struct Guard {
    permits: Semaphore,
    deadline: Duration,
}

impl Guard {
    /// At most `max_concurrent` requests at once, each answered within `deadline`.
    pub fn new(max_concurrent: usize, deadline: Duration) -> Self {
        Guard { permits: Semaphore::new(max_concurrent), deadline }
    }

    /// A slot for one request, or `None` when `max_concurrent` are in progress.
    pub fn enter(&self) -> Option<SemaphorePermit<'_>> {
        self.permits.try_acquire().ok()
    }

    /// The time a request has.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}
