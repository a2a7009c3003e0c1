//! `GET /api/orders/{id}/events`: the order's progress as server-sent
//! events, for the success page. It starts with a snapshot (`event: order`,
//! the order as `GET /api/orders/{id}` shows it), then sends one event per
//! journal entry (`event: image` or `event: order`), read from
//! `order_events` — so it sees the transitions of every instance — and
//! ends after the order's outcome.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
    routing::get,
};
use futures::{Stream, stream};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    AppState,
    error::ApiResult,
    orders::{TokenQuery, authorize, view},
};
use crate::domain::{IdKind, OrderStatus, format_id};

/// How often the journal is read for new entries.
const POLL: Duration = Duration::from_millis(500);

pub fn router() -> Router<AppState> {
    Router::new().route("/api/orders/{order_id}/events", get(events))
}

#[derive(sqlx::FromRow)]
struct Entry {
    id: i64,
    image_id: Option<Uuid>,
    kind: String,
    status: String,
    detail: Value,
    created_at: time::OffsetDateTime,
}

struct Tail {
    state: AppState,
    order_id: Uuid,
    last: i64,
    queued: VecDeque<Event>,
    done: bool,
}

#[utoipa::path(get, path = "/api/orders/{order_id}/events", tag = "orders", params(("order_id" = String, Path)), responses((status = 200, description = "text/event-stream: a snapshot, then one event per transition"), (status = 404, description = "unknown order, or not yours")))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let order = authorize(&state, &order_id, &headers, &query).await?;
    let id = order.id;
    let finished = order.status().is_terminal();
    let last: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM order_events WHERE order_id = $1")
        .bind(id)
        .fetch_one(&state.db)
        .await?;
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
    };
    let stream = stream::unfold(tail, next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The next event: one queued, else new journal entries, polled until the order ends.
async fn next_event(mut tail: Tail) -> Option<(Result<Event, Infallible>, Tail)> {
    loop {
        if let Some(event) = tail.queued.pop_front() {
            return Some((Ok(event), tail));
        }
        if tail.done {
            return None;
        }
        let entries: Vec<Entry> = match sqlx::query_as(
            "SELECT id, image_id, kind, status, detail, created_at FROM order_events
             WHERE order_id = $1 AND id > $2 ORDER BY id LIMIT 200",
        )
        .bind(tail.order_id)
        .bind(tail.last)
        .fetch_all(&tail.state.db)
        .await
        {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the order journal; the stream ends");
                return None;
            }
        };
        if entries.is_empty() {
            tokio::time::sleep(POLL).await;
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
