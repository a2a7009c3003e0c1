//! Download links and the streamed ZIP.

mod common;

use std::{io::Read, time::Duration};

use common::{Options, TestApp, fake_replicate::FakeReplicate, spawn_app, spawn_app_with, wait_for_order};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

async fn link(app: &TestApp, order: &str, token: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/orders/{order}/download-links")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn restored_order(app: &TestApp, photos: usize) -> (String, String) {
    let (order, token) = app.paid_order(photos).await;
    wait_for_order(app, &order, &token, &["completed"], LONG).await;
    (order, token)
}

fn unzip(bytes: &[u8]) -> Vec<(String, zip::CompressionMethod, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a valid ZIP");
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let mut content = Vec::new();
            file.read_to_end(&mut content).unwrap();
            (file.name().to_owned(), file.compression(), content)
        })
        .collect()
}

#[tokio::test]
async fn a_link_downloads_the_restored_photos_as_a_stored_zip() {
    let app = spawn_app().await;
    let (order, token) = restored_order(&app, 2).await;
    let r = link(&app, &order, &token).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with("/download/") && url.len() > 50, "{url}");
    assert_eq!(body["max_downloads"], 5);
    assert!(body["expires_at"].is_string());

    let r = app.client.get(app.url(url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    assert_eq!(
        r.headers()["content-disposition"],
        format!("attachment; filename=\"restoreclick-{order}.zip\"").as_str()
    );
    let entries = unzip(&r.bytes().await.unwrap());
    let names: Vec<_> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["001_photo_restored.jpg", "002_photo_restored.png"]);
    assert!(
        entries
            .iter()
            .all(|(_, method, _)| *method == zip::CompressionMethod::Stored)
    );
    let (_, order_json) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    let first = order_json["images"][0]["restored_url"].as_str().unwrap();
    let restored = app
        .client
        .get(app.url(first))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        entries[0].2,
        restored.to_vec(),
        "the ZIP holds the restored photo as stored"
    );

    let with = app
        .client
        .get(app.url(&format!("{url}?include=originals")))
        .send()
        .await
        .unwrap();
    let names: Vec<_> = unzip(&with.bytes().await.unwrap())
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "001_photo_restored.jpg",
            "002_photo_restored.png",
            "originals/001_photo_original.jpg",
            "originals/002_photo_original.png"
        ]
    );
}

#[tokio::test]
async fn twenty_concurrent_downloads_of_a_five_use_link_let_exactly_five_through() {
    let app = spawn_app().await;
    let (order, token) = restored_order(&app, 1).await;
    let body: Value = link(&app, &order, &token).await.json().await.unwrap();
    let url = app.url(body["url"].as_str().unwrap());
    let attempts = (0..20).map(|_| app.client.get(&url).send());
    let mut statuses: Vec<u16> = Vec::new();
    for r in futures::future::join_all(attempts).await {
        let r = r.unwrap();
        let status = r.status().as_u16();
        if status == 403 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "download_link_invalid");
        } else {
            let _ = r.bytes().await.unwrap();
        }
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 15, "{statuses:?}");
}

#[tokio::test]
async fn expired_unknown_and_foreign_links_are_refused() {
    let app = spawn_app().await;
    let (order, token) = restored_order(&app, 1).await;
    let body: Value = link(&app, &order, &token).await.json().await.unwrap();
    sqlx::query("UPDATE download_links SET expires_at = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();
    let r = app
        .client
        .get(app.url(body["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .client
        .get(app.url("/download/not-a-real-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .client
        .post(app.url(&format!("/api/orders/{order}/download-links")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no token, no link");
    assert_eq!(
        app.count("SELECT count(*) FROM download_links WHERE token_hash IS NOT NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn no_link_while_nothing_is_restored() {
    let fake = FakeReplicate::start_with(1_000_000).await;
    let app = spawn_app_with(Options {
        replicate: Some(fake),
        ..Default::default()
    })
    .await;
    let (order, token) = app.paid_order(1).await;
    let r = link(&app, &order, &token).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "nothing_to_download");
}

/// Resident memory of this test process, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn a_large_order_streams_in_flat_memory() {
    use futures::StreamExt;

    let app = spawn_app().await;
    let (order, token) = restored_order(&app, 1).await;
    let order_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    const PHOTOS: usize = 40;
    const SIZE: usize = 6 << 20;
    for position in 2..=PHOTOS as i32 {
        let data = vec![position as u8; SIZE];
        let key = format!(
            "uploads/restored/{}/{position:03}_big_restored.jpg",
            order_id.simple()
        );
        let path = app.storage_dir.path().join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        sqlx::query(
            "INSERT INTO images (id, order_id, position, filename, stem, ext, content_type, bytes, width, height,
                                 status, temp_key, original_key, restored_key, restored_bytes)
             VALUES ($1, $2, $3, 'big.jpg', 'big', 'jpg', 'image/jpeg', $4, 4000, 3000, 'completed', 'x', 'y', $5, $4)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(order_id)
        .bind(position)
        .bind(SIZE as i64)
        .bind(&key)
        .execute(&app.db)
        .await
        .unwrap();
    }
    let body: Value = link(&app, &order, &token).await.json().await.unwrap();
    let baseline = rss();
    let response = app
        .client
        .get(app.url(body["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (mut received, mut peak) = (0usize, baseline);
    let mut stream = response.bytes_stream();
    for chunks in 0u64.. {
        let Some(chunk) = stream.next().await else { break };
        received += chunk.unwrap().len();
        if chunks % 16 == 0 {
            peak = peak.max(rss());
        }
    }
    assert!(
        received > (PHOTOS - 1) * SIZE,
        "the whole archive arrived: {received}"
    );
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 48 << 20,
        "memory grew by {} MB while {} MB streamed",
        growth >> 20,
        received >> 20
    );
}

#[tokio::test]
async fn a_finished_orders_zip_is_built_once_served_from_storage_and_swept_when_stale() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|s| s.cleanup.interval = Duration::from_millis(200))),
        ..Default::default()
    })
    .await;
    let (order, token) = restored_order(&app, 2).await;
    let body: Value = link(&app, &order, &token).await.json().await.unwrap();
    let url = app.url(body["url"].as_str().unwrap());
    let first = app.client.get(&url).send().await.unwrap().bytes().await.unwrap();
    common::eventually(LONG, "the archive cached", || async {
        app.stored_files()
            .iter()
            .any(|k| k.starts_with("downloads/") && k.ends_with("_all_photos.zip"))
    })
    .await;
    let cached = app
        .stored_files()
        .into_iter()
        .find(|k| k.starts_with("downloads/"))
        .unwrap();
    let cached_bytes = std::fs::read(app.storage_dir.path().join(&cached)).unwrap();
    let second = app.client.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(
        second.to_vec(),
        cached_bytes,
        "the second download is the cached archive"
    );
    let names = |b: &[u8]| unzip(b).into_iter().map(|(n, _, _)| n).collect::<Vec<_>>();
    assert_eq!(names(&first), names(&second));

    // Stale once older than downloads.zip_ttl (made so by renaming it to an old build time).
    let old = cached.replace(
        &cached.rsplit('/').next().unwrap().to_owned(),
        "1000_all_photos.zip",
    );
    std::fs::rename(
        app.storage_dir.path().join(&cached),
        app.storage_dir.path().join(&old),
    )
    .unwrap();
    common::eventually(LONG, "the stale archive swept", || async {
        !app.stored_files().iter().any(|k| k.starts_with("downloads/"))
    })
    .await;
}
