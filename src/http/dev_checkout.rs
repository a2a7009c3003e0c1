//! The dev checkout page (`payments.provider = dev`, never in production).
//!
//! Pay and Cancel are plain HTML forms. Each sends the shop's own webhook the
//! event Stripe would send (`checkout.session.completed` or `…expired`),
//! signed with the webhook secret, over HTTP: fulfilment cannot tell the two
//! apart. Then the customer is sent on as Stripe would send them.

use axum::{
    Form, Router,
    extract::{Path, State, rejection::FormRejection},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use time::OffsetDateTime;

use super::AppState;
use crate::{
    db::{self, checkouts::CheckoutRow},
    domain::{CheckoutStatus, IdKind, format_id},
    providers::payments::dev::{DevCheckout, checkout_event, deliver},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dev/checkout/{checkout_id}", get(page))
        .route("/dev/checkout/{checkout_id}/pay", post(pay))
        .route("/dev/checkout/{checkout_id}/cancel", post(cancel))
}

#[derive(Debug, Default, Deserialize)]
struct PayForm {
    #[serde(default)]
    email: Option<String>,
}

async fn load(state: &AppState, id: &str) -> Result<CheckoutRow, Response> {
    match db::checkouts::get(&state.db, id).await {
        Ok(Some(row)) if row.provider == "dev" => Ok(row),
        Ok(_) => Err(message(
            StatusCode::NOT_FOUND,
            "Checkout not found",
            "This checkout does not exist.",
        )),
        Err(e) => {
            tracing::error!(error = %e, "cannot load a dev checkout");
            Err(message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The shop cannot reach its database.",
            ))
        }
    }
}

async fn page(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let row = match load(&state, &id).await {
        Ok(row) => row,
        Err(response) => return response,
    };
    let amount = format_amount(row.amount_total, &row.currency);
    let id_html = escape(&row.id);
    let body = if row.status() == CheckoutStatus::Open {
        format!(
            r#"<p>{quantity} photo restoration{plural}: <strong>{amount}</strong></p>
<form method="post" action="/dev/checkout/{id_html}/pay">
  <label for="email">Email for your receipt and your photos</label>
  <input id="email" name="email" type="email" value="{email}" autocomplete="email">
  <button type="submit">Pay {amount}</button>
</form>
<form method="post" action="/dev/checkout/{id_html}/cancel">
  <button type="submit" class="secondary">Cancel</button>
</form>
<p class="note">Development checkout: no card is charged. Paying sends the shop the same signed event Stripe would.</p>"#,
            quantity = row.quantity,
            plural = if row.quantity == 1 { "" } else { "s" },
            email = escape(row.email.as_deref().unwrap_or("")),
        )
    } else {
        format!(
            r#"<p>This checkout is {status}.</p><p><a href="/success?session_id={id_html}">See the order</a></p>"#,
            status = row.status().api_status()
        )
    };
    Html(layout("Dev checkout", &body)).into_response()
}

async fn pay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Result<Form<PayForm>, FormRejection>,
) -> Response {
    // A form without fields (or none at all) simply pays with the email on file.
    let email = form
        .ok()
        .and_then(|Form(f)| f.email)
        .filter(|e| !e.trim().is_empty());
    send(state, id, true, email).await
}

async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    send(state, id, false, None).await
}

async fn send(state: AppState, id: String, paid: bool, email: Option<String>) -> Response {
    let row = match load(&state, &id).await {
        Ok(row) => row,
        Err(response) => return response,
    };
    let public = state.settings.public_url();
    let upload_ref = row
        .upload_session_id
        .map(|id| format_id(IdKind::UploadSession, id))
        .unwrap_or_default();
    if row.status() == CheckoutStatus::Open {
        let checkout = DevCheckout {
            id: row.id.clone(),
            upload_session_ref: upload_ref.clone(),
            amount_total: row.amount_total,
            currency: row.currency.clone(),
            email: email.or(row.email.clone()),
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let event = checkout_event(&checkout, paid, now);
        let secret = state.settings.stripe_webhook_secret();
        if let Err(e) = deliver(&state.http, &state.self_url, secret.expose(), &event).await {
            tracing::error!(error = %e, "the dev checkout's event was not recorded");
            return message(
                StatusCode::BAD_GATEWAY,
                "Payment not recorded",
                "The shop could not record the payment; please try again.",
            );
        }
    }
    let to = if paid {
        format!("{public}/success?session_id={}", row.id)
    } else {
        format!("{public}/?session_id={upload_ref}&checkout=cancelled")
    };
    Redirect::to(&to).into_response()
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    (status, Html(layout(title, &format!("<p>{}</p>", escape(text))))).into_response()
}

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} · RestoreClick</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a}}
label,input{{display:block;width:100%;margin:.25rem 0 1rem}}input{{padding:.5rem;font:inherit}}
button{{font:inherit;padding:.6rem 1.2rem;margin:.25rem 0;background:#1d4ed8;color:#fff;border:0;border-radius:.3rem;cursor:pointer}}
button.secondary{{background:#e5e7eb;color:#1a1a1a}}.note{{color:#555;font-size:.9rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"#,
        title = escape(title)
    )
}

fn format_amount(minor: i64, currency: &str) -> String {
    format!(
        "{}.{:02} {}",
        minor / 100,
        minor % 100,
        currency.to_ascii_uppercase()
    )
}

/// Escapes text for HTML bodies and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
