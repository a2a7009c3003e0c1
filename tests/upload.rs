//! `POST /api/upload` and friends: what is accepted, what is refused, and
//! that a refused batch stores nothing.

mod common;

use common::{Options, photos, spawn_app, spawn_app_with};
use serde_json::Value;

async fn refused(app: &common::TestApp, files: Vec<(&str, Vec<u8>)>) -> (u16, Value) {
    let response = app.upload(files, None).await;
    let status = response.status().as_u16();
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.expect("error body");
    assert!(body["error"]["code"].is_string(), "error body: {body}");
    assert!(body["error"]["message"].is_string(), "error body: {body}");
    assert!(
        app.stored_files().is_empty(),
        "a refused upload stored {:?}",
        app.stored_files()
    );
    assert_eq!(app.count("SELECT count(*) FROM file_uploads").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM upload_sessions").await, 0);
    (status, body)
}

fn file_codes(body: &Value) -> Vec<String> {
    body["error"]["details"]["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .map(|f| f["code"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn accepted_photos_land_in_temp_storage_with_their_rows() {
    let app = spawn_app().await;
    let response = app
        .upload(
            vec![
                ("grandma.jpg", photos::jpeg(120, 80)),
                ("Opa & Oma.png", photos::png(64, 100)),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let session = body["session_id"].as_str().unwrap();
    assert!(session.starts_with("ups_"));
    assert!(body["expires_at"].is_string());
    let files = body["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["filename"], "grandma.jpg");
    assert_eq!(files[0]["content_type"], "image/jpeg");
    assert_eq!(files[0]["width"], 120);
    assert_eq!(files[0]["height"], 80);
    assert!(files[0]["id"].as_str().unwrap().starts_with("fil_"));
    assert_eq!(files[1]["filename"], "Opa & Oma.png");
    assert_eq!(files[1]["content_type"], "image/png");
    assert_eq!(body["price"]["unit_amount"], 500);
    assert_eq!(body["price"]["quantity"], 2);
    assert_eq!(body["price"]["amount_total"], 1000);
    assert_eq!(body["price"]["currency"], "usd");

    let stored = app.stored_files();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored.iter().all(|k| k.starts_with("uploads/temp/")),
        "{stored:?}"
    );
    assert_eq!(app.count("SELECT count(*) FROM file_uploads").await, 2);

    let (status, again) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "open");
    assert_eq!(again["files"], body["files"]);
}

#[tokio::test]
async fn photos_can_be_added_to_and_removed_from_an_open_session() {
    let app = spawn_app().await;
    let first = app.upload_photos(1).await;
    let session = first["session_id"].as_str().unwrap();
    let response = app
        .upload(vec![("second.png", photos::photo(1))], Some(session))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["session_id"], session);
    assert_eq!(body["price"]["quantity"], 2);

    let file_id = body["files"][0]["id"].as_str().unwrap();
    let response = app
        .client
        .delete(app.url(&format!("/api/upload/{session}/files/{file_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["price"]["quantity"], 1);
    assert_eq!(body["price"]["amount_total"], 500);
    assert_eq!(app.stored_files().len(), 1);

    let response = app
        .client
        .delete(app.url(&format!("/api/upload/{session}/files/{file_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn unknown_sessions_are_not_found() {
    let app = spawn_app().await;
    let (status, body) = app
        .get_json("/api/upload/ups_0000000000000000000000000000abcd")
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = app.get_json("/api/upload/not-an-id").await;
    assert_eq!(status, 404);
    let response = app
        .upload(
            vec![("a.jpg", photos::photo(0))],
            Some("ups_0000000000000000000000000000abcd"),
        )
        .await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_gif_behind_a_jpg_name_is_refused() {
    let app = spawn_app().await;
    let (status, body) = refused(&app, vec![("holiday.jpg", photos::GIF.to_vec())]).await;
    assert_eq!(status, 415);
    assert_eq!(file_codes(&body), ["unsupported_type"]);
    assert_eq!(body["error"]["details"]["files"][0]["filename"], "holiday.jpg");
}

#[tokio::test]
async fn text_named_png_is_refused() {
    let app = spawn_app().await;
    let (status, body) = refused(
        &app,
        vec![("notes.png", b"just some words, not a photo".to_vec())],
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(file_codes(&body), ["unsupported_type"]);
}

#[tokio::test]
async fn a_truncated_jpeg_is_refused() {
    let app = spawn_app().await;
    let jpeg = photos::jpeg(400, 300);
    let cut = jpeg[..jpeg.len() / 2].to_vec();
    let (status, body) = refused(&app, vec![("cut.jpg", cut)]).await;
    assert_eq!(status, 422);
    assert_eq!(file_codes(&body), ["invalid_image"]);
}

#[tokio::test]
async fn an_empty_file_is_refused() {
    let app = spawn_app().await;
    let (status, body) = refused(&app, vec![("empty.jpg", Vec::new())]).await;
    assert_eq!(status, 422);
    assert_eq!(file_codes(&body), ["empty_file"]);
}

#[tokio::test]
async fn a_pixel_bomb_is_refused_before_decoding() {
    let app = spawn_app().await;
    let (status, body) = refused(&app, vec![("bomb.png", photos::pixel_bomb_png(30_000, 30_000))]).await;
    assert_eq!(status, 413);
    assert_eq!(file_codes(&body), ["image_too_large"]);
}

#[tokio::test]
async fn a_photo_too_small_to_restore_is_refused() {
    let app = spawn_app().await;
    let (status, body) = refused(&app, vec![("icon.png", photos::png(16, 16))]).await;
    assert_eq!(status, 422);
    assert_eq!(file_codes(&body), ["image_too_small"]);
}

#[tokio::test]
async fn a_file_over_the_size_limit_is_refused() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|s| s.uploads.max_file_bytes = 20_000)),
        ..Options::default()
    })
    .await;
    let big = photos::png(400, 400);
    assert!(big.len() > 20_000);
    let (status, body) = refused(&app, vec![("big.png", big)]).await;
    assert_eq!(status, 413);
    assert_eq!(file_codes(&body), ["file_too_large"]);
}

#[tokio::test]
async fn too_many_files_are_refused() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|s| s.uploads.max_files = 3)),
        ..Options::default()
    })
    .await;
    let files = (0..5).map(|i| ("p.jpg", photos::photo(i * 2))).collect();
    let (status, body) = refused(&app, files).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "too_many_files");
    assert_eq!(body["error"]["details"]["max_files"], 3);

    // The limit counts photos already in the session too.
    let first = app
        .upload(
            vec![("a.jpg", photos::photo(0)), ("b.jpg", photos::photo(2))],
            None,
        )
        .await;
    let session: Value = first.json().await.unwrap();
    let session = session["session_id"].as_str().unwrap();
    let more = app
        .upload(
            vec![("c.jpg", photos::photo(4)), ("d.jpg", photos::photo(6))],
            Some(session),
        )
        .await;
    assert_eq!(more.status(), 422);
    assert_eq!(app.count("SELECT count(*) FROM file_uploads").await, 2);
}

