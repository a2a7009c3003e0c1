//! The real `restoreclick` binary as a child process, for tests that kill it.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

pub struct Shop {
    child: Child,
    pub base: String,
    /// The ops listener (health, metrics), for workers too.
    pub ops_base: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How to start one instance.
pub struct ShopConfig<'a> {
    pub database_url: &'a str,
    pub storage: &'a Path,
    /// `serve` or `worker`.
    pub command: &'a str,
    pub failpoints: Option<&'a str>,
    pub env: Vec<(String, String)>,
    /// How far ahead of the machine's (and Postgres') wall clock the shop's
    /// runs, through libfaketime; the monotonic clock is left alone.
    pub clock_ahead: Option<Duration>,
    /// Where the shop's log (stdout, at `info`) goes instead of nowhere.
    pub log_to: Option<std::path::PathBuf>,
}

impl<'a> ShopConfig<'a> {
    pub fn serve(database_url: &'a str, storage: &'a Path) -> Self {
        Self {
            database_url,
            storage,
            command: "serve",
            failpoints: None,
            env: Vec::new(),
            clock_ahead: None,
            log_to: None,
        }
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Restore through the fake Replicate at `base`, polling fast.
    pub fn replicate(self, base: &str) -> Self {
        self.env("RESTORECLICK__RESTORATION__PROVIDER", "replicate")
            .env("REPLICATE_API_TOKEN", super::fake_replicate::TOKEN)
            .env("RESTORECLICK__REPLICATE__API_BASE", base)
            .env("RESTORECLICK__REPLICATE__POLL_INTERVAL", "50ms")
            .env("RESTORECLICK__RESTORATION__BACKOFF_BASE", "100ms")
            .env("RESTORECLICK__RESTORATION__MAX_BACKOFF", "500ms")
    }
}

impl Shop {
    pub async fn start(config: ShopConfig<'_>) -> Self {
        let (port, ops) = (free_port(), free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_restoreclick"));
        command
            .args([config.command, "--config"])
            .arg(super::config_dir())
            .env("APP_ENV", "test")
            .env("DATABASE_URL", config.database_url)
            .env("REDIS_URL", super::redis_url())
            .env(
                "RESTORECLICK__REDIS__KEY_PREFIX",
                format!("rc-test-{}:", uuid::Uuid::new_v4().simple()),
            )
            .env("STRIPE_WEBHOOK_SECRET", super::WEBHOOK_SECRET)
            .env("RESTORECLICK__PAYMENTS__PROVIDER", "dev")
            .env("RESTORECLICK__STORAGE__URL", config.storage)
            .env("RESTORECLICK__OUTBOX__DIR", config.storage.join("outbox"))
            .env("RESTORECLICK__HTTP__ADDR", format!("127.0.0.1:{port}"))
            .env("RESTORECLICK__OPS__ADDR", format!("127.0.0.1:{ops}"))
            .env("RESTORECLICK__INSTANCE__ID", format!("{}-{port}", config.command))
            .env("RESTORECLICK__ORDERS__LEASE_TTL", "2s")
            .env("RUST_LOG", "warn")
            .env_remove("STRIPE_SECRET_KEY")
            .env_remove("REPLICATE_API_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &config.env {
            command.env(k, v);
        }
        if let Some(ahead) = config.clock_ahead {
            command
                .env("LD_PRELOAD", libfaketime())
                .env("FAKETIME", format!("+{}s", ahead.as_secs()))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_DONT_RESET", "1");
        }
        if let Some(path) = &config.log_to {
            let file = std::fs::File::create(path).expect("the shop's log file");
            command.env("RUST_LOG", "info").stdout(file);
        }
        match config.failpoints {
            Some(f) => command.env("FAILPOINTS", f),
            None => command.env_remove("FAILPOINTS"),
        };
        let child = command.spawn().expect("start the shop");
        let base = format!("http://127.0.0.1:{port}");
        let ops_base = format!("http://127.0.0.1:{ops}");
        let client = reqwest::Client::new();
        // A worker answers on its ops listener only.
        let health = if config.command == "serve" {
            &base
        } else {
            &ops_base
        };
        super::eventually(Duration::from_secs(30), "the shop to answer /healthz", || {
            let client = client.clone();
            let url = format!("{health}/healthz");
            async move { client.get(url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        Self {
            child,
            base,
            ops_base,
        }
    }

    /// The process's resident memory now and at its peak, in bytes
    /// (`VmRSS`, `VmHWM`).
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(self.status_path()).expect("the shop's /proc status");
        let field = |name| status_field(&status, name).unwrap_or_else(|| panic!("{name} in /proc status"));
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// `/proc/<pid>/status` of the shop.
    pub fn status_path(&self) -> std::path::PathBuf {
        format!("/proc/{}/status", self.child.id()).into()
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the shop");
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for the shop")
    }

    /// Uploads photos `0..n` and opens a checkout through the shop's own API:
    /// (upload session id, checkout id).
    pub async fn open_checkout(&self, n: usize, email: Option<&str>) -> (String, String) {
        let client = reqwest::Client::new();
        let mut form = reqwest::multipart::Form::new();
        for i in 0..n {
            let name = if i % 2 == 0 { "photo.jpg" } else { "photo.png" };
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(super::photos::photo(i)).file_name(name),
            );
        }
        let upload: serde_json::Value = client
            .post(format!("{}/api/upload", self.base))
            .multipart(form)
            .send()
            .await
            .expect("upload")
            .json()
            .await
            .expect("upload JSON");
        let session = upload["session_id"].as_str().expect("session id").to_owned();
        let checkout: serde_json::Value = client
            .post(format!("{}/api/checkout", self.base))
            .json(&serde_json::json!({"session_id": session, "email": email}))
            .send()
            .await
            .expect("checkout")
            .json()
            .await
            .expect("checkout JSON");
        let cs = checkout["checkout_session_id"]
            .as_str()
            .expect("checkout id")
            .to_owned();
        (session, cs)
    }

    /// Buys `n` photos as a customer does: upload, checkout, and pay on the
    /// dev checkout page. Returns the checkout id.
    pub async fn buy(&self, n: usize, email: &str) -> String {
        let (_, cs) = self.open_checkout(n, Some(email)).await;
        let paid = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .post(format!("{}/dev/checkout/{cs}/pay", self.base))
            .send()
            .await
            .expect("pay");
        assert!(
            paid.status().is_redirection() || paid.status().is_success(),
            "the dev checkout took the payment: {}",
            paid.status()
        );
        cs
    }

    /// `event`'s body and a `Stripe-Signature` for it, signed now.
    pub fn signed(event: &serde_json::Value) -> (String, String) {
        let body = event.to_string();
        let header = restoreclick::providers::payments::signature::sign(
            body.as_bytes(),
            super::WEBHOOK_SECRET,
            super::now(),
        );
        (body, header)
    }

    /// Posts `event`, correctly signed, to the shop's Stripe webhook.
    pub async fn post_event(&self, event: &serde_json::Value) -> reqwest::Response {
        let (body, header) = Self::signed(event);
        reqwest::Client::new()
            .post(format!("{}/api/webhooks/stripe", self.base))
            .header("stripe-signature", header)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("webhook request")
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait();
    }
}

/// Debian's multithreaded libfaketime (`scripts/services --faults` installs it).
fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists());
    found
        .expect("libfaketime is installed (scripts/services --faults installs it)")
        .display()
        .to_string()
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident memory in a `/proc/<pid>/status` file, in bytes.
pub fn rss_of(status_path: &Path) -> Option<u64> {
    status_field(&std::fs::read_to_string(status_path).ok()?, "VmRSS:")
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}
