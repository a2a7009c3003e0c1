//! The database: the pool, migrations, and one module of queries per table group.
//!
//! SQL lives only here. State changes carry the expected old status in their
//! `WHERE`, so two writers racing for one transition cannot both win.

pub mod checkouts;
pub mod emails;
pub mod events;
pub mod jobs;
pub mod leases;
pub mod orders;
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
