//! The `restoreclick` command: `serve`, `worker`, `migrate`, `check-config`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use restoreclick::{
    config::{RestorationProvider, Settings},
    startup::{self, Application},
    telemetry,
};

#[derive(Parser)]
#[command(name = "restoreclick", version, about = "A photo-restoration shop")]
struct Cli {
    /// Directory holding default.toml and {APP_ENV}.toml.
    #[arg(long, global = true, default_value = "config")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP and run the actors.
    Serve,
    /// Run the actors and the ops listener only (more instances behind one database).
    Worker,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets masked) and exit.
    CheckConfig,
    /// Restore one photo file with a restoration provider and exit.
    Restore {
        input: PathBuf,
        output: PathBuf,
        /// `local` (the embedded engine) or `replicate`; default: the configured one.
        #[arg(long)]
        provider: Option<RestorationProvider>,
    },
}

fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("restoreclick: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restoreclick: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // One TLS crypto provider for every client (Stripe, S3, Postgres, Redis).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let settings = Settings::load(&cli.config)?;
    match cli.command {
        Command::CheckConfig => {
            print!("{}", settings.to_masked_toml());
            Ok(())
        }
        Command::Migrate => {
            telemetry::init(settings.app.env, "info");
            let pool = restoreclick::db::connect(&settings.database)
                .await
                .context("cannot connect to the database")?;
            restoreclick::db::migrate(&pool)
                .await
                .context("migrations failed")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => {
            telemetry::init(settings.app.env, "info,sqlx=warn");
            let app = Application::build(settings).await?;
            app.run_until(startup::shutdown_signal()).await?;
            Ok(())
        }
        Command::Restore {
            input,
            output,
            provider,
        } => {
            telemetry::init(settings.app.env, "warn");
            let mut settings = settings;
            if let Some(provider) = provider {
                settings.restoration.provider = Some(provider);
                settings.validate()?;
            }
            let started = std::time::Instant::now();
            let bytes =
                restoreclick::providers::restoration::restore_file(&settings, &input, &output).await?;
            println!(
                "restored {} → {} ({bytes} bytes, {} provider, {:.2} s)",
                input.display(),
                output.display(),
                settings.restoration_provider().as_str(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Worker => {
            telemetry::init(settings.app.env, "info,sqlx=warn");
            let app = Application::build_worker(settings).await?;
            app.run_until(startup::shutdown_signal()).await?;
            Ok(())
        }
    }
}
