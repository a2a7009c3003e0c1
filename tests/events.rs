//! `GET /api/orders/{id}/events`: a snapshot, then every transition, then the end.

mod common;

use std::time::Duration;

use common::{Options, fake_replicate::FakeReplicate, spawn_app_with};
use futures::StreamExt;
use serde_json::Value;

/// (event name, data) pairs of a server-sent events body.
fn parse(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            Some((name?, serde_json::from_str(&data).ok()?))
        })
        .collect()
}

#[tokio::test]
async fn the_stream_starts_with_a_snapshot_follows_every_transition_and_ends_with_the_outcome() {
    let fake = FakeReplicate::start_with(6).await;
    let app = spawn_app_with(Options {
        replicate: Some(fake),
        ..Default::default()
    })
    .await;
    let (order, token) = app.paid_order(2).await;

    let r = app
        .client
        .get(app.url(&format!("/api/orders/{order}/events?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = String::new();
    let mut stream = r.bytes_stream();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = stream.next().await {
            body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await;
    assert!(read.is_ok(), "the stream ends once the order is finished: {body}");

    let events = parse(&body);
    let (first_name, snapshot) = &events[0];
    assert_eq!(first_name, "order");
    assert_eq!(snapshot["id"], order.as_str());
    assert_eq!(snapshot["progress"]["total"], 2);
    let completed_images = events
        .iter()
        .filter(|(name, data)| name == "image" && data["status"] == "completed")
        .count();
    let seen_completed = snapshot["progress"]["completed"].as_u64().unwrap() as usize;
    assert_eq!(completed_images + seen_completed, 2, "{events:?}");
    let (last_name, last) = events.last().unwrap();
    assert_eq!(last_name, "order");
    assert_eq!(last["status"], "completed");
}

#[tokio::test]
async fn a_finished_order_streams_its_snapshot_and_ends_and_strangers_get_404() {
    let app = common::spawn_app().await;
    let (order, token) = app.paid_order(1).await;
    common::wait_for_order(&app, &order, &token, &["completed"], Duration::from_secs(30)).await;
    let r = app
        .client
        .get(app.url(&format!("/api/orders/{order}/events")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let events = parse(&r.text().await.unwrap());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1["status"], "completed");
    let r = app
        .client
        .get(app.url(&format!("/api/orders/{order}/events?token=nope")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Reads server-sent events from `stream` until one satisfies `wanted`.
async fn read_until(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    within: Duration,
    wanted: impl Fn(&str, &Value) -> bool,
) -> Option<Value> {
    tokio::time::timeout(within, async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                if let Some((name, data)) = parse(&block).pop()
                    && wanted(&name, &data)
                {
                    return Some(data);
                }
            }
            let chunk = stream.next().await?.ok()?;
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .ok()
    .flatten()
}

async fn open_stream(app: &common::TestApp, order: &str, token: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/orders/{order}/events")))
        .bearer_auth(token)
        .send()
        .await
        .expect("the shop answers")
}

/// Appends a journal entry as another instance would, straight in Postgres.
async fn journal_probe(app: &common::TestApp, order: &str, probe: &str) {
    let id = restoreclick::domain::parse_id(restoreclick::domain::IdKind::Order, order).expect("an order id");
    sqlx::query(
        "INSERT INTO order_events (order_id, kind, status, detail) VALUES ($1, 'order', 'processing', $2)",
    )
    .bind(id)
    .bind(serde_json::json!({ "probe": probe }))
    .execute(&app.db)
    .await
    .expect("insert a journal entry");
}

/// Streams read the journal when Postgres notifies a change, not on a
/// timer: an entry written elsewhere arrives well within the 30 s safety
/// recheck, and still does after the listening connection is killed.
#[tokio::test]
async fn a_journal_entry_written_anywhere_reaches_an_open_stream_at_once_through_notify() {
    let fake = FakeReplicate::start_with(u32::MAX).await;
    let app = spawn_app_with(Options {
        replicate: Some(fake),
        ..Default::default()
    })
    .await;
    let (order, token) = app.paid_order(1).await;
    let r = open_stream(&app, &order, &token).await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut buffer = String::new();
    let snapshot = read_until(&mut stream, &mut buffer, Duration::from_secs(10), |name, _| {
        name == "order"
    })
    .await;
    assert!(snapshot.is_some(), "the snapshot comes first");

    let started = std::time::Instant::now();
    journal_probe(&app, &order, "first").await;
    let probe = |want: &'static str| move |_: &str, data: &Value| data["detail"]["probe"] == want;
    let seen = read_until(&mut stream, &mut buffer, Duration::from_secs(5), probe("first")).await;
    assert!(seen.is_some(), "the entry arrived");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "pushed, not polled: {took:?}");

    let killed: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&app.db)
    .await
    .expect("the listeners");
    assert!(!killed.is_empty(), "the shop listens on its own connection");
    for pid in killed {
        let _ = sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&app.db)
            .await;
    }
    journal_probe(&app, &order, "after the listener was killed").await;
    let seen = read_until(
        &mut stream,
        &mut buffer,
        Duration::from_secs(15),
        probe("after the listener was killed"),
    )
    .await;
    assert!(seen.is_some(), "the listener came back and caught up");
}

#[tokio::test]
async fn live_streams_are_capped_per_order_and_in_all() {
    let fake = FakeReplicate::start_with(u32::MAX).await;
    let app = spawn_app_with(Options {
        replicate: Some(fake),
        tweak: Some(Box::new(|s| {
            s.http.max_event_streams = 3;
            s.http.max_event_streams_per_order = 2;
        })),
        ..Default::default()
    })
    .await;
    let (first, first_token) = app.paid_order(1).await;
    let (second, second_token) = app.paid_order(1).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let r = open_stream(&app, &first, &first_token).await;
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    let refused = open_stream(&app, &first, &first_token).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "too_many_streams");

    let r = open_stream(&app, &second, &second_token).await;
    assert_eq!(r.status(), 200, "another order has its own count");
    open.push(r);
    let refused = open_stream(&app, &second, &second_token).await;
    assert_eq!(refused.status(), 503, "every stream of the instance is taken");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(app.metric("restoreclick_event_streams").await, Some(3.0));

    // The order itself is still there to poll.
    let (status, _) = app
        .get_json(&format!("/api/orders/{second}?token={second_token}"))
        .await;
    assert_eq!(status, 200);
}
