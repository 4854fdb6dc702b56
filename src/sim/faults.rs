//! Fault injection shared by the simulators: added latency (with seeded jitter), a seeded rate of
//! injected 500/502/503 answers, and a per-second rate limit answered with 429 and `Retry-After`.
//!
//! Both simulators take the same flags ([`FaultArgs`]) and keep their own error body shape; this
//! module only decides *whether* a request is delayed, limited or failed, and counts what it
//! did, so that both simulators misbehave in exactly the same, reproducible way.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sim::lock;

/// The value of the `Retry-After` header sent with every 429.
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// A fault chosen for one request; the simulator renders it in its own error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Fault {
    /// More than `limit` requests arrived in the current one-second window: answer 429 with
    /// `Retry-After: 1`.
    #[error("Too many requests: more than {limit} requests per second")]
    RateLimited {
        /// The configured requests per second.
        limit: u32,
    },
    /// `--error-rate` picked this request: answer with this 500, 502 or 503.
    #[error("injected {0} error")]
    Injected(StatusCode),
}

impl Fault {
    /// The HTTP status to answer with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Injected(s) => s,
        }
    }

    /// Adds the headers the fault's answer carries besides its body (whose shape is the
    /// platform's): `Retry-After` on a 429.
    pub(crate) fn add_headers(self, response: &mut Response) {
        if let Self::RateLimited { .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
    }
}

/// An invalid fault setting, naming its flag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidFaults {
    /// `--error-rate` outside `0..=1` (or NaN).
    #[error("--error-rate must be between 0 and 1, got {0}")]
    ErrorRate(f64),
    /// `--rate-limit 0` would refuse every request.
    #[error("--rate-limit must be at least 1 request per second")]
    ZeroRateLimit,
    /// `--latency-ms` plus `--latency-jitter-ms` does not fit a duration.
    #[error("--latency-ms {latency_ms} plus --latency-jitter-ms {jitter_ms} overflows")]
    LatencyOverflow {
        /// `--latency-ms`.
        latency_ms: u64,
        /// `--latency-jitter-ms`.
        jitter_ms: u64,
    },
}

/// Every problem with the fault settings at once (empty when they are valid).
pub fn validate(args: &FaultArgs) -> Vec<InvalidFaults> {
    let mut p = Vec::new();
    if !(0.0..=1.0).contains(&args.error_rate) {
        p.push(InvalidFaults::ErrorRate(args.error_rate));
    }
    if args.rate_limit == Some(0) {
        p.push(InvalidFaults::ZeroRateLimit);
    }
    if args
        .latency_ms
        .checked_add(args.latency_jitter_ms)
        .is_none()
    {
        p.push(InvalidFaults::LatencyOverflow {
            latency_ms: args.latency_ms,
            jitter_ms: args.latency_jitter_ms,
        });
    }
    p
}

/// A fixed one-second window for the rate limit, opened by the first request after the last
/// one closed, on `tokio::time` (so paused-clock tests step it).
struct RateWindow {
    opened: Option<tokio::time::Instant>,
    count: u32,
}

/// The behaviour flags both simulators take: faults, mutation and the size of the data.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct FaultArgs {
    /// Added latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra latency per request: a seeded, uniform draw from 0..=J milliseconds on top of
    /// `--latency-ms`.
    #[arg(long, default_value_t = 0, value_name = "J")]
    pub latency_jitter_ms: u64,
    /// Fraction (0..=1) of requests answered with a 500/502/503.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Requests allowed per second; more get 429 with Retry-After.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// After each served page, modify this many already-served indicators.
    #[arg(long, default_value_t = 0)]
    pub mutate_per_page: usize,
    /// Realistic-size indicators: many attributes, associations and tags, so that one with
    /// every optional block requested is tens of KB (deterministic per seed).
    #[arg(long)]
    pub rich_context: bool,
}

impl Default for FaultArgs {
    /// No faults (the command-line defaults).
    fn default() -> Self {
        Self {
            latency_ms: 0,
            latency_jitter_ms: 0,
            error_rate: 0.0,
            rate_limit: None,
            mutate_per_page: 0,
            rich_context: false,
        }
    }
}

/// The runtime fault injector of one simulator.
pub struct Faults {
    latency: Duration,
    jitter_ms: u64,
    /// Separate from `rng`, so that adding jitter leaves the choice of failed requests unchanged.
    jitter_rng: Mutex<ChaCha8Rng>,
    error_rate: f64,
    rate_limit: Option<u32>,
    rng: Mutex<ChaCha8Rng>,
    window: Mutex<RateWindow>,
    rate_limited: AtomicU64,
    errors_injected: AtomicU64,
}

