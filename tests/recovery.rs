//! The real binary, killed at the worst moment and started again: nothing
//! paid for is lost and nothing is done twice. Also: SIGTERM exits cleanly.
#![cfg(feature = "failpoints")]

mod common;

use std::time::Duration;

use common::shop::{Shop, ShopConfig};
use nix::sys::signal::Signal;
use sqlx::PgPool;

async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

fn files_under(root: &std::path::Path, area: &str) -> usize {
    let dir = root.join(area);
    let mut n = 0;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test]
async fn killed_after_the_commit_and_before_the_move_the_move_completes_after_restart() {
    let database_url = common::fresh_database().await;
    let storage = tempfile::tempdir().unwrap();
    let mut shop = Shop::start(ShopConfig {
        failpoints: Some("webhook::after_commit=pause"),
        ..ShopConfig::serve(&database_url, storage.path())
    })
    .await;
    let db = PgPool::connect(&database_url).await.unwrap();
    let client = reqwest::Client::new();

    let (session, cs) = shop.open_checkout(2, Some("kill@example.com")).await;
    let (body, header) = Shop::signed(&common::completed_event(&cs, &session, 1000));

    // The delivery commits, then the process hangs at the fail point: kill it there.
    let pending = tokio::spawn({
        let (client, url, body, header) = (
            client.clone(),
            format!("{}/api/webhooks/stripe", shop.base),
            body.clone(),
            header.clone(),
        );
        async move {
            client
                .post(url)
                .header("stripe-signature", header)
                .body(body)
                .send()
                .await
        }
    });
    common::eventually(Duration::from_secs(10), "the order to be committed", || async {
        count(&db, "SELECT count(*) FROM orders").await == 1
    })
    .await;
    shop.signal(Signal::SIGKILL);
    shop.wait();
    assert!(pending.await.unwrap().is_err(), "the killed shop never answered");
    assert_eq!(
        count(&db, "SELECT count(*) FROM images WHERE status = 'pending'").await,
        2
    );
    assert_eq!(files_under(storage.path(), "uploads/temp"), 2);
    assert_eq!(files_under(storage.path(), "uploads/originals"), 0);

    // Started again, the shop finds the order in its rows and finishes the move.
    let mut shop = Shop::start(ShopConfig::serve(&database_url, storage.path())).await;
    common::eventually(Duration::from_secs(30), "the order to be restored", || async {
        count(&db, "SELECT count(*) FROM orders WHERE status = 'completed'").await == 1
    })
    .await;
    assert_eq!(files_under(storage.path(), "uploads/originals"), 2);
    assert_eq!(files_under(storage.path(), "uploads/temp"), 0);

    // Stripe retries the delivery that never got its 200: nothing is redone.
    let retry = client
        .post(format!("{}/api/webhooks/stripe", shop.base))
        .header(
            "stripe-signature",
            restoreclick::providers::payments::signature::sign(
                body.as_bytes(),
                common::WEBHOOK_SECRET,
                common::now(),
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(count(&db, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM email_queue WHERE kind = 'order_confirmation'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM email_queue WHERE kind = 'restoration_complete'"
        )
        .await,
        1
    );
    assert_eq!(files_under(storage.path(), "uploads/restored"), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM images").await, 2);

    // SIGTERM drains and exits 0.
    shop.signal(Signal::SIGTERM);
    let status = shop.wait();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

#[tokio::test]
async fn killed_between_storing_files_and_committing_rows_leaves_no_row_without_its_file() {
    let database_url = common::fresh_database().await;
    let storage = tempfile::tempdir().unwrap();
    let shop = Shop::start(ShopConfig {
        failpoints: Some("upload::after_store=pause"),
        ..ShopConfig::serve(&database_url, storage.path())
    })
    .await;
    let db = PgPool::connect(&database_url).await.unwrap();
    let form = reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(common::photos::photo(0)).file_name("a.jpg"),
    );
    let url = format!("{}/api/upload", shop.base);
    let pending = tokio::spawn(async move { reqwest::Client::new().post(url).multipart(form).send().await });
    common::eventually(Duration::from_secs(10), "the file to be stored", || async {
        files_under(storage.path(), "uploads/temp") == 1
    })
    .await;
    drop(shop);
    let _ = pending.await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM file_uploads").await,
        0,
        "no row without its file"
    );

    // The orphan is swept once it is older than any upload in flight.
    let store = restoreclick::storage::Storage::local(storage.path()).unwrap();
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert_eq!(
        restoreclick::sweeper::sweep_orphans(&db, &store, later)
            .await
            .unwrap(),
        1
    );
    assert_eq!(files_under(storage.path(), "uploads/temp"), 0);
}
