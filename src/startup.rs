//! Building and running the shop: connections, providers, the actor tree and
//! the two listeners (customer and operator). Listeners bind first, so a test
//! can ask for port 0 and learn the port it got.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    actors::{ActorContext, Actors},
    config::{MailProvider, PaymentsProvider, Settings},
    db,
    dedup::WebhookDedup,
    http::{self, AppState, middleware::DRAIN_TIMEOUT},
    providers::{
        mail::{MailSender, outbox::Outbox, sendgrid::SendGrid, smtp::Smtp},
        payments::{PaymentProvider, dev::DevPayments, stripe::StripePayments},
        restoration::{self, RestoreError, Restorer, replicate::PredictionNotices},
    },
    storage::Storage,
    validation::PhotoLimits,
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot connect to the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up payments: {0}")]
    Payments(#[from] crate::providers::payments::PaymentError),
    #[error("cannot start the actor tree: {0}")]
    Actors(#[from] ractor::SpawnErr),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot set up restoration: {0}")]
    Restoration(#[from] RestoreError),
    #[error("cannot set up mail: {0}")]
    Mail(String),
}

/// Connects to Postgres and applies migrations when configured to.
pub async fn database(settings: &Settings) -> Result<PgPool, StartupError> {
    let pool = db::connect(&settings.database).await?;
    if settings.database.migrate_on_start {
        db::migrate(&pool).await?;
    }
    Ok(pool)
}

/// The payment provider the configuration names (validated already). The
/// dev provider sends its events to `self_url`, this process's own listener.
pub fn payments(
    settings: &Settings,
    self_url: &str,
    http: reqwest::Client,
) -> Result<Arc<dyn PaymentProvider>, StartupError> {
    Ok(match settings.payments_provider() {
        PaymentsProvider::Stripe => Arc::new(StripePayments::new(&settings.stripe)?),
        PaymentsProvider::Dev => {
            tracing::info!("payments: dev checkout (no Stripe secret key set)");
            Arc::new(DevPayments::new(
                settings.public_url(),
                self_url,
                settings.stripe_webhook_secret().expose(),
                http,
            ))
        }
    })
}

/// The mail sender the configuration names.
pub fn mailer(settings: &Settings) -> Result<Arc<dyn MailSender>, StartupError> {
    match settings.mail_provider() {
        MailProvider::Outbox => {
            tracing::info!(dir = %settings.outbox.dir, "mail: written to the outbox (no SendGrid key set)");
            Ok(Arc::new(Outbox::new(&settings.outbox.dir)))
        }
        MailProvider::Sendgrid => Ok(Arc::new(
            SendGrid::new(&settings.sendgrid).map_err(|e| StartupError::Mail(e.to_string()))?,
        )),
        MailProvider::Smtp => Ok(Arc::new(
            Smtp::new(settings.smtp.url.expose()).map_err(|e| StartupError::Mail(e.to_string()))?,
        )),
    }
}

/// The running actor tree and its handle.
pub struct Workers {
    pub actors: Actors,
    handle: tokio::task::JoinHandle<()>,
}

impl Workers {
    pub async fn start(settings: Arc<Settings>, db: PgPool, storage: Storage) -> Result<Self, StartupError> {
        let payments = payments(&settings, settings.public_url(), reqwest::Client::new())?;
        Self::start_with(
            settings,
            db,
            storage,
            None,
            PredictionNotices::default(),
            payments,
        )
        .await
    }

    /// As [`Workers::start`], with a restoration provider chosen by the
    /// caller instead of the configuration (tests inject faulty ones).
    pub async fn start_with(
        settings: Arc<Settings>,
        db: PgPool,
        storage: Storage,
        restorer: Option<Arc<dyn Restorer>>,
        notices: PredictionNotices,
        payments: Arc<dyn PaymentProvider>,
    ) -> Result<Self, StartupError> {
        let restorer = match restorer {
            Some(r) => r,
            None => restoration::from_settings(&settings, storage.clone(), notices)?,
        };
        tracing::info!(provider = restorer.name(), instance = %settings.instance_id(), "restoration provider ready");
        let mailer = mailer(&settings)?;
        let ctx = ActorContext::new(settings, db, storage, payments, restorer.clone());
        let (actors, handle) = Actors::start(ctx, restorer, mailer).await?;
        Ok(Self { actors, handle })
    }

    pub async fn stop(self) {
        self.actors.stop(self.handle).await;
    }
}

/// The shop, bound and ready to serve.
pub struct Application {
    state: AppState,
    workers: Workers,
    /// The customer listener; `None` for a worker (actors and ops only).
    http: Option<TcpListener>,
    ops: TcpListener,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, None).await
    }

    /// A worker: the actors and the ops listener (health, metrics, admin),
    /// no customer listener.
    pub async fn build_worker(settings: Settings) -> Result<Self, StartupError> {
        Self::assemble(settings, None, false).await
    }

    /// As [`Application::build`], with the restoration provider given.
    pub async fn build_with(
        settings: Settings,
        restorer: Option<Arc<dyn Restorer>>,
    ) -> Result<Self, StartupError> {
        Self::assemble(settings, restorer, true).await
    }

    async fn assemble(
        settings: Settings,
        restorer: Option<Arc<dyn Restorer>>,
        customer_listener: bool,
    ) -> Result<Self, StartupError> {
        // Before any actor starts: what they record before it would be lost.
        crate::http::ops::prometheus();
        let mut settings = settings;
        let http = match customer_listener {
            true => Some(bind(settings.http.addr).await?),
            false => None,
        };
        let ops = bind(settings.ops.addr).await?;
        let (port, kind) = match &http {
            Some(listener) => (listener.local_addr().map_or(0, |a| a.port()), "serve"),
            None => (ops.local_addr().map_or(0, |a| a.port()), "worker"),
        };
        settings.name_instance(port, kind);
        let settings = Arc::new(settings);
        let db = database(&settings).await?;
        let storage = Storage::open(&settings)?;
        let self_url = match &http {
            Some(listener) => {
                let local = listener.local_addr().map_err(|source| StartupError::Bind {
                    addr: settings.http.addr,
                    source,
                })?;
                let host = if local.ip().is_unspecified() {
                    SocketAddr::from(([127, 0, 0, 1], local.port()))
                } else {
                    local
                };
                format!("http://{host}")
            }
            None => settings.public_url().to_owned(),
        };
        let notices = PredictionNotices::default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let payments = payments(&settings, &self_url, client.clone())?;
        let workers = Workers::start_with(
            settings.clone(),
            db.clone(),
            storage.clone(),
            restorer,
            notices.clone(),
            payments.clone(),
        )
        .await?;
        let state = AppState {
            payments,
            dedup: WebhookDedup::new(&settings.redis),
            limits: Arc::new(PhotoLimits::from_settings(&settings.uploads)),
            event_streams: http::events::StreamSlots::new(
                settings.http.max_event_streams,
                settings.http.max_event_streams_per_order,
            ),
            order_feed: crate::db::order_feed::OrderFeed::start(db.clone()),
            checkouts_per_session: Arc::new(http::rate_limit::KeyedLimit::new(
                settings.http.rate_limits.checkout_per_session,
            )),
            decode_slots: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            http: client,
            self_url: self_url.into(),
            actors: workers.actors.clone(),
            predictions: notices,
            settings,
            db,
            storage,
        };
        Ok(Self {
            state,
            workers,
            http,
            ops,
        })
    }

    /// The customer listener's port (0 for a worker).
    pub fn port(&self) -> u16 {
        self.http
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port())
    }

    pub fn ops_port(&self) -> u16 {
        self.ops.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains: stops accepting, lets
    /// requests in flight finish (up to a limit), and stops the actors.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let limits = http::serve::Limits {
            header_read_timeout: self.state.settings.http.header_read_timeout,
            max_connections: self.state.settings.http.max_connections,
        };
        let serve = |listener: TcpListener, router: axum::Router| {
            let mut rx = rx.clone();
            tokio::spawn(http::serve::serve(listener, router, limits, async move {
                let _ = rx.changed().await;
            }))
        };
        let api = self
            .http
            .map(|listener| serve(listener, http::api_router(self.state.clone())));
        let ops = serve(self.ops, http::ops_router(self.state.clone()));
        match &api {
            Some(_) => tracing::info!(addr = %self.state.self_url, "RestoreClick is serving"),
            None => tracing::info!("RestoreClick worker running"),
        }
        shutdown.await;
        tracing::info!("shutting down: draining requests");
        let _ = tx.send(true);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            if let Some(api) = api {
                let _ = api.await;
            }
            let _ = ops.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("requests still running after the drain timeout");
        }
        self.workers.stop().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
