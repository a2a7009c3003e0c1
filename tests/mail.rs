//! The Mailer drains the email queue into the outbox: real RFC 5322
//! messages, one per row, with both alternatives and working links.

mod common;

use std::time::Duration;

use common::{eventually, spawn_app, wait_for_order};
use mailparse::MailHeaderMap;

const LONG: Duration = Duration::from_secs(30);

/// Queues an admin alert to `to` straight into the queue.
async fn queue_alert(app: &common::TestApp, key: &str, to: &str) {
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

fn parts_of<'a>(mail: &'a mailparse::ParsedMail<'a>) -> (&'a mailparse::ParsedMail<'a>, Vec<String>) {
    (
        mail,
        mail.subparts.iter().map(|p| p.ctype.mimetype.clone()).collect(),
    )
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
        let mail = mailparse::parse_mail(raw.as_bytes()).expect("the outbox holds RFC 5322 messages");
        // The completion email carries the photos: the alternatives sit inside a mixed part.
        let alternative = if mail.ctype.mimetype == "multipart/mixed" {
            let attached: Vec<_> = mail.subparts[1..]
                .iter()
                .map(|p| p.ctype.mimetype.clone())
                .collect();
            assert_eq!(
                attached,
                ["image/jpeg", "image/png"],
                "the restored photos are attached"
            );
            &mail.subparts[0]
        } else {
            &mail
        };
        let (_, types) = parts_of(alternative);
        assert_eq!(alternative.ctype.mimetype, "multipart/alternative");
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
        let text = alternative.subparts[0].get_body().unwrap();
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
        queue_alert(&app, key, to).await;
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

mod sendgrid {
    use super::*;
    use serde_json::Value;
    use wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{header, method, path},
    };

    async fn shop_with(server: &MockServer, attach_limit: u64) -> common::TestApp {
        let uri = server.uri();
        common::spawn_app_with(common::Options {
            tweak: Some(Box::new(move |s| {
                s.mail.provider = Some(restoreclick::config::MailProvider::Sendgrid);
                s.sendgrid.api_key = restoreclick::config::Secret::new("SG.test");
                s.sendgrid.api_base = uri;
                s.mail.backoff_base = Duration::from_millis(50);
                s.mail.attach_limit = attach_limit;
            })),
            ..Default::default()
        })
        .await
    }

    fn accepted() -> ResponseTemplate {
        ResponseTemplate::new(202).insert_header("x-message-id", "sg-message-1")
    }

    #[tokio::test]
    async fn sendgrid_gets_both_alternatives_the_row_id_and_the_photos() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/mail/send"))
            .and(header("authorization", "Bearer SG.test"))
            .respond_with(accepted())
            .mount(&server)
            .await;
        let app = shop_with(&server, 10 << 20).await;
        let (order, token) = app.paid_order(2).await;
        wait_for_order(&app, &order, &token, &["completed"], LONG).await;
        eventually(LONG, "both emails sent", || async {
            app.count("SELECT count(*) FROM email_queue WHERE status = 'sent' AND provider_message_id = 'sg-message-1'")
                .await
                == 2
        })
        .await;
        let bodies: Vec<Value> = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        assert_eq!(bodies.len(), 2);
        for body in &bodies {
            assert_eq!(body["content"][0]["type"], "text/plain");
            assert_eq!(body["content"][1]["type"], "text/html");
            assert_eq!(body["personalizations"][0]["to"][0]["email"], "Buyer@Example.com");
            assert_eq!(body["from"]["email"], "orders@localhost");
            assert_eq!(body["custom_args"]["email_id"].as_str().unwrap().len(), 32);
        }
        let with_photos = bodies
            .iter()
            .find(|b| b["attachments"].is_array())
            .expect("the completion email");
        assert_eq!(with_photos["attachments"].as_array().unwrap().len(), 2);
        assert_eq!(
            with_photos["attachments"][0]["filename"],
            "001_photo_restored.jpg"
        );
    }

    #[tokio::test]
    async fn photos_over_the_attachment_limit_are_linked_not_attached() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/mail/send"))
            .respond_with(accepted())
            .mount(&server)
            .await;
        let app = shop_with(&server, 10).await;
        let (order, token) = app.paid_order(1).await;
        wait_for_order(&app, &order, &token, &["completed"], LONG).await;
        eventually(LONG, "both emails sent", || async {
            app.count("SELECT count(*) FROM email_queue WHERE status = 'sent'")
                .await
                == 2
        })
        .await;
        let requests = server.received_requests().await.unwrap();
        assert!(
            requests
                .iter()
                .all(|r| !serde_json::from_slice::<Value>(&r.body).unwrap()["attachments"].is_array())
        );
    }

    #[tokio::test]
    async fn throttling_and_outages_are_retried_and_refusals_are_not() {
        let server = MockServer::start().await;
        let reset = (common::now() + 1).to_string();
        Mock::given(method("POST"))
            .and(path("/v3/mail/send"))
            .respond_with(ResponseTemplate::new(429).insert_header("x-ratelimit-reset", reset.as_str()))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v3/mail/send"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .with_priority(2)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v3/mail/send"))
            .respond_with(accepted())
            .with_priority(3)
            .mount(&server)
            .await;
        let app = shop_with(&server, 10 << 20).await;
        let started = std::time::Instant::now();
        queue_alert(&app, "alert-1", "ops@example.com").await;
        // The 429 turned it away unsent and spent no attempt; the 503 did.
        eventually(LONG, "the email sent after two refusals", || async {
            app.count("SELECT count(*) FROM email_queue WHERE status = 'sent' AND attempts = 2")
                .await
                == 1
        })
        .await;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "X-RateLimit-Reset was honoured"
        );
    }

    #[tokio::test]
    async fn a_refused_email_fails_at_once_with_the_reason() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/mail/send"))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!(
                {"errors": [{"message": "The from address does not match a verified Sender Identity", "field": "from"}]}
            )))
            .mount(&server)
            .await;
        let app = shop_with(&server, 10 << 20).await;
        queue_alert(&app, "alert-2", "ops@example.com").await;
        eventually(LONG, "the email failed", || async {
            app.count("SELECT count(*) FROM email_queue WHERE status = 'failed' AND attempts = 1 AND last_error LIKE '%Sender Identity%'")
                .await
                == 1
        })
        .await;
    }
}

