//! The shop under load: one at `--target`, or one this run starts — this
//! binary again, as a child process serving `restoreclick` on a fresh
//! database and temporary storage — whose RSS and sockets can be read.

use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use sqlx::{Connection, Executor, PgConnection};
use tokio::process::{Child, Command};

use super::fake_replicate::FakeReplicate;

/// How a started shop is configured.
#[derive(Debug, Clone, Copy)]
pub enum ShopKind {
    /// The `instant` provider (a photo is its own restoration).
    Instant,
    /// The `instant` provider with a pool of this size.
    Pipeline { pool: usize },
    /// Replicate's API, served by a fake whose predictions never finish.
    SlowProvider,
}

pub struct ShopHandle {
    pub base: String,
    pub ops_base: Option<String>,
    /// The shop's database, when known (orders' times are read there).
    pub database_url: Option<String>,
    child: Option<Child>,
    dropper: Option<(String, String)>,
    _storage: Option<tempfile::TempDir>,
    _replicate: Option<FakeReplicate>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ShopHandle {
    pub async fn remote(target: &str, database_url: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            base: target.trim_end_matches('/').to_owned(),
            ops_base: None,
            database_url: database_url.map(str::to_owned),
            child: None,
            dropper: None,
            _storage: None,
            _replicate: None,
        })
    }

    pub async fn start(admin_url: &str, secret: &str, kind: ShopKind, out: &Path) -> anyhow::Result<Self> {
        let name = format!("rc_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url)
            .await
            .context("connect to the admin database (TEST_DATABASE_URL)")?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&name);
        let storage = tempfile::tempdir()?;
        let (port, ops) = (free_port()?, free_port()?);
        let base = format!("http://127.0.0.1:{port}");
        let mut env: Vec<(String, String)> = vec![
            ("APP_ENV".into(), "development".into()),
            ("DATABASE_URL".into(), url.to_string()),
            ("STRIPE_WEBHOOK_SECRET".into(), secret.into()),
            ("RESTORECLICK__PAYMENTS__PROVIDER".into(), "dev".into()),
            ("RESTORECLICK__APP__PUBLIC_URL".into(), base.clone()),
            ("RESTORECLICK__HTTP__ADDR".into(), format!("127.0.0.1:{port}")),
            ("RESTORECLICK__OPS__ADDR".into(), format!("127.0.0.1:{ops}")),
            (
                "RESTORECLICK__HTTP__MAX_CONCURRENT_REQUESTS".into(),
                "4096".into(),
            ),
            ("RESTORECLICK__DATABASE__MAX_CONNECTIONS".into(), "40".into()),
            // Every simulated customer comes from 127.0.0.1.
            (
                "RESTORECLICK__HTTP__RATE_LIMITS__UPLOAD__PER_MINUTE".into(),
                "0".into(),
            ),
            (
                "RESTORECLICK__HTTP__RATE_LIMITS__CHECKOUT__PER_MINUTE".into(),
                "0".into(),
            ),
            (
                "RESTORECLICK__HTTP__RATE_LIMITS__ORDERS__PER_MINUTE".into(),
                "0".into(),
            ),
            (
                "RESTORECLICK__HTTP__RATE_LIMITS__TOKENS__PER_MINUTE".into(),
                "0".into(),
            ),
            (
                "RESTORECLICK__HTTP__RATE_LIMITS__CHECKOUT_PER_SESSION__PER_MINUTE".into(),
                "0".into(),
            ),
            (
                "RESTORECLICK__STORAGE__URL".into(),
                storage.path().join("photos").display().to_string(),
            ),
            (
                "RESTORECLICK__OUTBOX__DIR".into(),
                storage.path().join("outbox").display().to_string(),
            ),
            ("RESTORECLICK__REDIS__KEY_PREFIX".into(), format!("{name}:")),
            ("RESTORECLICK__MAIL__RATE_PER_SEC".into(), "500".into()),
            ("RESTORECLICK__UPLOADS__MAX_FILES".into(), "200".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        let replicate = match kind {
            ShopKind::Instant => {
                env.push(("RESTORECLICK__RESTORATION__PROVIDER".into(), "instant".into()));
                None
            }
            ShopKind::Pipeline { pool } => {
                env.push(("RESTORECLICK__RESTORATION__PROVIDER".into(), "instant".into()));
                env.push(("RESTORECLICK__RESTORATION__CONCURRENCY".into(), pool.to_string()));
                env.push((
                    "RESTORECLICK__RESTORATION__MAX_CONCURRENCY".into(),
                    pool.max(32).to_string(),
                ));
                None
            }
            ShopKind::SlowProvider => {
                let fake = FakeReplicate::start().await?;
                env.extend([
                    ("RESTORECLICK__RESTORATION__PROVIDER".into(), "replicate".into()),
                    ("REPLICATE_API_TOKEN".into(), "r8_loadgen".into()),
                    ("RESTORECLICK__REPLICATE__API_BASE".into(), fake.base.clone()),
                    ("RESTORECLICK__REPLICATE__POLL_INTERVAL".into(), "5s".into()),
                    ("RESTORECLICK__REPLICATE__PREDICTION_TIMEOUT".into(), "24h".into()),
                ]);
                Some(fake)
            }
        };
        let log = std::fs::File::create(out.join("shop.log"))?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("serve")
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
            .envs(env)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().context("start the shop")?;
        let shop = Self {
            base,
            ops_base: Some(format!("http://127.0.0.1:{ops}")),
            database_url: Some(url.to_string()),
            child: Some(child),
            dropper: Some((admin_url.to_owned(), name)),
            _storage: Some(storage),
            _replicate: replicate,
        };
        shop.wait_ready().await?;
        Ok(shop)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the shop did not answer /healthz in 30 s (see shop.log)")
    }

    /// Where a started shop keeps its photos.
    pub fn storage_dir(&self) -> Option<std::path::PathBuf> {
        self._storage.as_ref().map(|d| d.path().join("photos"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The shop process's resident memory, in bytes (a started shop only).
    pub fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// Sockets the shop process holds open (a started shop only).
    pub fn sockets(&self) -> Option<usize> {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid()?)).ok()?;
        Some(
            fds.flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                })
                .count(),
        )
    }

    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        if let Some((admin, name)) = self.dropper.take()
            && let Ok(mut conn) = PgConnection::connect(&admin).await
        {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await;
        }
    }
}

/// The child side of [`ShopHandle::start`]: the shop, configured from the
/// environment, until SIGTERM.
pub fn serve_in_process() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shop: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let settings = restoreclick::config::Settings::load(Path::new("config"))?;
        restoreclick::telemetry::init(settings.app.env, "warn");
        let app = restoreclick::startup::Application::build(settings).await?;
        app.run_until(restoreclick::startup::shutdown_signal()).await?;
        anyhow::Ok(())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shop: {e:#}");
            ExitCode::FAILURE
        }
    }
}
