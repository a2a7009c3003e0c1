//! The customer's whole journey in a real browser: headless Chromium
//! (Debian's), driven by Playwright (`tests/browser/journey.mjs`) against
//! the real shop on its embedded defaults — the dev checkout and the local
//! restoration engine. Screenshots land in `artifacts/screenshots/` (or
//! `$RESTORECLICK_ARTIFACTS/screenshots/`), the ZIP in `…/downloads/`.
//! `scripts/services --browser` installs what it needs.

mod common;

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::Command,
};

use common::{Options, shop::free_port, spawn_app_with};

fn artifacts() -> PathBuf {
    std::env::var_os("RESTORECLICK_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts"))
}

fn node(script_dir: &Path, args: &[&str], envs: &[(&str, String)]) -> std::process::Output {
    Command::new("node")
        .current_dir(script_dir)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run node (scripts/services --browser installs Node.js)")
}

#[tokio::test]
async fn a_customer_uploads_pays_watches_compares_and_downloads_in_a_browser() {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        scripts.join("node_modules/playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Chromium and playwright-core: run scripts/services --browser"
    );
    // The dev checkout sends the browser on to app.public_url: the shop must
    // know its own address before it binds.
    let port = free_port();
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(move |s| {
            s.http.addr = format!("127.0.0.1:{port}").parse().expect("addr");
            s.app.public_url = format!("http://127.0.0.1:{port}");
            s.restoration.provider = Some(restoreclick::config::RestorationProvider::Local);
        })),
        ..Default::default()
    })
    .await;

    let inputs = tempfile::tempdir().unwrap();
    let made = node(
        &scripts,
        &["make-photos.mjs", &inputs.path().display().to_string()],
        &[],
    );
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let input = |name: &str| inputs.path().join(name).display().to_string();
    let screenshots = artifacts().join("screenshots");
    let downloads = artifacts().join("downloads");
    let _ = std::fs::remove_dir_all(&screenshots);

    let run = tokio::task::spawn_blocking({
        let (scripts, envs) = (
            scripts.clone(),
            vec![
                ("BASE_URL", app.address.clone()),
                (
                    "PHOTOS",
                    format!("{}:{}", input("grandma.png"), input("wedding-1962.png")),
                ),
                ("BAD_FILE", input("notes.jpg")),
                ("SCREENSHOTS", screenshots.display().to_string()),
                ("DOWNLOADS", downloads.display().to_string()),
            ],
        );
        move || node(&scripts, &["journey.mjs"], &envs)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "the journey failed (screenshots in {}):\n{stdout}\n{}",
        screenshots.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("journey: 7 passed, 0 failed"), "{stdout}");
    for shot in [
        "01-upload.png",
        "02-dev-checkout.png",
        "04-completed.png",
        "05-compare.png",
        "06-phone.png",
    ] {
        assert!(screenshots.join(shot).is_file(), "{shot} missing");
    }

    // What the browser saved is the order's ZIP, with both restored photos.
    let mut zip = zip::ZipArchive::new(std::fs::File::open(downloads.join("order.zip")).unwrap()).unwrap();
    let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n.contains("grandma")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("wedding-1962")), "{names:?}");
    // Upscaled 2× as chosen: both sides twice the original's.
    let grandma = names.iter().position(|n| n.contains("grandma")).unwrap();
    let mut first = Vec::new();
    zip.by_index(grandma).unwrap().read_to_end(&mut first).unwrap();
    let restored = image::load_from_memory(&first).expect("a restored photo in the ZIP decodes");
    let original = image::open(input("grandma.png")).unwrap();
    assert_eq!(
        (restored.width(), restored.height()),
        (original.width() * 2, original.height() * 2)
    );
    assert_eq!(
        app.count("SELECT count(*) FROM refunds WHERE reason = 'customer'")
            .await,
        1,
        "the photo refunded in the browser"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'completed'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM file_uploads").await,
        2,
        "the bad file was never stored"
    );
}
