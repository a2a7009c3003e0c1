//! Typed configuration, loaded once at start-up and passed down.
//!
//! Layers, later ones winning: the built-in `config/default.toml`, the same file in
//! the `--config` directory, `{APP_ENV}.toml` there, `RESTORECLICK__SECTION__KEY`
//! variables, then the conventional variables (`DATABASE_URL`, `STRIPE_SECRET_KEY`, …).
//! Nothing else in the crate reads the environment.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

/// The defaults, compiled in so the binary runs from any directory.
const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Conventional variables that override one key each.
const CONVENTIONAL_VARS: [(&str, &str); 7] = [
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("STRIPE_SECRET_KEY", "stripe.secret_key"),
    ("STRIPE_WEBHOOK_SECRET", "stripe.webhook_secret"),
    ("REPLICATE_API_TOKEN", "replicate.api_token"),
    ("SENDGRID_API_KEY", "sendgrid.api_key"),
    ("ADMIN_TOKEN", "admin.token"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Which of a Replicate model's keys (`model`, `image_input`, `extra_input`) is wrong.
#[derive(Debug, Clone, Copy)]
enum ModelField {
    Model,
    ImageInput,
    ExtraInput,
}

impl ModelField {
    fn as_str(self) -> &'static str {
        match self {
            ModelField::Model => "model",
            ModelField::ImageInput => "image_input",
            ModelField::ExtraInput => "extra_input",
        }
    }
}

/// What is wrong with a Replicate model as configuration names it (for the
/// repair in `[replicate]` and for each option), if anything.
fn model_problem(model: &str, image_input: &str, extra_input: &str) -> Option<(ModelField, &'static str)> {
    let name = model.split(':').next().unwrap_or_default();
    if name.split('/').count() != 2 || name.split('/').any(str::is_empty) {
        return Some((ModelField::Model, "must be owner/name or owner/name:version"));
    }
    if image_input.trim().is_empty() {
        return Some((ModelField::ImageInput, "must name the model's image input"));
    }
    extra_input_problem(extra_input).map(|m| (ModelField::ExtraInput, m))
}

/// A model's other inputs are empty or a JSON object.
fn extra_input_problem(extra_input: &str) -> Option<&'static str> {
    let extra = extra_input.trim();
    (!extra.is_empty() && !matches!(serde_json::from_str(extra), Ok(serde_json::Value::Object(_))))
        .then_some("must be a JSON object")
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// A credential: never printed, never logged.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_set(&self) -> bool {
        !self.0.trim().is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() { "\"****\"" } else { "\"\"" })
    }
}

impl Serialize for Secret {
    /// Masked: a URL keeps its scheme, host and path (only its password is
    /// hidden), anything else is shown as `****`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.is_set() {
            return s.serialize_str("");
        }
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.has_host() => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("****"));
                }
                s.serialize_str(url.as_str())
            }
            _ => s.serialize_str("****"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppEnv {
    Development,
    Production,
    Test,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub app: AppSettings,
    pub http: HttpSettings,
    pub ops: OpsSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub storage: StorageSettings,
    pub uploads: UploadSettings,
    pub pricing: PricingSettings,
    /// Priced options beside the repair (`[options.NAME]`), by option id.
    #[serde(default)]
    pub options: BTreeMap<String, OptionSettings>,
    pub payments: PaymentSettings,
    pub refunds: RefundSettings,
    pub review: ReviewSettings,
    pub stripe: StripeSettings,
    pub restoration: RestorationSettings,
    pub replicate: ReplicateSettings,
    pub mail: MailSettings,
    pub outbox: OutboxSettings,
    pub sendgrid: SendgridSettings,
    pub smtp: SmtpSettings,
    pub downloads: DownloadSettings,
    pub admin: AdminSettings,
    pub instance: InstanceSettings,
    pub orders: OrderSettings,
    pub retention: RetentionSettings,
    pub cleanup: CleanupSettings,
    pub monitor: MonitorSettings,
    pub alerts: AlertSettings,
}

/// The `Monitor` actor: how often it reads the queues and judges the alerts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorSettings {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

/// The four alerts' rules (the same as `config/alerts.yml` gives Prometheus).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertSettings {
    pub queue_backup: QueueBackupRule,
    pub slow_processing: SlowProcessingRule,
    pub high_error_rate: ErrorRateRule,
    pub storage_limit: StorageLimitRule,
}

/// Photos waiting for or in restoration above `threshold` for `for`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueBackupRule {
    pub threshold: u64,
    #[serde(rename = "for", with = "humantime_serde")]
    pub hold: Duration,
}

