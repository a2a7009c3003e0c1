//! The storage module against both back ends it runs on: a local directory,
//! and a real S3-compatible server on loopback (moto), so the production path
//! is exercised rather than assumed.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use restoreclick::{
    config::Secret,
    storage::{Storage, StorageError, keys},
};
use uuid::Uuid;

/// moto's S3 server on a free port, stopped on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto[server] (scripts/services --s3 installs it)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        common::eventually(Duration::from_secs(30), "moto to listen", || {
            let (client, url) = (client.clone(), endpoint.clone());
            async move { client.get(url).send().await.is_ok() }
        })
        .await;
        Self { child, endpoint }
    }

    async fn bucket(&self) -> String {
        let name = format!("photos-{}", Uuid::new_v4().simple());
        let created = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("create bucket");
        assert!(
            created.status().is_success(),
            "bucket creation: {}",
            created.status()
        );
        name
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn s3_storage(moto: &Moto) -> Storage {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::test_settings(dir.path()).await;
    settings.storage.url = format!("s3://{}/shop", moto.bucket().await);
    settings.storage.endpoint = moto.endpoint.clone();
    settings.storage.allow_http = true;
    settings.storage.access_key_id = "testing".into();
    settings.storage.secret_access_key = Secret::new("testing");
    settings.storage.region = "us-east-1".into();
    Storage::open(&settings).expect("S3 storage opens")
}

/// The behaviour every back end must share.
async fn exercise(storage: &Storage) {
    let session = Uuid::now_v7();
    let order = Uuid::now_v7();
    let temp = keys::temp(session, Uuid::now_v7(), "jpg");
    let original = keys::original(order, 1, "grandma", "jpg");
    let photo = Bytes::from(common::photos::photo(0));

    storage.put(&temp, photo.clone()).await.unwrap();
    assert_eq!(storage.get(&temp).await.unwrap(), photo);
    assert_eq!(storage.size(&temp).await.unwrap(), Some(photo.len() as u64));
    assert_eq!(storage.size("uploads/temp/nothing-here").await.unwrap(), None);
    assert!(matches!(
        storage.get("uploads/temp/nothing-here").await,
        Err(StorageError::NotFound(_))
    ));

    // A move (a rename, or copy-then-delete on S3) repeated after it finished succeeds.
    let size = photo.len() as u64;
    storage.move_object(&temp, &original, size).await.unwrap();
    assert_eq!(storage.get(&original).await.unwrap(), photo);
    assert_eq!(storage.size(&temp).await.unwrap(), None);
    storage.move_object(&temp, &original, size).await.unwrap();
    // A crash between copy and delete leaves both: the repeat completes the move.
    storage.put(&temp, photo.clone()).await.unwrap();
    storage.move_object(&temp, &original, size).await.unwrap();
    assert_eq!(storage.size(&temp).await.unwrap(), None);
    // Neither source nor destination: the photo is lost, and that is an error.
    let lost = storage
        .move_object("uploads/temp/x/y.jpg", "uploads/originals/x/y.jpg", 1)
        .await;
    assert!(matches!(lost, Err(StorageError::NotFound(_))));

    let listed = storage.list("uploads/originals").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, original);
    assert_eq!(listed[0].size, photo.len() as u64);

    storage
        .put(&keys::temp(session, Uuid::now_v7(), "png"), photo.clone())
        .await
        .unwrap();
    storage
        .put(&keys::temp(session, Uuid::now_v7(), "png"), photo.clone())
        .await
        .unwrap();
    assert_eq!(
        storage
            .delete_prefix(&keys::temp_session_prefix(session))
            .await
            .unwrap(),
        2
    );
    assert!(storage.list("uploads/temp").await.unwrap().is_empty());

    storage.delete(&original).await.unwrap();
    storage.delete(&original).await.unwrap();
    storage.ping().await.unwrap();
}

#[tokio::test]
async fn local_directory_storage_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    exercise(&storage).await;
}

#[tokio::test]
async fn s3_storage_keeps_the_contract() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let moto = Moto::start().await;
    let storage = s3_storage(&moto).await;
    exercise(&storage).await;
}

#[tokio::test]
async fn the_shop_runs_its_whole_paid_path_on_s3() {
    let moto = Moto::start().await;
    let bucket = moto.bucket().await;
    let endpoint = moto.endpoint.clone();
    let app = common::spawn_app_with(common::Options {
        tweak: Some(Box::new(move |s| {
            s.storage.url = format!("s3://{bucket}");
            s.storage.endpoint = endpoint;
            s.storage.allow_http = true;
            s.storage.access_key_id = "testing".into();
            s.storage.secret_access_key = Secret::new("testing");
        })),
        ..Default::default()
    })
    .await;
    let (order, token) = app.paid_order(2).await;
    common::eventually(Duration::from_secs(30), "the order restored on S3", || async {
        app.count("SELECT count(*) FROM images WHERE status = 'completed\'")
            .await
            == 2
    })
    .await;
    let (status, body) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(status, 200);
    let url = body["images"][0]["original_url"].as_str().unwrap();
    let photo = app
        .client
        .get(app.url(url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(photo.status(), 200);
    assert_eq!(
        photo.bytes().await.unwrap().as_ref(),
        common::photos::photo(0).as_slice()
    );
    let restored = body["images"][0]["restored_url"].as_str().unwrap();
    let (status, _) = app.get_json(&format!("{restored}?token={token}")).await;
    assert_eq!(status, 200);
}
