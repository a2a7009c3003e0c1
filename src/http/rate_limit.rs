//! Per-client rate limits on the routes a client can hammer: uploads,
//! checkout, orders and download tokens (`http.rate_limits`). A token bucket
//! per client IP (`tower_governor`); past it the answer is 429 with
//! `Retry-After` and the error body.
//!
//! The client is the peer, unless the peer is one of `http.trusted_proxies`:
//! then it is the rightmost `X-Forwarded-For` address that is not itself a
//! trusted proxy, so a client cannot choose the address it is counted by.
//! IPv6 clients are counted by their /64, which one subscriber holds whole.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    extract::ConnectInfo,
    http::{HeaderMap, Request, StatusCode},
    response::IntoResponse,
};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use tower_governor::{
    GovernorError, GovernorLayer, governor::GovernorConfigBuilder, key_extractor::KeyExtractor,
};

use super::{AppState, error::ApiError};
use crate::config::RateLimit;

/// How often buckets that are full again are forgotten, so that the map of
/// clients does not grow with every address ever seen.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// The client a request is counted as.
#[derive(Clone)]
pub struct ClientKey {
    trusted: Arc<[IpNet]>,
}

impl ClientKey {
    pub fn new(trusted: &[IpNet]) -> Self {
        Self {
            trusted: trusted.into(),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer's, or what trusted proxies forwarded.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| parse_hop(hop.trim()))
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|ip| !self.trusts(**ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// IPv4 addresses as they are; IPv6 by their /64 (IPv4-mapped as IPv4).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

impl KeyExtractor for ClientKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or(GovernorError::UnableToExtractKey)?;
        Ok(bucket(self.client(peer, req.headers())))
    }
}

/// The 429 every limit answers, counted under `group`.
pub fn refused(group: &'static str, retry_after: u64, message: &str) -> ApiError {
    metrics::counter!("restoreclick_rate_limited_total", "group" => group).increment(1);
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
    e.retry_after = Some(retry_after.max(1));
    e
}

/// `router` limited per client by `limit`, named `group` in the metrics.
pub fn limit(
    router: Router<AppState>,
    group: &'static str,
    limit: RateLimit,
    clients: &ClientKey,
) -> Router<AppState> {
    let Some(quota) = quota(limit) else {
        return router;
    };
    let Some(config) = GovernorConfigBuilder::default()
        .period(quota.replenish_interval())
        .burst_size(quota.burst_size().get())
        .key_extractor(clients.clone())
        .finish()
    else {
        // Only a zero period or burst is refused, and `quota` has none.
        tracing::warn!(
            group,
            "the rate limit cannot be built; the routes are not limited"
        );
        return router;
    };
    let limiter = config.limiter().clone();
    forget_full_buckets(move || limiter.retain_recent());
    let layer = GovernorLayer::new(config).error_handler(move |error| match error {
        // `wait_time` is whole seconds rounded down: round up instead.
        GovernorError::TooManyRequests { wait_time, .. } => refused(
            group,
            wait_time + 1,
            "too many requests from this address; retry after the time given",
        )
        .into_response(),
        GovernorError::UnableToExtractKey | GovernorError::Other { .. } => {
            ApiError::internal("the client's address is unknown").into_response()
        }
    });
    router.layer(layer)
}

/// The bucket for `limit`, or `None` when it is turned off.
pub fn quota(limit: RateLimit) -> Option<Quota> {
    let per_minute = NonZeroU32::new(limit.per_minute)?;
    let burst = NonZeroU32::new(limit.burst.max(1))?;
    Some(Quota::per_minute(per_minute).allow_burst(burst))
}

/// A per-key limit checked inside a workflow (checkouts per upload session).
pub struct KeyedLimit<K: std::hash::Hash + Eq + Clone> {
    limiter: Option<Arc<DefaultKeyedRateLimiter<K>>>,
}

impl<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static> KeyedLimit<K> {
    pub fn new(limit: RateLimit) -> Self {
        let limiter = quota(limit).map(|q| Arc::new(DefaultKeyedRateLimiter::keyed(q)));
        if let Some(limiter) = &limiter {
            let limiter = limiter.clone();
            forget_full_buckets(move || limiter.retain_recent());
        }
        Self { limiter }
    }

    /// `Err(seconds to wait)` when `key` is past its limit.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs() + 1
        })
    }
}

fn forget_full_buckets(forget: impl Fn() + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut every = tokio::time::interval(FORGET_EVERY);
            loop {
                every.tick().await;
                forget();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let key = ClientKey::new(&[]);
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(key.client(peer, &headers(&["198.51.100.1"])), peer);
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let key = ClientKey::new(&["10.0.0.0/8".parse().unwrap()]);
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        // The client may prepend anything; the proxies append what they saw.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.0.0.1"]);
        assert_eq!(key.client(proxy, &h), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(key.client(proxy, &HeaderMap::new()), proxy);
        let h = headers(&["garbage, 198.51.100.8:4711"]);
        assert_eq!(key.client(proxy, &h), "198.51.100.8".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_64() {
        let a = bucket("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = bucket("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = bucket("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            bucket("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_zero_rate_turns_a_limit_off() {
        assert!(
            quota(RateLimit {
                per_minute: 0,
                burst: 5
            })
            .is_none()
        );
        let limit = KeyedLimit::<u32>::new(RateLimit {
            per_minute: 0,
            burst: 0,
        });
        assert!((0..100).all(|_| limit.check(&1).is_ok()));
    }

    #[test]
    fn a_keyed_limit_allows_its_burst_then_says_how_long_to_wait() {
        let limit = KeyedLimit::<u32>::new(RateLimit {
            per_minute: 1,
            burst: 3,
        });
        assert!((0..3).all(|_| limit.check(&7).is_ok()));
        let wait = limit.check(&7).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(limit.check(&8).is_ok(), "another key has its own bucket");
    }
}