/// The 95th percentile of restoration attempts finished in `window` above
/// `threshold`, once at least `min_jobs` finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlowProcessingRule {
    #[serde(with = "humantime_serde")]
    pub threshold: Duration,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub min_jobs: u64,
    #[serde(rename = "for", with = "humantime_serde")]
    pub hold: Duration,
}

/// The share of photos that failed among those finished in `window`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorRateRule {
    pub threshold: f64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub min_jobs: u64,
    #[serde(rename = "for", with = "humantime_serde")]
    pub hold: Duration,
}

/// Stored bytes above `threshold` (a share) of `limit_bytes`; 0 turns it off.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageLimitRule {
    pub limit_bytes: u64,
    pub threshold: f64,
    #[serde(rename = "for", with = "humantime_serde")]
    pub hold: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetentionSettings {
    pub days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CleanupSettings {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSettings {
    pub env: AppEnv,
    pub public_url: String,
    pub secret_key: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// An upload request may take this long in all (big batches, slow lines).
    #[serde(with = "humantime_serde")]
    pub upload_timeout: Duration,
    /// A request body that sends nothing for this long is cut off.
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// Upload requests at once, a budget of their own: slow uploads can
    /// never take the slots of checkout, Stripe's webhook or the rest.
    pub max_concurrent_uploads: usize,
    /// A connection must send a request's headers within this long, or it
    /// is closed (a client that opens and waits holds nothing).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Open connections per listener; past it new ones wait in the backlog.
    pub max_connections: usize,
    /// Live-progress streams open at once, in all and per order.
    pub max_event_streams: usize,
    pub max_event_streams_per_order: usize,
    /// Largest body of the JSON routes (uploads and webhooks have their own).
    pub json_body_limit: usize,
    pub webhook_body_limit: usize,
    /// Origins allowed to call the API from another site; empty: none.
    pub cors_origins: Vec<String>,
    /// Serve the pages from this directory instead of the embedded copies.
    pub web_dir: String,
    /// Peers whose `X-Forwarded-For` names the client (load balancers,
    /// CIDR or single addresses); anyone else's header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub rate_limits: RateLimits,
}

/// Requests per client IP (IPv6 by /64), per group of routes. Stripe's and
/// Replicate's webhooks, the pages and the health checks have none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimits {
    pub upload: RateLimit,
    pub checkout: RateLimit,
    /// Order views, photos, live progress and new download links.
    pub orders: RateLimit,
    /// `GET /download/{token}`: guessing tokens costs a request each.
    pub tokens: RateLimit,
    /// Checkouts opened for one upload session, whoever asks.
    pub checkout_per_session: RateLimit,
}

/// A token bucket: `burst` requests at once, refilled at `per_minute`.
/// `per_minute = 0` turns the limit off.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpsSettings {
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub migrate_on_start: bool,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisSettings {
    pub url: Secret,
    pub key_prefix: String,
    #[serde(with = "humantime_serde")]
    pub dedup_ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageSettings {
    pub url: String,
    /// How often the per-area byte counts are set from a listing.
    #[serde(with = "humantime_serde")]
    pub usage_reconcile: Duration,
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub allow_http: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadSettings {
    pub max_file_bytes: u64,
    pub max_files: usize,
    pub max_pixels: u64,
    pub min_dimension: u32,
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    pub allowed_types: Vec<String>,
    /// Memory one decode may allocate (validation and the engine alike):
    /// a photo accepted here always decodes when it is restored.
    pub max_decode_bytes: u64,
    /// An upload body slower than this on average (after its first
    /// `min_body_rate_grace`) is cut off with 408: a trickle holds nothing.
    pub min_body_rate: u64,
    #[serde(with = "humantime_serde")]
    pub min_body_rate_grace: Duration,
    /// Where upload parts are spooled while they arrive; empty: the
    /// system's temporary directory.
    pub spool_dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PricingSettings {
    pub unit_amount: i64,
    pub currency: String,
    pub product_name: String,
}

/// One priced option: what the customer sees and pays per photo, and for
/// the Replicate provider the model that does it (as `[replicate]` names
/// the repair's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptionSettings {
    pub label: String,
    #[serde(default)]
    pub description: String,
    /// Minor units per photo.
    pub unit_amount: i64,
    /// `owner/name` or `owner/name:version`.
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub image_input: String,
    /// The model's other inputs, as a JSON object.
    #[serde(default)]
    pub extra_input: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentsProvider {
    Stripe,
    Dev,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentSettings {
    /// Empty in the files means "decide from the credentials"; [`Settings::load`] resolves it.
    #[serde(deserialize_with = "empty_as_none")]
    pub provider: Option<PaymentsProvider>,
    #[serde(with = "humantime_serde")]
    pub checkout_ttl: Duration,
    /// While no payment event has arrived, the shop asks the provider about a
    /// checkout at most this often (the success page polls faster).
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// How long after its checkout's expiry a delayed payment (bank debit,
    /// voucher) may still arrive; past it the checkout is given up.
    #[serde(with = "humantime_serde")]
    pub async_payment_window: Duration,
}

/// Money the shop gives back by itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundSettings {
    /// Refund the price of the photos of an order that could not be
    /// restored (a total failure is always refunded in full).
    pub partial: bool,
    /// Attempts at the provider before a refund is failed and an operator told.
    pub max_attempts: u32,
    /// First retry after this long, doubling per attempt.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
}

/// The customer's review window: after an order finishes, each restored
/// photo may once be redone or refunded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewSettings {
    /// Days after the order first finished; 0 turns the window off.
    pub days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StripeSettings {
    pub secret_key: Secret,
    pub webhook_secret: Secret,
    pub api_base: String,
    #[serde(with = "humantime_serde")]
    pub webhook_tolerance: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RestorationProvider {
    Replicate,
    Local,
    Instant,
}

impl RestorationProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replicate => "replicate",
            Self::Local => "local",
            Self::Instant => "instant",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestorationSettings {
    #[serde(deserialize_with = "empty_as_none")]
    pub provider: Option<RestorationProvider>,
    pub concurrency: usize,
    /// While the queue is backed up the Monitor raises the pool's
    /// concurrency by `concurrency_step` per tick up to this.
    pub max_concurrency: usize,
    pub concurrency_step: usize,
    /// Photos with a live actor at once; the rest wait as rows.
    pub max_live_photos: usize,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long a photo's tries may be turned away in a row (throttled by
    /// the provider, or the shop's own storage away) without spending an
    /// attempt; past it they count as failed attempts.
    #[serde(with = "humantime_serde")]
    pub throttle_deadline: Duration,
    /// The local engine keeps a toned (sepia) print's tone, its yellowing
    /// removed; off, every black-and-white print comes back neutral grey.
    pub keep_tone: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicateSettings {
    pub api_token: Secret,
    pub api_base: String,
    pub model: String,
    pub image_input: String,
    pub extra_input: String,
    pub webhooks: bool,
    pub webhook_secret: Secret,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub prediction_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub max_output_bytes: u64,
    pub data_uri_limit: u64,
    /// Where a model's output may be fetched from: hosts (https, public
    /// addresses), `*.domain`, or whole origins trusted as listed; the
    /// origin of `api_base` is always allowed.
    pub output_hosts: Vec<String>,
    /// Where Replicate posts completions: the shop's own webhook (derived).
    #[serde(skip)]
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailProvider {
    Sendgrid,
    Smtp,
    Outbox,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MailSettings {
    #[serde(deserialize_with = "empty_as_none")]
    pub provider: Option<MailProvider>,
    pub from: String,
    pub admin_to: String,
    pub max_attempts: u32,
    pub rate_per_sec: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    pub attach_limit: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxSettings {
    pub dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmtpSettings {
    pub url: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendgridSettings {
    pub api_key: Secret,
    pub api_base: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownloadSettings {
    #[serde(with = "humantime_serde")]
    pub link_ttl: Duration,
    pub max_uses: u32,
    #[serde(with = "humantime_serde")]
    pub zip_ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminSettings {
    pub token: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceSettings {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderSettings {
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
}

fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let raw = Option::<String>::deserialize(d)?;
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => T::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(s)).map(Some),
    }
}

/// Where a `storage.url` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    Local(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Settings {
    /// Loads the layers from `dir` (which may be missing: the built-in defaults
    /// stand alone) and the process environment, then resolves and validates.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(dir, &env)
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(dir: &Path, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let app_env = lookup("APP_ENV").unwrap_or_else(|| "development".to_owned());
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml))
            .add_source(config::File::from(dir.join("default.toml")).required(false))
            .add_source(config::File::from(dir.join(format!("{app_env}.toml"))).required(false))
            .add_source(
                config::Environment::with_prefix("RESTORECLICK")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("uploads.allowed_types")
                    .with_list_parse_key("http.cors_origins")
                    .with_list_parse_key("replicate.output_hosts")
                    .with_list_parse_key("http.trusted_proxies")
                    .try_parsing(true)
                    .source(Some(env.iter().cloned().collect())),
            );
        for (var, key) in CONVENTIONAL_VARS {
            if let Some(value) = lookup(var).filter(|v| !v.is_empty()) {
                builder = builder.set_override(key, value)?;
            }
        }
        // `APP_ENV` names the environment wherever the binary runs, with or
        // without an `{APP_ENV}.toml` beside it.
        if let Some(app_env) = lookup("APP_ENV").filter(|v| !v.trim().is_empty()) {
            builder = builder.set_override("app.env", app_env.trim().to_ascii_lowercase())?;
        }
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.resolve();
        settings.validate()?;
        Ok(settings)
    }

    /// Fills the choices left empty: providers from the credentials present.
    fn resolve(&mut self) {
        if self.payments.provider.is_none() {
            self.payments.provider = Some(if self.stripe.secret_key.is_set() {
                PaymentsProvider::Stripe
            } else {
                PaymentsProvider::Dev
            });
        }
        if self.restoration.provider.is_none() {
            self.restoration.provider = Some(if self.replicate.api_token.is_set() {
                RestorationProvider::Replicate
            } else {
                RestorationProvider::Local
            });
        }
        if self.mail.provider.is_none() {
            self.mail.provider = Some(if self.sendgrid.api_key.is_set() {
                MailProvider::Sendgrid
            } else {
                MailProvider::Outbox
            });
        }
        self.replicate.webhook_url = Some(format!("{}/api/webhooks/replicate", self.public_url()));
        self.pricing.currency = self.pricing.currency.to_ascii_lowercase();
        self.uploads.allowed_types = self
            .uploads
            .allowed_types
            .iter()
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
    }

    /// Checks every key a running shop depends on; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let production = self.app.env == AppEnv::Production;
        let public = url_with_host(&self.app.public_url)
            .ok_or_else(|| invalid("app.public_url", "must be an absolute http(s) URL"))?;
        if production && public.scheme() != "https" {
            tracing::warn!("app.public_url is not https in production");
        }
        if production {
            secret_key_is_strong(self.app.secret_key.expose())
                .map_err(|reason| invalid("app.secret_key", reason))?;
        }
        if self.app.secret_key.expose().len() < 16 {
            return Err(invalid("app.secret_key", "must be at least 16 characters"));
        }
        self.validate_http()?;
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        for (key, url) in [
            ("database.url", self.database.url.expose()),
            ("redis.url", self.redis.url.expose()),
        ] {
            if url::Url::parse(url).is_err() {
                return Err(invalid(key, "must be a URL"));
            }
        }
        self.storage_location()?;
        self.validate_uploads()?;
        if self.pricing.unit_amount <= 0 {
            return Err(invalid(
                "pricing.unit_amount",
                "must be a positive amount in minor units",
            ));
        }
        if self.pricing.currency.len() != 3 || !self.pricing.currency.chars().all(|c| c.is_ascii_alphabetic())
        {
            return Err(invalid(
                "pricing.currency",
                "must be a three-letter ISO currency code",
            ));
        }
        self.validate_payments(production)?;
        for (key, url) in [
            ("stripe.api_base", &self.stripe.api_base),
            ("replicate.api_base", &self.replicate.api_base),
            ("sendgrid.api_base", &self.sendgrid.api_base),
        ] {
            if url_with_host(url).is_none() {
                return Err(invalid(key, "must be an absolute http(s) URL"));
            }
        }
        if self.restoration.concurrency == 0 {
            return Err(invalid("restoration.concurrency", "must be at least 1"));
        }
        if self.restoration.max_concurrency < self.restoration.concurrency {
            return Err(invalid(
                "restoration.max_concurrency",
                "must be at least restoration.concurrency",
            ));
        }
        if self.restoration.max_live_photos < self.restoration.max_concurrency {
            return Err(invalid(
                "restoration.max_live_photos",
                "must be at least restoration.max_concurrency",
            ));
        }
        if self.restoration.concurrency_step == 0 {
            return Err(invalid("restoration.concurrency_step", "must be at least 1"));
        }
        self.validate_alerts()?;
        if self.restoration.max_attempts == 0 {
            return Err(invalid("restoration.max_attempts", "must be at least 1"));
        }
        if self.restoration.max_backoff < self.restoration.backoff_base {
            return Err(invalid(
                "restoration.max_backoff",
                "must be at least restoration.backoff_base",
            ));
        }
        self.validate_replicate()?;
        self.validate_options()?;
        if self.mail.max_attempts == 0 {
            return Err(invalid("mail.max_attempts", "must be at least 1"));
        }
        if self.mail_provider() == MailProvider::Sendgrid && !self.sendgrid.api_key.is_set() {
            return Err(invalid(
                "sendgrid.api_key",
                "must be set when mail.provider = sendgrid",
            ));
        }
        if self.mail_provider() == MailProvider::Smtp && !self.smtp.url.is_set() {
            return Err(invalid("smtp.url", "must be set when mail.provider = smtp"));
        }
        if self.mail.rate_per_sec == 0 {
            return Err(invalid("mail.rate_per_sec", "must be at least 1"));
        }
        if self.mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "mail.from",
                "must be an address, e.g. RestoreClick <orders@example.com>",
            ));
        }
        if self.downloads.max_uses == 0 {
            return Err(invalid("downloads.max_uses", "must be at least 1"));
        }
        if self.downloads.link_ttl.is_zero() {
            return Err(invalid("downloads.link_ttl", "must be longer than zero"));
        }
        if self.retention.days == 0 {
            return Err(invalid("retention.days", "must be at least 1"));
        }
        if self.cleanup.interval.is_zero() {
            return Err(invalid("cleanup.interval", "must be longer than zero"));
        }
        if self.orders.lease_ttl < Duration::from_secs(2) {
            return Err(invalid("orders.lease_ttl", "must be at least 2s"));
        }
        Ok(())
    }

    fn validate_alerts(&self) -> Result<(), ConfigError> {
        if self.monitor.interval.is_zero() {
            return Err(invalid("monitor.interval", "must be longer than zero"));
        }
        if self.storage.usage_reconcile.is_zero() {
            return Err(invalid("storage.usage_reconcile", "must be longer than zero"));
        }
        let a = &self.alerts;
        if a.slow_processing.threshold.is_zero() || a.slow_processing.window.is_zero() {
            return Err(invalid(
                "alerts.slow_processing.threshold",
                "the threshold and window must be longer than zero",
            ));
        }
        if !(a.high_error_rate.threshold > 0.0 && a.high_error_rate.threshold <= 1.0) {
            return Err(invalid(
                "alerts.high_error_rate.threshold",
                "must be a share in (0, 1]",
            ));
        }
        if a.high_error_rate.window.is_zero() {
            return Err(invalid(
                "alerts.high_error_rate.window",
                "must be longer than zero",
            ));
        }
        if !(a.storage_limit.threshold > 0.0 && a.storage_limit.threshold <= 1.0) {
            return Err(invalid(
                "alerts.storage_limit.threshold",
                "must be a share in (0, 1]",
            ));
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        if h.max_event_streams == 0 || h.max_event_streams_per_order == 0 {
            return Err(invalid(
                "http.max_event_streams",
                "max_event_streams and max_event_streams_per_order must be at least 1",
            ));
        }
        if h.max_connections == 0 || h.header_read_timeout.is_zero() {
            return Err(invalid(
                "http.max_connections",
                "http.max_connections and http.header_read_timeout must be above zero",
            ));
        }
        if h.max_concurrent_uploads == 0 {
            return Err(invalid("http.max_concurrent_uploads", "must be at least 1"));
        }
        if h.max_concurrent_requests == 0 {
            return Err(invalid("http.max_concurrent_requests", "must be at least 1"));
        }
        for (key, timeout) in [
            ("http.request_timeout", h.request_timeout),
            ("http.upload_timeout", h.upload_timeout),
            ("http.body_idle_timeout", h.body_idle_timeout),
        ] {
            if timeout.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        if h.json_body_limit < 1024 {
            return Err(invalid("http.json_body_limit", "must be at least 1024 bytes"));
        }
        if h.webhook_body_limit < 1024 {
            return Err(invalid("http.webhook_body_limit", "must be at least 1024 bytes"));
        }
        if let Some(bad) = h
            .cors_origins
            .iter()
            .find(|o| o.as_str() != "*" && (url_with_host(o).is_none() || o.ends_with('/')))
        {
            return Err(invalid(
                "http.cors_origins",
                format!("{bad:?} is not an origin like https://shop.example"),
            ));
        }
        Ok(())
    }

    /// Every option is one the shop knows, priced, and for Replicate names
    /// its model the way `[replicate]` does.
    fn validate_options(&self) -> Result<(), ConfigError> {
        for (name, option) in &self.options {
            let fail = |what: &str| invalid("options", format!("options.{name}: {what}"));
            if name.parse::<crate::domain::options::RestorationOption>().is_err() {
                return Err(fail(&format!(
                    "not an option; the options are {}",
                    crate::domain::options::OPTION_NAMES
                )));
            }
            if option.unit_amount < 0 {
                return Err(fail("unit_amount must not be negative"));
            }
            if option.label.trim().is_empty() {
                return Err(fail("label must be set"));
            }
            // An option without a model is one only the local engine can do.
            let named = !option.model.trim().is_empty();
            let problem = if named {
                model_problem(&option.model, &option.image_input, &option.extra_input)
            } else {
                extra_input_problem(&option.extra_input).map(|m| (ModelField::ExtraInput, m))
            };
            if let Some((field, message)) = problem {
                return Err(fail(&format!("{} {message}", field.as_str())));
            }
        }
        Ok(())
    }

    fn validate_replicate(&self) -> Result<(), ConfigError> {
        let r = &self.replicate;
        if self.restoration_provider() == RestorationProvider::Replicate && !r.api_token.is_set() {
            return Err(invalid(
                "replicate.api_token",
                "must be set when restoration.provider = replicate",
            ));
        }
        if let Some((field, message)) = model_problem(&r.model, &r.image_input, &r.extra_input) {
            let key = match field {
                ModelField::Model => "replicate.model",
                ModelField::ImageInput => "replicate.image_input",
                ModelField::ExtraInput => "replicate.extra_input",
            };
            return Err(invalid(key, message));
        }
        crate::providers::restoration::outputs::OutputPolicy::new(&r.output_hosts, &r.api_base)
            .map_err(|e| invalid("replicate.output_hosts", e))?;
        if r.webhooks && !r.webhook_secret.is_set() {
            return Err(invalid(
                "replicate.webhook_secret",
                "must be set when replicate.webhooks = true",
            ));
        }
        if r.poll_interval.is_zero() || r.request_timeout.is_zero() || r.prediction_timeout.is_zero() {
            return Err(invalid(
                "replicate.poll_interval",
                "replicate timings must be longer than zero",
            ));
        }
        Ok(())
    }

    fn validate_uploads(&self) -> Result<(), ConfigError> {
        let u = &self.uploads;
        if u.max_file_bytes == 0 {
            return Err(invalid("uploads.max_file_bytes", "must be at least 1"));
        }
        if u.max_files == 0 {
            return Err(invalid("uploads.max_files", "must be at least 1"));
        }
        if u.max_pixels == 0 {
            return Err(invalid("uploads.max_pixels", "must be at least 1"));
        }
        if u.session_ttl < Duration::from_secs(60) {
            return Err(invalid("uploads.session_ttl", "must be at least 1m"));
        }
        // A photo at the pixel limit, 8-bit RGB, must fit in one decode, or
        // photos inside the limits would be refused as unreadable.
        if u.max_decode_bytes < u.max_pixels.saturating_mul(3) {
            return Err(invalid(
                "uploads.max_decode_bytes",
                format!(
                    "must be at least 3 bytes per pixel of uploads.max_pixels ({})",
                    u.max_pixels.saturating_mul(3)
                ),
            ));
        }
        if u.min_body_rate_grace < Duration::from_secs(1) && u.min_body_rate > 0 {
            return Err(invalid("uploads.min_body_rate_grace", "must be at least 1s"));
        }
        if u.allowed_types.is_empty() {
            return Err(invalid("uploads.allowed_types", "must name at least one type"));
        }
        if let Some(bad) = u
            .allowed_types
            .iter()
            .find(|t| !["jpeg", "png", "webp", "tiff"].contains(&t.as_str()))
        {
            return Err(invalid(
                "uploads.allowed_types",
                format!("unknown type {bad:?} (jpeg, png, webp, tiff)"),
            ));
        }
        Ok(())
    }

    fn validate_payments(&self, production: bool) -> Result<(), ConfigError> {
        match self.payments.provider {
            Some(PaymentsProvider::Dev) if production => Err(invalid(
                "payments.provider",
                "the dev checkout is refused when app.env = production; set STRIPE_SECRET_KEY",
            )),
            Some(PaymentsProvider::Stripe) if !self.stripe.secret_key.is_set() => Err(invalid(
                "stripe.secret_key",
                "must be set when payments.provider = stripe",
            )),
            Some(PaymentsProvider::Stripe) if !self.stripe.webhook_secret.is_set() => Err(invalid(
                "stripe.webhook_secret",
                "must be set when payments.provider = stripe",
            )),
            _ if self.stripe.webhook_tolerance.is_zero() => {
                Err(invalid("stripe.webhook_tolerance", "must be longer than zero"))
            }
            _ if self.payments.checkout_ttl < Duration::from_secs(30 * 60)
                || self.payments.checkout_ttl > Duration::from_secs(24 * 3600) =>
            {
                Err(invalid("payments.checkout_ttl", "must be between 30m and 24h"))
            }
            _ if self.payments.sync_interval < Duration::from_secs(1) => {
                Err(invalid("payments.sync_interval", "must be at least 1s"))
            }
            _ if self.refunds.max_attempts == 0 => Err(invalid("refunds.max_attempts", "must be at least 1")),
            _ if self.refunds.backoff_base.is_zero() => {
                Err(invalid("refunds.backoff_base", "must be longer than zero"))
            }
            _ => Ok(()),
        }
    }

    /// Parses `storage.url`.
    pub fn storage_location(&self) -> Result<StorageLocation, ConfigError> {
        let raw = self.storage.url.trim();
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("storage.url", "s3:// URL needs a bucket"));
            }
            return Ok(StorageLocation::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        let path = match raw.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => path,
            Some(_) => {
                return Err(invalid("storage.url", "file:// URL must have an absolute path"));
            }
            None if raw.contains("://") => {
                return Err(invalid(
                    "storage.url",
                    "must be file:///dir, a directory or s3://bucket/prefix",
                ));
            }
            None if raw.is_empty() => return Err(invalid("storage.url", "must not be empty")),
            None => raw,
        };
        Ok(StorageLocation::Local(path.into()))
    }

    pub fn payments_provider(&self) -> PaymentsProvider {
        self.payments.provider.unwrap_or(PaymentsProvider::Dev)
    }

    pub fn restoration_provider(&self) -> RestorationProvider {
        self.restoration.provider.unwrap_or(RestorationProvider::Local)
    }

    pub fn mail_provider(&self) -> MailProvider {
        self.mail.provider.unwrap_or(MailProvider::Outbox)
    }

    /// The webhook secret the shop verifies Stripe events with; the dev checkout
    /// signs with the same one, so both paths run the same verification.
    pub fn stripe_webhook_secret(&self) -> Secret {
        if self.stripe.webhook_secret.is_set() {
            self.stripe.webhook_secret.clone()
        } else {
            Secret::new("whsec_restoreclick_dev_checkout")
        }
    }

    /// This instance's name in leases and claims: `instance.id`, or the
    /// host and HTTP port (before the process names itself, see
    /// [`Settings::name_instance`]).
    pub fn instance_id(&self) -> String {
        if !self.instance.id.trim().is_empty() {
            return self.instance.id.trim().to_owned();
        }
        format!("{}:{}", hostname(), self.http.addr.port())
    }

    /// Gives a process without a configured `instance.id` a name unique on
    /// its host: host, the port it listens on and its kind (`serve` or
    /// `worker`), so that two processes never share leases.
    pub fn name_instance(&mut self, port: u16, kind: &str) {
        if self.instance.id.trim().is_empty() {
            self.instance.id = format!("{}:{port}:{kind}", hostname());
        }
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The public URL without a trailing slash, for building links.
    pub fn public_url(&self) -> &str {
        self.app.public_url.trim_end_matches('/')
    }
}

/// The `app.secret_key` shipped in `config/default.toml`: public, so never
/// a production key (order tokens are keyed by it).
const SHIPPED_SECRET_KEY: &str = "restoreclick-development-secret-key-not-for-production";

/// Whether a production secret key is one an attacker cannot know or guess:
/// not the shipped one, at least 32 bytes, and not low-entropy (few distinct
/// characters, or a short pattern repeated).
fn secret_key_is_strong(key: &str) -> Result<(), &'static str> {
    if key == SHIPPED_SECRET_KEY {
        return Err(
            "is the development key shipped in config/default.toml; set a random one (openssl rand -hex 32)",
        );
    }
    if key.len() < 32 {
        return Err("must be at least 32 bytes in production (openssl rand -hex 32)");
    }
    let distinct: std::collections::HashSet<u8> = key.bytes().collect();
    let repeated = (1..=key.len() / 2)
        .any(|n| key.len().is_multiple_of(n) && key.as_bytes().chunks(n).all(|c| c == &key.as_bytes()[..n]));
    if distinct.len() < 10 || repeated {
        return Err("is low-entropy; set a random one (openssl rand -hex 32)");
    }
    Ok(())
}

fn url_with_host(raw: &str) -> Option<url::Url> {
    let url = url::Url::parse(raw).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host().is_some()).then_some(url)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "restoreclick".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load_with_env(Path::new("/nonexistent"), &env)
    }

    #[test]
    fn every_option_key_can_be_set_from_the_environment_and_is_checked() {
        let s = load(&[
            ("RESTORECLICK__OPTIONS__FACES__UNIT_AMOUNT", "250"),
            ("RESTORECLICK__OPTIONS__COLORIZE__MODEL", "someone/colour:abc123"),
        ])
        .expect("loads");
        assert_eq!(s.options["faces"].unit_amount, 250);
        assert_eq!(s.options["colorize"].model, "someone/colour:abc123");
        assert_eq!(s.options["upscale_4x"].extra_input, r#"{"scale": 4}"#);
        let refused = |vars: &[(&str, &str)]| match load(vars) {
            Err(ConfigError::Invalid {
                key: "options",
                message,
            }) => message,
            other => panic!("{vars:?} loaded: {other:?}"),
        };
        assert!(
            refused(&[
                ("RESTORECLICK__OPTIONS__SHARPEN__LABEL", "Sharpen"),
                ("RESTORECLICK__OPTIONS__SHARPEN__UNIT_AMOUNT", "1")
            ])
            .contains("options.sharpen")
        );
        assert!(refused(&[("RESTORECLICK__OPTIONS__FACES__UNIT_AMOUNT", "-1")]).contains("unit_amount"));
        assert!(refused(&[("RESTORECLICK__OPTIONS__FACES__MODEL", "gfpgan")]).contains("model"));
        assert!(refused(&[("RESTORECLICK__OPTIONS__FACES__EXTRA_INPUT", "[1]")]).contains("extra_input"));
    }

    /// `serve` and `worker` on one host, or two of either on other ports,
    /// never share an id (and so never each other's leases); a configured
    /// id is kept as it is.
    #[test]
    fn default_instance_ids_are_unique_per_process() {
        let named = |port, kind| {
            let mut s = load(&[]).expect("defaults load");
            s.instance.id = String::new();
            s.name_instance(port, kind);
            s.instance.id
        };
        let ids = [named(8080, "serve"), named(8080, "worker"), named(8081, "serve")];
        assert!(ids.iter().all(|id| !id.is_empty()));
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
        let mut configured = load(&[("RESTORECLICK__INSTANCE__ID", "eu-1")]).expect("loads");
        configured.name_instance(8080, "serve");
        assert_eq!(configured.instance.id, "eu-1");
    }

    #[test]
    fn defaults_are_the_embedded_shop() {
        let s = load(&[]).expect("defaults load");
        assert_eq!(s.payments_provider(), PaymentsProvider::Dev);
        assert_eq!(s.restoration_provider(), RestorationProvider::Local);
        assert_eq!(s.mail_provider(), MailProvider::Outbox);
        assert_eq!(s.uploads.max_file_bytes, 50 * 1024 * 1024);
        assert_eq!(s.uploads.session_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(s.downloads.link_ttl, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(
            s.storage_location().unwrap(),
            StorageLocation::Local("var/photos".into())
        );
    }

    #[test]
    fn environment_overrides_files_and_conventional_variables_win() {
        let s = load(&[
            ("RESTORECLICK__UPLOADS__MAX_FILES", "7"),
            ("RESTORECLICK__RESTORATION__BACKOFF_BASE", "250ms"),
            ("DATABASE_URL", "postgres://u@db/x"),
            ("STRIPE_SECRET_KEY", "sk_test_1"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_1"),
        ])
        .expect("loads");
        assert_eq!(s.uploads.max_files, 7);
        assert_eq!(s.restoration.backoff_base, Duration::from_millis(250));
        assert_eq!(s.database.url.expose(), "postgres://u@db/x");
        assert_eq!(s.payments_provider(), PaymentsProvider::Stripe);
    }

    #[test]
    fn errors_name_the_key() {
        let err = load(&[("RESTORECLICK__UPLOADS__MAX_FILES", "0")]).unwrap_err();
        assert!(err.to_string().contains("uploads.max_files"), "{err}");
        let err = load(&[("RESTORECLICK__STORAGE__URL", "ftp://x")]).unwrap_err();
        assert!(err.to_string().contains("storage.url"), "{err}");
        let err = load(&[("RESTORECLICK__PAYMENTS__PROVIDER", "stripe")]).unwrap_err();
        assert!(err.to_string().contains("stripe.secret_key"), "{err}");
    }

    #[test]
    fn dev_payments_are_refused_in_production() {
        let err = load(&[
            ("APP_ENV", "production"),
            ("RESTORECLICK__APP__ENV", "production"),
            (
                "RESTORECLICK__APP__SECRET_KEY",
                "d41f0c9a7be2583e6f14a9c07d3b58e2",
            ),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("payments.provider"), "{err}");
    }

    #[test]
    fn production_refuses_a_known_short_or_low_entropy_secret_key() {
        let production = |key: &str| {
            let mut env = vec![
                ("APP_ENV", "production"),
                ("STRIPE_SECRET_KEY", "sk_live_1"),
                ("STRIPE_WEBHOOK_SECRET", "whsec_1"),
            ];
            if !key.is_empty() {
                env.push(("RESTORECLICK__APP__SECRET_KEY", key));
            }
            load(&env)
        };
        for (key, why) in [
            ("", "shipped"),
            ("short-but-random-9f8e7d", "32 bytes"),
            ("abababababababababababababababababab", "low-entropy"),
            ("0123456789abcdef0123456789abcdef", "low-entropy"),
        ] {
            let err = production(key).unwrap_err().to_string();
            assert!(
                err.contains("app.secret_key") && err.contains(why),
                "{key}: {err}"
            );
        }
        assert!(production("d41f0c9a7be2583e6f14a9c07d3b58e2").is_ok());
    }

    #[test]
    fn masked_output_hides_secrets() {
        let s = load(&[
            ("STRIPE_SECRET_KEY", "sk_live_secret"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_x"),
        ])
        .unwrap();
        let out = s.to_masked_toml();
        assert!(!out.contains("sk_live_secret"));
        assert!(out.contains("****"));
        assert!(!out.contains("development-secret-key"));
    }
}
