//! `GET /api/pricing`: what a photo costs, the options beside its repair,
//! and what the shop accepts, so the upload page can say so before anything
//! is uploaded.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;

use super::AppState;
use crate::shop::options;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/pricing", get(show))
}

#[derive(Debug, Serialize)]
pub(crate) struct Pricing {
    unit_amount: i64,
    currency: String,
    product_name: String,
    max_files: usize,
    max_file_bytes: u64,
    max_pixels: u64,
    accepted_types: Vec<String>,
    /// The options beside the repair, in the order their steps run.
    options: Vec<PricedOption>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PricedOption {
    id: &'static str,
    label: String,
    description: String,
    /// Minor units per photo, beside the repair's `unit_amount`.
    unit_amount: i64,
    /// Whether it can be bought here now.
    available: bool,
}

#[utoipa::path(get, path = "/api/pricing", tag = "uploads", responses((status = 200, description = "the price per photo (minor units), the options beside the repair (id, label, description, unit_amount, available) and the upload limits")))]
pub(crate) async fn show(State(state): State<AppState>) -> Json<Pricing> {
    let (pricing, uploads) = (&state.settings.pricing, &state.settings.uploads);
    Json(Pricing {
        unit_amount: pricing.unit_amount,
        currency: pricing.currency.clone(),
        product_name: pricing.product_name.clone(),
        max_files: uploads.max_files,
        max_file_bytes: uploads.max_file_bytes,
        max_pixels: uploads.max_pixels,
        accepted_types: uploads.allowed_types.clone(),
        options: options::catalogue(&state.settings)
            .into_iter()
            .map(|o| PricedOption {
                id: o.option.as_str(),
                label: o.label,
                description: o.description,
                unit_amount: o.unit_amount,
                available: o.available,
            })
            .collect(),
    })
}
