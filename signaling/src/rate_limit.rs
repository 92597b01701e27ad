//! Rate limits: a token bucket (time passed in), and the per-client-address
//! limit on HTTP requests that answers 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A token bucket (time passed in).
#[derive(Debug, Clone)]
pub struct RateLimit {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64, now: Instant) -> RateLimit {
        RateLimit {
            tokens: burst,
            last: now,
            rate,
            burst,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Take one token; false when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available again.
    pub fn wait(&self) -> Duration {
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }

    /// Full again: nothing to remember about this client.
    fn idle(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Requests per second and burst allowed to one client address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientRate {
    pub per_second: f64,
    pub burst: f64,
}

/// Addresses tracked before idle ones are pruned.
const PRUNE_ABOVE: usize = 10_000;

/// One token bucket per client address.
#[derive(Debug)]
pub struct ClientLimiter {
    rate: ClientRate,
    buckets: Mutex<HashMap<IpAddr, RateLimit>>,
}

impl ClientLimiter {
    pub fn new(rate: ClientRate) -> ClientLimiter {
        ClientLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Ok, or how long `ip` must wait.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| !b.idle(now));
        }
        let bucket = buckets
            .entry(ip)
            .or_insert_with(|| RateLimit::new(self.rate.per_second, self.rate.burst, now));
        if bucket.take(now) {
            Ok(())
        } else {
            Err(bucket.wait())
        }
    }

    pub fn tracked(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }
}

/// Axum middleware: 429 with `Retry-After` (whole seconds, at least 1) for a
/// client address over its rate. Requests without a known peer address
/// (no `ConnectInfo`) pass.
pub async fn limit_clients(
    State(limiter): State<Arc<ClientLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip {
        if let Err(wait) = limiter.check(ip, Instant::now()) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests from {ip}; retry in {secs} s\n"),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return resp;
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10.0, 5.0, t0);
        assert_eq!((0..8).filter(|_| r.take(t0)).count(), 5, "burst");
        assert!(!r.take(t0));
        assert_eq!(r.wait(), Duration::from_millis(100));
        assert!(r.take(t0 + Duration::from_millis(100)), "refilled one");
        assert!(!r.take(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            (0..8).filter(|_| r.take(later)).count(),
            5,
            "capped at burst"
        );
    }

    #[test]
    fn each_client_address_has_its_own_bucket() {
        let t0 = Instant::now();
        let l = ClientLimiter::new(ClientRate {
            per_second: 2.0,
            burst: 3.0,
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!((0..3).all(|_| l.check(a, t0).is_ok()));
        let wait = l.check(a, t0).expect_err("a is over its rate");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(l.check(b, t0).is_ok(), "b is not affected");
        assert!(l.check(a, t0 + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn idle_addresses_are_pruned_when_many_are_tracked() {
        let t0 = Instant::now();
        let l = ClientLimiter::new(ClientRate {
            per_second: 1.0,
            burst: 1.0,
        });
        for i in 0..=PRUNE_ABOVE as u32 {
            let _ = l.check(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(l.tracked(), PRUNE_ABOVE + 1);
        // Much later every bucket is full again: the next check prunes them.
        let _ = l.check([10, 9, 9, 9].into(), t0 + Duration::from_secs(10));
        assert_eq!(l.tracked(), 1);
    }
}
