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