mod smtp {
    use super::*;

    /// aiosmtpd on a free port, delivering into a maildir; stopped on drop.
    struct SmtpCatcher {
        child: std::process::Child,
        port: u16,
        maildir: tempfile::TempDir,
    }

    impl SmtpCatcher {
        async fn start() -> Self {
            let port = common::shop::free_port();
            let maildir = tempfile::tempdir().unwrap();
            let child = std::process::Command::new("python3")
                .args([
                    "-m",
                    "aiosmtpd",
                    "-n",
                    "-l",
                    &format!("127.0.0.1:{port}"),
                    "-c",
                    "aiosmtpd.handlers.Mailbox",
                ])
                .arg(maildir.path().join("box"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("python3 with aiosmtpd (scripts/services --s3 installs it)");
            eventually(LONG, "the SMTP catcher to listen", || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            })
            .await;
            Self { child, port, maildir }
        }

        fn delivered(&self) -> Vec<String> {
            std::fs::read_dir(self.maildir.path().join("box/new"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        }
    }

    impl Drop for SmtpCatcher {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn smtp_delivers_the_same_message_the_outbox_would_write() {
        let catcher = SmtpCatcher::start().await;
        let port = catcher.port;
        let app = common::spawn_app_with(common::Options {
            tweak: Some(Box::new(move |s| {
                s.mail.provider = Some(restoreclick::config::MailProvider::Smtp);
                s.smtp.url = restoreclick::config::Secret::new(format!("smtp://127.0.0.1:{port}"));
            })),
            ..Default::default()
        })
        .await;
        let (order, token) = app.paid_order(1).await;
        wait_for_order(&app, &order, &token, &["completed"], LONG).await;
        eventually(LONG, "both emails sent over SMTP", || async {
            app.count("SELECT count(*) FROM email_queue WHERE status = 'sent'")
                .await
                == 2
        })
        .await;
        let delivered = catcher.delivered();
        assert_eq!(delivered.len(), 2);
        let subjects: Vec<String> = delivered
            .iter()
            .map(|raw| {
                mailparse::parse_mail(raw.as_bytes())
                    .unwrap()
                    .headers
                    .get_first_value("Subject")
                    .unwrap()
            })
            .collect();
        assert!(
            subjects.contains(&format!("Your RestoreClick order {order} is confirmed")),
            "{subjects:?}"
        );
    }
}
