//! The Mailer drains the email queue into the outbox: real RFC 5322
//! messages, one per row, with both alternatives and working links.

mod common;

use std::time::Duration;

use common::{eventually, spawn_app, wait_for_order};
use mailparse::MailHeaderMap;

const LONG: Duration = Duration::from_secs(30);

fn parts(raw: &str) -> (mailparse::ParsedMail<'_>, Vec<String>) {
    let mail = mailparse::parse_mail(raw.as_bytes()).expect("the outbox holds RFC 5322 messages");
    let types = mail.subparts.iter().map(|p| p.ctype.mimetype.clone()).collect();
    (mail, types)
}

#[tokio::test]
async fn a_paid_order_mails_its_confirmation_and_then_its_photos() {
    let app = spawn_app().await;
    let (order, token) = app.paid_order(2).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    eventually(LONG, "both emails sent", || async {
        app.count("SELECT count(*) FROM email_queue WHERE status = 'sent'")
            .await
            == 2
    })
    .await;
    let mails = app.outbox();
    assert_eq!(mails.len(), 2, "one file per email row");
    let mut subjects = Vec::new();
    for raw in &mails {
        let (mail, types) = parts(raw);
        assert_eq!(mail.ctype.mimetype, "multipart/alternative");
        assert_eq!(types, ["text/plain", "text/html"], "plain text first");
        assert_eq!(
            mail.headers.get_first_value("To").as_deref(),
            Some("Buyer@Example.com")
        );
        assert!(
            mail.headers
                .get_first_value("From")
                .unwrap()
                .contains("orders@localhost")
        );
        assert!(mail.headers.get_first_value("Message-ID").is_some());
        let text = mail.subparts[0].get_body().unwrap();
        assert!(
            text.contains(&format!("/success?order_id={order}&token={token}")),
            "{text}"
        );
        subjects.push(mail.headers.get_first_value("Subject").unwrap());
    }
    subjects.sort();
    assert_eq!(
        subjects,
        [
            format!("Your RestoreClick order {order} is confirmed"),
            format!("Your restored photos are ready ({order})")
        ]
    );
    assert_eq!(
        app.count("SELECT count(*) FROM email_queue WHERE provider_message_id LIKE '%.eml'")
            .await,
        2
    );
}

#[tokio::test]
async fn an_undeliverable_address_fails_for_good_and_others_still_go() {
    let app = spawn_app().await;
    for (key, to) in [("bad", "not an address"), ("good", "ops@example.com")] {
        sqlx::query(
            "INSERT INTO email_queue (id, idempotency_key, kind, to_email, payload, max_attempts)
             VALUES ($1, $2, 'admin_alert', $3, '{\"reason\": \"test\"}', 5)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(key)
        .bind(to)
        .execute(&app.db)
        .await
        .unwrap();
    }
    eventually(LONG, "both rows settled", || async {
        app.count("SELECT count(*) FROM email_queue WHERE status IN ('sent', 'failed')")
            .await
            == 2
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM email_queue WHERE idempotency_key = 'bad' AND status = 'failed' AND attempts = 1").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM email_queue WHERE idempotency_key = 'good' AND status = 'sent'")
            .await,
        1
    );
    assert_eq!(app.outbox().len(), 1);
}

#[tokio::test]
async fn a_row_whose_sender_died_mid_send_is_sent_once_when_its_lease_runs_out() {
    let app = spawn_app().await;
    sqlx::query(
        "INSERT INTO email_queue (id, idempotency_key, kind, to_email, payload, max_attempts, status, attempts,
                                  locked_by, lease_until)
         VALUES ($1, 'orphan', 'admin_alert', 'ops@example.com', '{\"reason\": \"test\"}', 5, 'sending', 1,
                 'a-dead-instance', now() - interval '1 second')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&app.db)
    .await
    .unwrap();
    eventually(LONG, "the orphan sent", || async {
        app.count("SELECT count(*) FROM email_queue WHERE status = 'sent' AND attempts = 2")
            .await
            == 1
    })
    .await;
    assert_eq!(app.outbox().len(), 1);
}
