//! The command line: configuration checks and migrations.

mod common;

use std::process::Command;

fn restoreclick() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_restoreclick"));
    c.arg("--config")
        .arg(common::config_dir())
        .env_remove("STRIPE_SECRET_KEY")
        .env("APP_ENV", "test");
    c
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_masked() {
    let out = restoreclick()
        .arg("check-config")
        .env("STRIPE_SECRET_KEY", "sk_live_do_not_print")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_do_not_print")
        .env("DATABASE_URL", "postgres://shop:hunter2@db.example:5432/shop")
        .env("RESTORECLICK__UPLOADS__MAX_FILES", "12")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_files = 12"), "{text}");
    assert!(text.contains("provider = \"stripe\""), "{text}");
    assert!(
        text.contains("postgres://shop:****@db.example:5432/shop"),
        "{text}"
    );
    for secret in ["sk_live_do_not_print", "whsec_do_not_print", "hunter2"] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
}

#[test]
fn invalid_configuration_is_refused_naming_the_key() {
    for (var, value, key) in [
        ("RESTORECLICK__UPLOADS__MAX_FILES", "0", "uploads.max_files"),
        ("RESTORECLICK__APP__PUBLIC_URL", "not a url", "app.public_url"),
        ("RESTORECLICK__PRICING__CURRENCY", "dollars", "pricing.currency"),
    ] {
        let out = restoreclick()
            .arg("check-config")
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{var}: {err}");
    }
}

#[test]
fn production_refuses_the_dev_checkout() {
    let out = restoreclick()
        .arg("check-config")
        .env("APP_ENV", "production")
        .env(
            "RESTORECLICK__APP__SECRET_KEY",
            "a-production-secret-key-of-32-chars!",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("payments.provider"));
}

/// The shipped `app.secret_key` keys every order token: in production it
/// must never work, wherever the binary runs (here outside the repository,
/// with no `production.toml` beside it).
#[test]
fn production_refuses_the_shipped_secret_key_outside_the_repository() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_restoreclick"))
        .current_dir(empty.path())
        .args(["check-config", "--config"])
        .arg(empty.path())
        .env("APP_ENV", "production")
        .env("STRIPE_SECRET_KEY", "sk_live_restoreclick")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_restoreclick")
        .env_remove("RESTORECLICK__APP__SECRET_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success(), "check-config accepted the shipped key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("app.secret_key") && stderr.contains("shipped"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_restoreclick"))
        .current_dir(empty.path())
        .args(["check-config", "--config"])
        .arg(empty.path())
        .env("APP_ENV", "production")
        .env("STRIPE_SECRET_KEY", "sk_live_restoreclick")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_restoreclick")
        .env(
            "RESTORECLICK__APP__SECRET_KEY",
            "d41f0c9a7be2583e6f14a9c07d3b58e2",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("env = \"production\""),
        "APP_ENV chose production: {text}"
    );
}

#[tokio::test]
async fn migrate_applies_the_whole_data_model() {
    let url = common::fresh_database().await;
    let out = restoreclick()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for table in [
        "checkout_sessions",
        "customers",
        "download_links",
        "email_queue",
        "file_uploads",
        "images",
        "order_events",
        "orders",
        "restoration_jobs",
        "upload_sessions",
        "webhook_events",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing from {tables:?}"
        );
    }
    // Status columns refuse states their machines do not have.
    let bad =
        sqlx::query("INSERT INTO upload_sessions (id, status, expires_at) VALUES ($1, 'shipped', now())")
            .bind(uuid::Uuid::now_v7())
            .execute(&pool)
            .await;
    assert!(bad.is_err());
    // Running it again is a no-op.
    let again = restoreclick()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(again.status.success());
}

#[test]
fn restore_runs_the_local_engine_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("scan.jpg");
    let output = dir.path().join("scan-restored.jpg");
    std::fs::write(&input, common::photos::jpeg(160, 120)).unwrap();
    let out = restoreclick()
        .args(["restore", "--provider", "local"])
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = std::fs::read(&output).unwrap();
    assert_ne!(restored, std::fs::read(&input).unwrap());
    let image = image::load_from_memory(&restored).unwrap();
    assert_eq!((image.width(), image.height()), (160, 120));

    let missing = restoreclick()
        .args(["restore", "/no/such/file.jpg"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}
