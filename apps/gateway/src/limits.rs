//! Abuse limits that are counted, not configured per request: open connections in all and per
//! key (semaphores, as mini-redis caps its connections), and request rates per key and frame
//! rates per connection (token buckets, with governor).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use colloquy_core_model::AccountId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Caller;
use crate::config::Limits;
use crate::error::{ApiError, ErrorCode};

/// The counters of one server.
#[derive(Debug)]
pub struct Counters {
    /// The configured limits.
    pub limits: Limits,
    /// Open WebSocket connections in all.
    connections: Arc<Semaphore>,
    /// Open WebSocket connections per account (an account's keys share them).
    per_account: Mutex<HashMap<AccountId, Arc<Semaphore>>>,
    /// REST requests per account.
    requests: DefaultKeyedRateLimiter<AccountId>,
}

/// What a WebSocket connection holds while open; dropping it frees its places.
#[derive(Debug)]
pub struct ConnectionPermits {
    _total: OwnedSemaphorePermit,
    _account: OwnedSemaphorePermit,
}

/// A token bucket of `per_second`, with bursts of twice that.
fn quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(per_second.max(1).saturating_mul(2)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl Counters {
    pub fn new(limits: Limits) -> Self {
        Self {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            per_account: Mutex::default(),
            requests: RateLimiter::keyed(quota(limits.requests_per_second_per_key)),
            limits,
        }
    }

    /// A place for one more connection of `caller`, or `too_many_connections`.
    pub fn connect(&self, caller: &Caller) -> Result<ConnectionPermits, ApiError> {
        let too_many = |what: String| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TooManyConnections,
                format!("{what}: close some connections (one connection can follow many conversations)"),
            )
        };
        let total = Arc::clone(&self.connections)
            .try_acquire_owned()
            .map_err(|_| too_many(format!("the server has its {} connections", self.limits.max_connections)))?;
        let account = {
            let mut per_account = self.per_account.lock().unwrap_or_else(PoisonError::into_inner);
            // Forget accounts with no open connection, so the map does not grow for good.
            per_account.retain(|_, semaphore| semaphore.available_permits() < self.limits.max_connections_per_key);
            let semaphore = per_account
                .entry(caller.account.id)
                .or_insert_with(|| Arc::new(Semaphore::new(self.limits.max_connections_per_key)));
            Arc::clone(semaphore)
        };
        let account = account.try_acquire_owned().map_err(|_| {
            too_many(format!("this key's account has its {} connections open", self.limits.max_connections_per_key))
        })?;
        Ok(ConnectionPermits { _total: total, _account: account })
    }

    /// One more REST request of `caller`, or `rate_limited` with when to retry.
    pub fn check_request(&self, caller: &Caller) -> Result<(), ApiError> {
        self.requests.check_key(&caller.account.id).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            rate_limited(
                format!("more than {} requests per second from this account", self.limits.requests_per_second_per_key),
                wait,
            )
        })
    }

    /// The frame-rate limiter of a new connection.
    pub fn frame_limiter(&self) -> FrameLimiter {
        FrameLimiter {
            bucket: RateLimiter::direct(quota(self.limits.frames_per_second)),
            per_second: self.limits.frames_per_second,
        }
    }
}

/// One connection's frame rate.
#[derive(Debug)]
pub struct FrameLimiter {
    bucket: DefaultDirectRateLimiter,
    per_second: u32,
}

impl FrameLimiter {
    /// One more frame, or `rate_limited` with when to retry.
    pub fn check(&self) -> Result<(), ApiError> {
        self.bucket.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            rate_limited(format!("more than {} frames per second on this connection", self.per_second), wait)
        })
    }
}

fn rate_limited(what: String, wait: Duration) -> ApiError {
    ApiError::too_many(ErrorCode::RateLimited, format!("{what}: slow down and retry after retry_after_ms"), wait)
}
