//! The database: the pool, migrations, and one module of queries per table group.
//!
//! SQL lives only here. State changes carry the expected old status in their
//! `WHERE`, so two writers racing for one transition cannot both win. Row
//! locks are `FOR NO KEY UPDATE`: they serialise writers of a row but let
//! other transactions insert rows that reference it (an `order_events`
//! entry, a `file_uploads` row), which `FOR UPDATE` would block and turn into
//! deadlocks.

pub mod alerts;
pub mod checkouts;
pub mod cleanup;
pub mod downloads;
pub mod emails;
pub mod events;
pub mod jobs;
pub mod leases;
pub mod monitor;
pub mod order_feed;
pub mod orders;
pub mod refunds;
pub mod reviews;
pub mod uploads;
pub mod webhooks;

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::config::DatabaseSettings;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens the pool; the first connection is made (and checked) at once.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(settings.url.expose())
        .await
}

/// Applies pending migrations (they take an advisory lock, so several
/// instances starting at once apply each migration once).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether `e` is a deadlock or serialisation failure: the transaction did
/// nothing and may simply be run again.
pub fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}