impl Faults {
    /// Validates the settings once; `seed` makes the choice of failed requests and the jitter
    /// reproducible.
    pub fn new(args: &FaultArgs, seed: u64) -> Result<Self, InvalidFaults> {
        if let Some(first) = validate(args).into_iter().next() {
            return Err(first);
        }
        Ok(Self {
            latency: Duration::from_millis(args.latency_ms),
            jitter_ms: args.latency_jitter_ms,
            jitter_rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x6a69_7474_6572)),
            error_rate: args.error_rate,
            rate_limit: args.rate_limit,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            window: Mutex::new(RateWindow {
                opened: None,
                count: 0,
            }),
            rate_limited: AtomicU64::new(0),
            errors_injected: AtomicU64::new(0),
        })
    }

    /// This request's latency: `--latency-ms` plus a seeded uniform draw from
    /// `0..=--latency-jitter-ms`.
    pub(crate) fn next_latency(&self) -> Duration {
        if self.jitter_ms == 0 {
            return self.latency;
        }
        let extra = lock(&self.jitter_rng).random_range(0..=self.jitter_ms);
        self.latency + Duration::from_millis(extra)
    }

    /// Sleeps for [`Faults::next_latency`] (on `tokio::time`, so paused-clock tests stay
    /// instant).
    pub async fn delay(&self) {
        let latency = self.next_latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// Counts the request against the current second's budget; `Err` when it is over.
    pub(crate) fn check_rate(&self) -> Result<(), Fault> {
        let Some(limit) = self.rate_limit else {
            return Ok(());
        };
        let now = tokio::time::Instant::now();
        let mut w = lock(&self.window);
        if w.opened.is_none_or(|o| now - o >= Duration::from_secs(1)) {
            w.opened = Some(now);
            w.count = 0;
        }
        w.count = w.count.saturating_add(1);
        if w.count > limit {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(Fault::RateLimited { limit });
        }
        Ok(())
    }

    /// Draws from the seeded RNG whether this request fails, and with which 5xx.
    pub(crate) fn check_error(&self) -> Result<(), Fault> {
        if self.error_rate <= 0.0 {
            return Ok(());
        }
        let mut rng = lock(&self.rng);
        if rng.random_bool(self.error_rate) {
            let status = [
                StatusCode::INTERNAL_SERVER_ERROR,
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
            ][rng.random_range(0..3usize)];
            self.errors_injected.fetch_add(1, Ordering::Relaxed);
            return Err(Fault::Injected(status));
        }
        Ok(())
    }

    /// Rate limit, then injected error: what a load balancer in front of the real API could do
    /// to a request (after its latency, which the server adds to every request) before the
    /// application sees it.
    pub(crate) fn check_request(&self) -> Result<(), Fault> {
        self.check_rate()?;
        self.check_error()
    }

    /// Requests answered 429 so far.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::SeqCst)
    }

    /// Requests answered with an injected 5xx so far.
    pub fn errors_injected(&self) -> u64 {
        self.errors_injected.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(error_rate: f64, rate_limit: Option<u32>) -> FaultArgs {
        FaultArgs {
            error_rate,
            rate_limit,
            ..FaultArgs::default()
        }
    }

    #[test]
    fn validation_names_flags_and_rejects_nan() {
        assert!(validate(&args(0.5, Some(3))).is_empty());
        let p = validate(&FaultArgs {
            latency_ms: u64::MAX,
            latency_jitter_ms: 1,
            ..args(f64::NAN, Some(0))
        });
        assert_eq!(p.len(), 3);
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert!(text[0].contains("--error-rate"));
        assert!(text[1].contains("--rate-limit"));
        assert!(text[2].contains("--latency-jitter-ms"));
        assert!(Faults::new(&args(1.5, None), 1).is_err());
    }

    #[test]
    fn latency_jitter_is_seeded_and_within_bounds() {
        let draw = |seed| {
            let f = Faults::new(
                &FaultArgs {
                    latency_ms: 20,
                    latency_jitter_ms: 10,
                    ..FaultArgs::default()
                },
                seed,
            )
            .unwrap();
            (0..200).map(|_| f.next_latency()).collect::<Vec<_>>()
        };
        let a = draw(3);
        assert_eq!(a, draw(3));
        assert_ne!(a, draw(4));
        let ms: Vec<u128> = a.iter().map(Duration::as_millis).collect();
        assert!(ms.iter().all(|m| (20..=30).contains(m)), "{ms:?}");
        // Both ends of the range are reachable.
        assert!(ms.contains(&20) && ms.contains(&30));
        let fixed = Faults::new(
            &FaultArgs {
                latency_ms: 7,
                ..FaultArgs::default()
            },
            1,
        )
        .unwrap();
        assert_eq!(fixed.next_latency(), Duration::from_millis(7));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_counts_within_one_second() {
        let f = Faults::new(&args(0.0, Some(2)), 1).unwrap();
        let burst = |f: &Faults| (0..3).map(|_| f.check_rate().is_ok()).collect::<Vec<_>>();
        assert_eq!(burst(&f), [true, true, false]);
        assert_eq!(f.rate_limited(), 1);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(f.check_rate().is_err(), "the window is still open");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(burst(&f), [true, true, false], "a new second, a new budget");
        assert_eq!(f.rate_limited(), 3);
        assert_eq!(
            Fault::RateLimited { limit: 2 }.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn error_rate_is_seeded_and_counts() {
        let draw = |seed| {
            let f = Faults::new(&args(0.5, None), seed).unwrap();
            let v: Vec<bool> = (0..64).map(|_| f.check_error().is_err()).collect();
            (v, f.errors_injected())
        };
        let (a, na) = draw(7);
        let (b, nb) = draw(7);
        assert_eq!(a, b);
        assert_eq!(na, nb);
        assert!(na > 0 && na < 64);
        let always = Faults::new(&args(1.0, None), 1).unwrap();
        for _ in 0..10 {
            let e = always.check_error().unwrap_err();
            assert!([500, 502, 503].contains(&e.status().as_u16()));
        }
        assert!(
            Faults::new(&args(0.0, None), 1)
                .unwrap()
                .check_error()
                .is_ok()
        );
    }
}