#[tokio::test]
async fn a_name_that_climbs_directories_is_refused() {
    let app = spawn_app().await;
    let (status, body) = refused(&app, vec![("../../etc/cron.d/evil.jpg", photos::photo(0))]).await;
    assert_eq!(status, 400);
    assert_eq!(file_codes(&body), ["invalid_filename"]);
}

#[tokio::test]
async fn odd_names_are_kept_for_display_but_never_used_as_paths() {
    let app = spawn_app().await;
    let response = app
        .upload(
            vec![(
                "C:\\scans\\<img src=x onerror=alert(1)>; rm -rf.jpg",
                photos::photo(0),
            )],
            None,
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["files"][0]["filename"],
        "<img src=x onerror=alert(1)>; rm -rf.jpg"
    );
    let stored = app.stored_files();
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)),
        "{stored:?}"
    );
}

#[tokio::test]
async fn a_mixed_batch_is_refused_whole_with_a_reason_per_file() {
    let app = spawn_app().await;
    let jpeg = photos::jpeg(300, 200);
    let files = vec![
        ("good-1.jpg", photos::photo(0)),
        ("fake.jpg", photos::GIF.to_vec()),
        ("good-2.png", photos::photo(1)),
        ("cut.jpg", jpeg[..jpeg.len() / 3].to_vec()),
        ("empty.png", Vec::new()),
    ];
    let (status, body) = refused(&app, files).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "invalid_files");
    let files = body["error"]["details"]["files"].as_array().unwrap();
    let named: Vec<_> = files
        .iter()
        .map(|f| (f["filename"].as_str().unwrap(), f["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        named,
        [
            ("fake.jpg", "unsupported_type"),
            ("cut.jpg", "invalid_image"),
            ("empty.png", "empty_file")
        ]
    );
    assert!(
        files
            .iter()
            .all(|f| f["message"].as_str().is_some_and(|m| !m.is_empty()))
    );
}

#[tokio::test]
async fn a_request_without_photos_is_refused() {
    let app = spawn_app().await;
    let form = reqwest::multipart::Form::new().text("note", "no photos here");
    let response = app
        .client
        .post(app.url("/api/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_files");
    let response = app
        .client
        .post(app.url("/api/upload"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_multipart");
    let response = app.client.put(app.url("/api/upload")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn orphaned_temp_files_are_swept_and_owned_ones_kept() {
    let app = spawn_app().await;
    app.upload_photos(1).await;
    let orphan = app.storage_dir.path().join("uploads/temp/deadbeef/orphan.jpg");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, photos::photo(0)).unwrap();
    let storage = restoreclick::storage::Storage::local(app.storage_dir.path()).unwrap();
    let future = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let removed = restoreclick::sweeper::sweep_orphans(&app.db, &storage, future)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(!orphan.exists());
    assert_eq!(app.stored_files().len(), 1, "the owned photo stays");
}
