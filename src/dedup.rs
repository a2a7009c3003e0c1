//! Redis as the fast path of webhook deduplication.
//!
//! `SET NX` claims an event id while it is applied, and marks it done for
//! `redis.dedup_ttl` afterwards, so a repeated delivery is answered without a
//! database round trip. Redis is an optimisation, never the guarantee: when it
//! is down, slow or has forgotten a key, the `webhook_events` row still makes
//! the event apply once. Every call here is bounded in time and never fails,
//! and after a failure the webhook path skips Redis for [`OPEN_FOR`] (a
//! circuit breaker) instead of paying a timeout on every request.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redis::{
    AsyncCommands, SetExpiry, SetOptions,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use crate::config::RedisSettings;

/// Longest wait for Redis on the webhook path before going on without it.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a claim lasts if its holder dies before finishing.
const CLAIM_TTL_SECS: u64 = 60;
/// After a failed call, Redis is skipped this long before it is tried again.
const OPEN_FOR: Duration = Duration::from_secs(5);

/// What Redis knows about an event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours to apply.
    Claimed,
    /// Applied before: answer at once.
    Done,
    /// Another delivery is applying it now (the database decides the outcome).
    InFlight,
    /// Redis did not answer in time.
    Unavailable,
}

#[derive(Clone)]
pub struct WebhookDedup {
    conn: Option<ConnectionManager>,
    prefix: String,
    ttl: Duration,
    /// Until when Redis is skipped after a failure (the breaker is open).
    skip_until: Arc<Mutex<Option<Instant>>>,
}

impl WebhookDedup {
    /// Prepares a lazy connection: the shop starts (and stays correct) with Redis down.
    pub fn new(settings: &RedisSettings) -> Self {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let conn = redis::Client::open(settings.url.expose())
            .and_then(|client| ConnectionManager::new_lazy_with_config(client, config))
            .inspect_err(
                |e| tracing::warn!(error = %e, "redis unusable; webhook dedup uses the database alone"),
            )
            .ok();
        Self {
            conn,
            prefix: settings.key_prefix.clone(),
            ttl: settings.dedup_ttl,
            skip_until: Arc::default(),
        }
    }

    fn key(&self, source: &str, id: &str) -> String {
        format!("{}webhook:{source}:{id}", self.prefix)
    }

    /// Whether the breaker is open: Redis failed less than [`OPEN_FOR`] ago.
    fn skipping(&self) -> bool {
        self.skip_until
            .lock()
            .map(|until| until.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    fn trip(&self, failed: bool) {
        if let Ok(mut until) = self.skip_until.lock() {
            *until = failed.then(|| Instant::now() + OPEN_FOR);
        }
    }

    async fn call<T>(&self, op: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>) -> Option<T> {
        let conn = self.conn.clone()?;
        if self.skipping() {
            return None;
        }
        self.attempt(conn, op).await
    }

    async fn attempt<T>(
        &self,
        conn: ConnectionManager,
        op: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Option<T> {
        let answer = match tokio::time::timeout(CALL_TIMEOUT, op(conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis call failed; skipping redis for a while");
                None
            }
            Err(_) => {
                tracing::warn!("redis call timed out; skipping redis for a while");
                None
            }
        };
        self.trip(answer.is_none());
        answer
    }

    pub async fn claim(&self, source: &str, id: &str) -> Claim {
        let key = self.key(source, id);
        let options = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::EX(CLAIM_TTL_SECS));
        let claimed = self
            .call(async |mut c| {
                c.set_options::<_, _, Option<String>>(&key, "processing", options)
                    .await
            })
            .await;
        match claimed {
            None => Claim::Unavailable,
            Some(Some(_)) => Claim::Claimed,
            Some(None) => match self
                .call(async |mut c| c.get::<_, Option<String>>(&key).await)
                .await
            {
                Some(Some(v)) if v == "done" => Claim::Done,
                Some(_) => Claim::InFlight,
                None => Claim::Unavailable,
            },
        }
    }

    /// Marks the event applied, for `redis.dedup_ttl`.
    pub async fn done(&self, source: &str, id: &str) {
        let key = self.key(source, id);
        let ttl = self.ttl.as_secs().max(1);
        self.call(async |mut c| c.set_ex::<_, _, ()>(&key, "done", ttl).await)
            .await;
    }

    /// Gives up a claim after a failure, so a retried delivery is not turned away.
    pub async fn release(&self, source: &str, id: &str) {
        let key = self.key(source, id);
        self.call(async |mut c| c.del::<_, ()>(&key).await).await;
    }

    /// For readiness: does Redis answer? Always asks (a success closes the
    /// breaker, so the webhook path uses Redis again at once).
    pub async fn ping(&self) -> bool {
        let Some(conn) = self.conn.clone() else {
            return false;
        };
        self.attempt(conn, async |mut c| {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await
        .is_some()
    }
}
