//! Turning a queued email row into a message: the templates (HTML with a
//! plain-text alternative), links that carry the order token, and an RFC 5322
//! message built by lettre. Customer-provided text is escaped in HTML.

use lettre::message::{
    Mailbox, MultiPart,
    header::{ContentType, HeaderName, HeaderValue},
};
use minijinja::{Environment, context};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    config::Settings,
    domain::{IdKind, parse_id, token},
};

/// A rendered email, ready for any sender.
#[derive(Debug, Clone)]
pub struct Composed {
    pub id: Uuid,
    pub from: Mailbox,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub attachments: Vec<Attachment>,
    /// The whole RFC 5322 message.
    pub raw: Vec<u8>,
}

/// A file sent along (restored photos, when small enough).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("unknown email kind {0:?}")]
    UnknownKind(String),
    #[error("template error: {0}")]
    Template(#[from] minijinja::Error),
    #[error("bad address {0:?}")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("bad attachment type {0:?}")]
    AttachmentType(String),
}

const TEMPLATES: [(&str, &str); 11] = [
    ("base.html", include_str!("../../templates/email/base.html")),
    (
        "order_confirmation.txt",
        include_str!("../../templates/email/order_confirmation.txt"),
    ),
    (
        "order_confirmation.html",
        include_str!("../../templates/email/order_confirmation.html"),
    ),
    (
        "restoration_complete.txt",
        include_str!("../../templates/email/restoration_complete.txt"),
    ),
    (
        "restoration_complete.html",
        include_str!("../../templates/email/restoration_complete.html"),
    ),
    (
        "restoration_failed.txt",
        include_str!("../../templates/email/restoration_failed.txt"),
    ),
    (
        "restoration_failed.html",
        include_str!("../../templates/email/restoration_failed.html"),
    ),
    (
        "admin_alert.txt",
        include_str!("../../templates/email/admin_alert.txt"),
    ),
    (
        "admin_alert.html",
        include_str!("../../templates/email/admin_alert.html"),
    ),
    (
        "review_accepted.txt",
        include_str!("../../templates/email/review_accepted.txt"),
    ),
    (
        "review_accepted.html",
        include_str!("../../templates/email/review_accepted.html"),
    ),
];

/// The template set; `.html` templates escape what they print.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        // The sources are compiled in and checked by the tests.
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "email template does not compile");
        }
    }
    env
}

fn subject(kind: &str, payload: &Value) -> Result<String, ComposeError> {
    let order = payload["order_id"].as_str().unwrap_or_default();
    Ok(match kind {
        "order_confirmation" => format!("Your RestoreClick order {order} is confirmed"),
        "restoration_complete" => format!("Your restored photos are ready ({order})"),
        "restoration_failed" => format!("We could not restore your photos ({order})"),
        "admin_alert" => format!("[RestoreClick] {}", payload["reason"].as_str().unwrap_or("alert")),
        "review_accepted" if payload["action"] == "refund" => {
            format!("Your refund for a photo is on its way ({order})")
        }
        "review_accepted" => format!("We are restoring your photo again ({order})"),
        other => return Err(ComposeError::UnknownKind(other.to_owned())),
    })
}

/// Renders row `id` of `kind` to `to` from its payload, with attachments.
pub fn compose(
    env: &Environment<'static>,
    settings: &Settings,
    id: Uuid,
    kind: &str,
    to: &str,
    payload: &Value,
    attachments: Vec<Attachment>,
) -> Result<Composed, ComposeError> {
    let subject = subject(kind, payload)?;
    let order_url = payload["order_id"]
        .as_str()
        .and_then(|o| parse_id(IdKind::Order, o).map(|uuid| (o, uuid)))
        .map(|(order, uuid)| {
            let token = token::order_token(settings.app.secret_key.expose(), uuid);
            format!("{}/success?order_id={order}&token={token}", settings.public_url())
        });
    let money = |field: &str| {
        payload[field].as_i64().map(|minor| {
            let currency = payload["currency"].as_str().unwrap_or("usd").to_ascii_uppercase();
            format!("{}.{:02} {currency}", minor / 100, minor % 100)
        })
    };
    let amount = money("amount_total");
    let refund = money("refund_amount");
    let ctx = context! {
        order_id => payload["order_id"].as_str(),
        order_url => order_url,
        amount => amount,
        refund => refund,
        photos => payload["photos"].as_i64().unwrap_or(0),
        failed_photos => minijinja::Value::from(minijinja::value::Serde(payload.get("failed_photos").unwrap_or(&Value::Null))),
        reason => payload["reason"].as_str(),
        action => payload["action"].as_str(),
        filename => payload["filename"].as_str(),
        note => payload["note"].as_str(),
        details => minijinja::Value::from(minijinja::value::Serde(payload)),
    };
    let text = env.get_template(&format!("{kind}.txt"))?.render(&ctx)?;
    let html = env.get_template(&format!("{kind}.html"))?.render(&ctx)?;
    let from: Mailbox = settings
        .mail
        .from
        .parse()
        .map_err(|_| ComposeError::Address(settings.mail.from.clone()))?;
    let to_box: Mailbox = to.parse().map_err(|_| ComposeError::Address(to.to_owned()))?;
    let message = lettre::Message::builder()
        .from(from)
        .to(to_box)
        .subject(&subject)
        .message_id(Some(format!("<{}@restoreclick>", id.simple())))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-RestoreClick-Email-Id"),
            id.simple().to_string(),
        ))
        .multipart(body(&text, &html, &attachments)?)?;
    Ok(Composed {
        id,
        from: settings
            .mail
            .from
            .parse()
            .map_err(|_| ComposeError::Address(settings.mail.from.clone()))?,
        to: to.to_owned(),
        subject,
        text,
        html,
        attachments,
        raw: message.formatted(),
    })
}

