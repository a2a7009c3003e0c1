//! RestoreClick: a photo-restoration shop. Customers upload old photos, pay
//! per photo through Stripe Checkout, and get them back restored.
//!
//! The tree follows the architecture (DESIGN.md): `http` serves the API,
//! `shop` holds the workflows (payments into orders, refunds, outcomes),
//! `actors` drive live orders,
//! `db` holds every query, `storage` every object, `domain` the pure rules,
//! `providers` the third parties.

pub mod actors;
pub mod config;
pub mod db;
pub mod dedup;
pub mod domain;
pub mod http;
pub mod mail;
pub mod providers;
pub mod restoration;
pub mod retry;
pub mod shop;
pub mod startup;
pub mod storage;
pub mod sweeper;
pub mod telemetry;
pub mod validation;
pub mod zipstream;
