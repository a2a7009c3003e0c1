//! The `sendgrid` sender: SendGrid's v3 `mail/send` (CONTRACTS.md).
//!
//! SendGrid has no idempotency key, so a retry after a timeout may send
//! twice: timeouts are generous, the queue row's id travels in
//! `custom_args` so a duplicate can be traced, and a row whose send was
//! acknowledged (202, `X-Message-Id` kept) is never sent again.

use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use super::{MailError, MailSender, Sent};
use crate::{config::SendgridSettings, mail::Composed};

pub struct SendGrid {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl SendGrid {
    pub fn new(settings: &SendgridSettings) -> Result<Self, MailError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| MailError {
                permanent: true,
                message: e.to_string(),
                retry_after: None,
                throttled: false,
            })?;
        Ok(Self {
            http,
            url: format!("{}/v3/mail/send", settings.api_base.trim_end_matches('/')),
            key: settings.api_key.expose().to_owned(),
        })
    }

    /// The request body: plain text before HTML, the row id in `custom_args`.
    pub fn body(email: &Composed) -> Value {
        let mut body = json!({
            "personalizations": [{"to": [{"email": email.to}]}],
            "from": {"email": email.from.email.to_string()},
            "subject": email.subject,
            "content": [
                {"type": "text/plain", "value": email.text},
                {"type": "text/html", "value": email.html},
            ],
            "custom_args": {"email_id": email.id.simple().to_string()},
        });
        if let Some(name) = &email.from.name {
            body["from"]["name"] = json!(name);
        }
        if !email.attachments.is_empty() {
            let engine = base64::engine::general_purpose::STANDARD;
            body["attachments"] = email
                .attachments
                .iter()
                .map(|a| {
                    json!({"content": engine.encode(&a.data), "filename": a.filename,
                           "type": a.content_type, "disposition": "attachment"})
                })
                .collect();
        }
        body
    }
}

/// How long SendGrid asked to wait: until `X-RateLimit-Reset` (unix
/// seconds), or `Retry-After`.
fn wait_asked(headers: &header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
    if let Some(reset) = number("x-ratelimit-reset") {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        return Some(Duration::from_secs((reset - now).clamp(1, 3600) as u64));
    }
    number("retry-after").map(|s| Duration::from_secs(s.clamp(1, 3600) as u64))
}

impl MailSender for SendGrid {
    fn name(&self) -> &'static str {
        "sendgrid"
    }

    fn send<'a>(&'a self, email: &'a Composed) -> BoxFuture<'a, Result<Sent, MailError>> {
        Box::pin(async move {
            let response = self
                .http
                .post(&self.url)
                .bearer_auth(&self.key)
                .json(&Self::body(email))
                .send()
                .await
                .map_err(|e| MailError {
                    permanent: false,
                    message: format!("SendGrid unreachable: {e}"),
                    retry_after: None,
                    throttled: false,
                })?;
            let status = response.status();
            if status.is_success() {
                let id = response
                    .headers()
                    .get("x-message-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                return Ok(Sent {
                    provider_message_id: id,
                });
            }
            let retry_after = wait_asked(response.headers());
            let detail: Value = response.json().await.unwrap_or(Value::Null);
            let reason = detail["errors"][0]["message"]
                .as_str()
                .unwrap_or("no detail")
                .to_owned();
            let transient = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            Err(MailError {
                permanent: !transient,
                message: format!("SendGrid answered {status}: {reason}"),
                retry_after: if transient { retry_after } else { None },
                throttled: status == StatusCode::TOO_MANY_REQUESTS,
            })
        })
    }
}