/// Plain text and HTML as alternatives, in a mixed part with the attachments if any.
fn body(text: &str, html: &str, attachments: &[Attachment]) -> Result<MultiPart, ComposeError> {
    let alternative = MultiPart::alternative_plain_html(text.to_owned(), html.to_owned());
    if attachments.is_empty() {
        return Ok(alternative);
    }
    let mut mixed = MultiPart::mixed().multipart(alternative);
    for a in attachments {
        let content_type = ContentType::parse(&a.content_type)
            .map_err(|_| ComposeError::AttachmentType(a.content_type.clone()))?;
        mixed = mixed.singlepart(
            lettre::message::Attachment::new(a.filename.clone()).body(a.data.clone(), content_type),
        );
    }
    Ok(mixed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings::load_with_env(std::path::Path::new("/nonexistent"), &[]).unwrap()
    }

    #[test]
    fn every_kind_renders_both_alternatives() {
        let env = environment();
        let order = crate::domain::format_id(IdKind::Order, Uuid::now_v7());
        for kind in [
            "order_confirmation",
            "restoration_complete",
            "restoration_failed",
            "admin_alert",
            "review_accepted",
        ] {
            let payload = json!({"order_id": order, "photos": 2, "amount_total": 1000, "currency": "usd",
                                 "reason": "duplicate_payment", "failed_photos": [{"filename": "a.jpg"}]});
            let c = compose(
                &env,
                &settings(),
                Uuid::now_v7(),
                kind,
                "a@example.com",
                &payload,
                vec![],
            )
            .unwrap();
            let raw = String::from_utf8(c.raw).unwrap();
            assert!(raw.contains("multipart/alternative"), "{kind}");
            assert!(
                raw.find("text/plain").unwrap() < raw.find("text/html").unwrap(),
                "{kind}: plain first"
            );
            assert!(!c.text.is_empty() && c.html.contains("<"), "{kind}");
        }
    }

    /// A redo's email quotes the customer's note, escaped; a refund's names the amount.
    #[test]
    fn a_review_email_says_what_was_accepted() {
        let env = environment();
        let order = crate::domain::format_id(IdKind::Order, Uuid::now_v7());
        let render = |payload: Value| {
            compose(
                &env,
                &settings(),
                Uuid::now_v7(),
                "review_accepted",
                "a@example.com",
                &payload,
                vec![],
            )
            .unwrap()
        };
        let redo = render(
            json!({"order_id": order, "action": "redo", "filename": "gran.jpg",
                                 "note": "<b>her face</b> is too smooth"}),
        );
        assert!(redo.subject.contains("again"), "{}", redo.subject);
        assert!(redo.text.contains("gran.jpg") && redo.text.contains("too smooth"));
        assert!(redo.html.contains("&lt;b&gt;her face"), "{}", redo.html);
        let refund = render(
            json!({"order_id": order, "action": "refund", "filename": "gran.jpg",
                                   "refund_amount": 650, "currency": "usd"}),
        );
        assert!(refund.subject.contains("refund"), "{}", refund.subject);
        assert!(refund.text.contains("6.50 USD"), "{}", refund.text);
    }

    #[test]
    fn links_carry_the_order_token_and_customer_text_is_escaped() {
        let env = environment();
        let uuid = Uuid::now_v7();
        let order = crate::domain::format_id(IdKind::Order, uuid);
        let payload = json!({"order_id": order, "photos": 2,
                             "failed_photos": [{"filename": "<script>alert(1)</script>.jpg"}]});
        let s = settings();
        let c = compose(
            &env,
            &s,
            Uuid::now_v7(),
            "restoration_complete",
            "a@example.com",
            &payload,
            vec![],
        )
        .unwrap();
        let token = token::order_token(s.app.secret_key.expose(), uuid);
        assert!(
            c.text
                .contains(&format!("/success?order_id={order}&token={token}"))
        );
        assert!(!c.html.contains("<script>"));
        assert!(c.html.contains("&lt;script&gt;"));
        assert_eq!(c.subject, format!("Your restored photos are ready ({order})"));
    }
}
