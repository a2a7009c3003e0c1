//! `GET /api/orders/{id}/events`: the order's progress as server-sent
//! events, for the success page. It starts with a snapshot (`event: order`,
//! the order as `GET /api/orders/{id}` shows it), then sends one event per
//! journal entry (`event: image` or `event: order`), read from
//! `order_events` — so it sees the transitions of every instance — and
//! ends after the order's outcome. A stream reads the journal only when
//! Postgres notifies a change to its order (`LISTEN order_events`), never
//! on a timer of its own, and streams are capped per order and in all.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::sse::{Event, KeepAlive, Sse},
    routing::get,
};
use futures::{Stream, stream};
use serde_json::json;
use uuid::Uuid;

use super::{
    AppState,
    error::{ApiError, ApiResult},
    orders::{TokenQuery, authorize, view},
};
use crate::{
    db::{self, order_feed::Watch},
    domain::{IdKind, OrderStatus, format_id},
};

/// A stream reads the journal when its order's NOTIFY wakes it; this is
/// only the safety net for a wake-up that never comes.
const RECHECK: Duration = Duration::from_secs(30);
/// Entries read at once.
const BATCH: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/orders/{order_id}/events", get(events))
}

/// Open streams, counted per order and in all (`http.max_event_streams`,
/// `http.max_event_streams_per_order`): each holds a connection and a
/// wake-up, and one client must not open thousands.
pub struct StreamSlots {
    total: usize,
    per_order: usize,
    open: Mutex<HashMap<Uuid, usize>>,
}

/// One admitted stream; its slot is freed when the stream ends.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    order_id: Uuid,
}

impl StreamSlots {
    pub fn new(total: usize, per_order: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_order,
            open: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.lock().values().sum()
    }

    /// A slot for a stream of `order_id`, or the refusal.
    pub fn admit(self: &Arc<Self>, order_id: Uuid) -> ApiResult<StreamSlot> {
        let mut open = self.lock();
        if open.values().sum::<usize>() >= self.total {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many live progress streams are open; retry shortly, or poll the order",
            );
            e.retry_after = Some(5);
            return Err(e);
        }
        let for_order = open.entry(order_id).or_default();
        if *for_order >= self.per_order {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "at most {} live progress streams may be open for one order; close one first",
                    self.per_order
                ),
            );
            e.retry_after = Some(5);
            return Err(e);
        }
        *for_order += 1;
        metrics::gauge!("restoreclick_event_streams").increment(1.0);
        Ok(StreamSlot {
            slots: self.clone(),
            order_id,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        if let Some(n) = open.get_mut(&self.order_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.order_id);
            }
        }
        metrics::gauge!("restoreclick_event_streams").decrement(1.0);
    }
}

struct Tail {
    state: AppState,
    order_id: Uuid,
    last: i64,
    queued: VecDeque<Event>,
    done: bool,
    watch: Watch,
    _slot: StreamSlot,
}

#[utoipa::path(get, path = "/api/orders/{order_id}/events", tag = "orders", params(("order_id" = String, Path)), responses((status = 200, description = "text/event-stream: a snapshot, then one event per transition"), (status = 404, description = "unknown order, or not yours"), (status = 429, description = "too many streams open for this order (too_many_streams), or from this address (rate_limited)"), (status = 503, description = "too many streams open in all (overloaded)")))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let order = authorize(&state, &order_id, &headers, &query).await?;
    let id = order.id;
    let slot = state.event_streams.admit(id)?;
    let finished = order.status().is_terminal();
    // Watched before the journal is read, so nothing falls in between.
    let watch = state.order_feed.watch(id);
    let last = db::events::last_id(&state.db, id).await?;
    let snapshot = view(&state, order).await?;
    let first = Event::default()
        .event("order")
        .json_data(&snapshot)
        .unwrap_or_default();
    let tail = Tail {
        state,
        order_id: id,
        last,
        queued: VecDeque::from([first]),
        done: finished,
        watch,
        _slot: slot,
    };
    let stream = stream::unfold(tail, next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The next event: one queued, else new journal entries, read each time
/// the order's journal changes, until the order ends.
async fn next_event(mut tail: Tail) -> Option<(Result<Event, Infallible>, Tail)> {
    loop {
        if let Some(event) = tail.queued.pop_front() {
            return Some((Ok(event), tail));
        }
        if tail.done {
            return None;
        }
        let entries = match db::events::since(&tail.state.db, tail.order_id, tail.last, BATCH).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the order journal; the stream ends");
                return None;
            }
        };
        if entries.is_empty() {
            tokio::select! {
                () = tail.watch.changed() => {}
                () = tokio::time::sleep(RECHECK) => {}
            }
            continue;
        }
        for entry in entries {
            tail.last = entry.id;
            let order_ref = format_id(IdKind::Order, tail.order_id);
            let (name, data) = match entry.image_id {
                Some(image) => (
                    "image",
                    json!({"id": format_id(IdKind::Image, image), "order_id": order_ref, "status": entry.status,
                           "detail": entry.detail, "at": entry.created_at.unix_timestamp()}),
                ),
                None => (
                    "order",
                    json!({"id": order_ref, "status": entry.status, "detail": entry.detail,
                           "at": entry.created_at.unix_timestamp()}),
                ),
            };
            if entry.kind == "order"
                && entry
                    .status
                    .parse::<OrderStatus>()
                    .is_ok_and(OrderStatus::is_terminal)
            {
                tail.done = true;
            }
            let event = Event::default()
                .event(name)
                .id(entry.id.to_string())
                .json_data(data)
                .unwrap_or_default();
            tail.queued.push_back(event);
        }
    }
}
