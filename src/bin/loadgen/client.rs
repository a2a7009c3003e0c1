//! The shop as a customer and as Stripe reach it: uploads, checkouts, signed
//! payment events, order views and downloads, over HTTP.

use std::io::Cursor;

use anyhow::{Context, bail};
use bytes::Bytes;
use image::{DynamicImage, ImageFormat, RgbImage};
use restoreclick::providers::payments::signature;
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

/// An upload session with a started checkout, ready to be paid.
#[derive(Debug, Clone)]
pub struct Unpaid {
    pub session_id: String,
    pub checkout_id: String,
    pub amount: i64,
}

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(512)
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /api/upload` of `files` (name, bytes); returns the session view.
    pub async fn upload(&self, files: &[(String, Bytes)], session_id: Option<&str>) -> anyhow::Result<Value> {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes) in files {
            form = form.part(
                "files",
                reqwest::multipart::Part::stream_with_length(bytes.clone(), bytes.len() as u64)
                    .file_name(name.clone()),
            );
        }
        if let Some(id) = session_id {
            form = form.text("session_id", id.to_owned());
        }
        let r = self
            .http
            .post(self.url("/api/upload"))
            .multipart(form)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await.context("upload answer")?;
        if status != 201 {
            bail!("upload answered {status}: {body}");
        }
        Ok(body)
    }

    /// Uploads `photos` copies of `photo` in one session and opens its checkout.
    pub async fn unpaid(&self, photo: &Bytes, photos: usize) -> anyhow::Result<Unpaid> {
        let files: Vec<_> = (0..photos)
            .map(|i| (format!("photo-{i}.jpg"), photo.clone()))
            .collect();
        let view = self.upload(&files, None).await?;
        let session_id = view["session_id"].as_str().context("session id")?.to_owned();
        let amount = view["price"]["amount_total"].as_i64().unwrap_or(0);
        let r = self
            .http
            .post(self.url("/api/checkout"))
            .json(&json!({"session_id": session_id, "email": customer_email(&session_id)}))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await.context("checkout answer")?;
        if status != 200 {
            bail!("checkout answered {status}: {body}");
        }
        Ok(Unpaid {
            session_id,
            checkout_id: body["checkout_session_id"]
                .as_str()
                .context("checkout id")?
                .to_owned(),
            amount,
        })
    }

    /// Sends the `checkout.session.completed` Stripe would, signed now.
    pub async fn pay(&self, unpaid: &Unpaid, secret: &str) -> anyhow::Result<()> {
        let body = completed_event(unpaid).to_string();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let header = signature::sign(body.as_bytes(), secret, now);
        let r = self
            .http
            .post(self.url("/api/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "webhook answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The order and its token once the checkout is paid.
    pub async fn order_of(&self, checkout_id: &str) -> anyhow::Result<(String, String)> {
        let body: Value = self
            .http
            .get(self.url(&format!("/api/checkout/{checkout_id}")))
            .send()
            .await?
            .json()
            .await?;
        match (body["order_id"].as_str(), body["order_token"].as_str()) {
            (Some(order), Some(token)) => Ok((order.to_owned(), token.to_owned())),
            _ => bail!("checkout {checkout_id} has no order: {body}"),
        }
    }

    pub async fn order(&self, order: &str, token: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(self.url(&format!("/api/orders/{order}")))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?)
    }

    /// A fresh download link of `max` uses; returns its path.
    pub async fn link(&self, order: &str, token: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(self.url(&format!("/api/orders/{order}/download-links")))
            .bearer_auth(token)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if status != 201 {
            bail!("download link answered {status}: {body}");
        }
        Ok(body["url"].as_str().context("link url")?.to_owned())
    }

    /// Downloads `path` to the end; returns the bytes received.
    pub async fn drain(&self, path: &str) -> anyhow::Result<u64> {
        use futures::StreamExt;
        let r = self.http.get(self.url(path)).send().await?;
        if !r.status().is_success() {
            bail!("GET {path} answered {}", r.status());
        }
        let mut stream = r.bytes_stream();
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            total += chunk?.len() as u64;
        }
        Ok(total)
    }

    pub async fn get_text(&self, url: &str) -> anyhow::Result<String> {
        Ok(self.http.get(url).send().await?.text().await?)
    }

    pub fn raw(&self) -> &reqwest::Client {
        &self.http
    }
}

/// A distinct customer per session, as a real storm of buyers has.
fn customer_email(session_id: &str) -> String {
    format!("load+{}@example.com", session_id.trim_start_matches("ups_"))
}

pub fn completed_event(unpaid: &Unpaid) -> Value {
    let suffix = unpaid.checkout_id.trim_start_matches("cs_");
    json!({
        "id": format!("evt_load_{suffix}"),
        "object": "event",
        "type": "checkout.session.completed",
        "created": time::OffsetDateTime::now_utc().unix_timestamp(),
        "livemode": false,
        "data": {"object": {
            "id": unpaid.checkout_id,
            "object": "checkout.session",
            "client_reference_id": unpaid.session_id,
            "metadata": {"upload_session_id": unpaid.session_id},
            "payment_status": "paid",
            "payment_intent": format!("pi_load_{suffix}"),
            "amount_total": unpaid.amount,
            "currency": "usd",
            "customer_details": {"email": customer_email(&unpaid.session_id)},
        }}
    })
}

/// A photo-like picture of about `megapixels`, encoded as `format`.
pub fn photo(megapixels: f64, format: ImageFormat, seed: u32) -> Bytes {
    let width = ((megapixels * 1e6 * 4.0 / 3.0).sqrt()) as u32;
    let height = (width * 3 / 4).max(64);
    let img = RgbImage::from_fn(width.max(64), height, |x, y| {
        let v = ((x / 3 + y / 5 + seed) % 200) as u8;
        image::Rgb([v.wrapping_add((x % 17) as u8), v, v.wrapping_sub((y % 13) as u8)])
    });
    let mut out = Cursor::new(Vec::new());
    // Writing to memory cannot fail for these formats.
    let _ = DynamicImage::ImageRgb8(img).write_to(&mut out, format);
    Bytes::from(out.into_inner())
}
