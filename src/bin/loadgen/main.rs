//! `loadgen`: drives a shop over HTTP like many customers and Stripe at once,
//! and measures, in the same run, the ceilings each figure is a share of.
//!
//! Without `--target` it starts its own shop (this binary again, as a child
//! process running `restoreclick serve` on a fresh database and temporary
//! storage), so one command reproduces a figure. Every scenario writes
//! `report.json`, `report.md` and, where there is a latency curve,
//! `latency.svg` into `--out`.
//!
//! `cargo run --release --bin loadgen -- checkout-storm`
//! `cargo run --release --bin loadgen -- pipeline | uploads | downloads | soak | live-orders`

mod ceilings;
mod client;
mod fake_replicate;
#[path = "../../../benches/fixtures/mod.rs"]
mod fixtures;
mod report;
mod scenarios;
mod shop;
mod stats;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator and ceilings for RestoreClick")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// A running shop's customer listener (e.g. http://127.0.0.1:8080);
    /// without it a shop is started for the run.
    #[arg(long, global = true)]
    target: Option<String>,
    /// The database of the shop at `--target` (orders' times are read there).
    #[arg(long, global = true, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The secret the shop verifies Stripe events with.
    #[arg(long, global = true, default_value = "whsec_restoreclick_dev_checkout")]
    webhook_secret: String,
    /// Where new databases are created (for a started shop and the ceilings).
    #[arg(
        long,
        global = true,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres"
    )]
    admin_database_url: String,
    /// Where the reports are written.
    #[arg(long, global = true, default_value = "target/loadgen")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Scenario {
    /// Concurrent senders of signed `checkout.session.completed` events for
    /// pre-uploaded sessions: durable orders/s and latency per concurrency,
    /// against the same transaction run bare (database ceiling) and a bare
    /// axum handler (HTTP ceiling).
    CheckoutStorm {
        #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
        concurrency: Vec<usize>,
        /// Orders per concurrency level.
        #[arg(long, default_value_t = 400)]
        orders: usize,
    },
    /// Paid → completed with the `instant` provider: images/s and
    /// time-to-complete percentiles.
    Pipeline {
        #[arg(long, default_value_t = 1000)]
        orders: usize,
        #[arg(long, default_value_t = 3)]
        photos: usize,
        /// The shop's restoration pool.
        #[arg(long, default_value_t = 32)]
        pool: usize,
    },
    /// Validated uploads: MB/s and files/s against a bare decode of the same files.
    Uploads {
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
        concurrency: Vec<usize>,
        /// Files per concurrency level (half JPEG, half PNG).
        #[arg(long, default_value_t = 24)]
        files: usize,
        /// Photos of this size (old prints are scanned at 5–20 MP).
        #[arg(long, default_value_t = 8.0)]
        megapixels: f64,
    },
    /// ZIP downloads: MB/s against a raw read of the same bytes.
    Downloads {
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        concurrency: Vec<usize>,
        /// Photos in the order (each about `photo_mb` megabytes, incompressible).
        #[arg(long, default_value_t = 40)]
        photos: usize,
        #[arg(long, default_value_t = 2)]
        photo_mb: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Mixed load (uploads, checkouts, payments, order views, downloads) for
    /// a while: RSS, open connections and queue depth must stay flat.
    Soak {
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Simulated customers at once.
        #[arg(long, default_value_t = 16)]
        customers: usize,
    },
    /// Many live orders waiting on a slow provider: the shop's RSS.
    LiveOrders {
        #[arg(long, default_value_t = 10_000)]
        orders: usize,
        #[arg(long, default_value_t = 3)]
        photos: usize,
    },
    /// (internal) Runs a shop in this process; used for a started shop.
    #[command(hide = true)]
    Serve,
}

/// What every scenario gets: where the shop is and how to reach it.
pub struct Run {
    pub shop: shop::ShopHandle,
    pub http: client::Client,
    pub webhook_secret: String,
    pub admin_database_url: String,
    pub out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.scenario, Scenario::Serve) {
        return shop::serve_in_process();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    std::fs::create_dir_all(&cli.out)?;
    let shop_env = match &cli.scenario {
        Scenario::Pipeline { pool, .. } => shop::ShopKind::Pipeline { pool: *pool },
        Scenario::LiveOrders { .. } => shop::ShopKind::SlowProvider,
        _ => shop::ShopKind::Instant,
    };
    let shop = match &cli.target {
        Some(target) => shop::ShopHandle::remote(target, cli.database_url.as_deref()).await?,
        None => {
            shop::ShopHandle::start(&cli.admin_database_url, &cli.webhook_secret, shop_env, &cli.out).await?
        }
    };
    let run = Run {
        http: client::Client::new(&shop.base)?,
        shop,
        webhook_secret: cli.webhook_secret,
        admin_database_url: cli.admin_database_url,
        out: cli.out,
    };
    let report = match cli.scenario {
        Scenario::CheckoutStorm { concurrency, orders } => {
            scenarios::checkout_storm(&run, &concurrency, orders).await?
        }
        Scenario::Pipeline { orders, photos, pool } => {
            scenarios::pipeline(&run, orders, photos, pool).await?
        }
        Scenario::Uploads {
            concurrency,
            files,
            megapixels,
        } => scenarios::uploads(&run, &concurrency, files, megapixels).await?,
        Scenario::Downloads {
            concurrency,
            photos,
            photo_mb,
            rounds,
        } => scenarios::downloads(&run, &concurrency, photos, photo_mb, rounds).await?,
        Scenario::Soak { duration, customers } => scenarios::soak(&run, duration, customers).await?,
        Scenario::LiveOrders { orders, photos } => scenarios::live_orders(&run, orders, photos).await?,
        Scenario::Serve => anyhow::bail!("serve runs before the runtime starts"),
    };
    report.write(&run.out)?;
    println!("{}", report.markdown());
    println!("reports in {}", run.out.display());
    run.shop.stop().await;
    Ok(())
}
