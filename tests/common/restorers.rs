//! A restoration provider a test can steer: hold attempts at a gate, slow
//! them down, or fail them, then let them through. It copies the original.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use restoreclick::{
    providers::restoration::{RecordSubmission, RestoreError, RestoreRequest, Restored, Restorer},
    storage::Storage,
};
use tokio::sync::watch;

use super::{Options, TestApp, spawn_app_with};

pub struct Scripted {
    storage: Storage,
    /// Attempts wait while this is false.
    open: watch::Sender<bool>,
    /// Attempts fail permanently while this is true.
    failing: AtomicBool,
    /// How long each attempt takes once through the gate.
    pub delay: Duration,
    pub calls: AtomicUsize,
}

impl Scripted {
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl Restorer for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn restore<'a>(
        &'a self,
        request: &'a RestoreRequest,
        _record: RecordSubmission,
    ) -> BoxFuture<'a, Result<Restored, RestoreError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut gate = self.open.subscribe();
            let _ = gate.wait_for(|open| *open).await;
            tokio::time::sleep(self.delay).await;
            if self.failing.load(Ordering::SeqCst) {
                return Err(RestoreError::permanent("the model refused this photo"));
            }
            let bytes = self.storage.get(&request.input_key).await?;
            let size = bytes.len() as u64;
            self.storage.put(&request.output_key, bytes).await?;
            Ok(Restored {
                output_key: request.output_key.clone(),
                bytes: size,
            })
        })
    }
}

/// How the scripted provider starts.
#[derive(Default, Clone, Copy)]
pub struct Script {
    pub held: bool,
    pub failing: bool,
    pub delay: Duration,
}

/// The shop with a [`Scripted`] provider working on the shop's own storage
/// directory, and any further settings changed by `tweak`.
pub async fn spawn_scripted(
    script: Script,
    tweak: impl FnOnce(&mut restoreclick::config::Settings) + Send + 'static,
) -> (TestApp, Arc<Scripted>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::local(dir.path()).expect("storage");
    let path = dir.keep();
    let scripted = Arc::new(Scripted {
        storage,
        open: watch::channel(!script.held).0,
        failing: AtomicBool::new(script.failing),
        delay: script.delay,
        calls: AtomicUsize::new(0),
    });
    let app = spawn_app_with(Options {
        restorer: Some(scripted.clone()),
        tweak: Some(Box::new(move |s| {
            s.storage.url = path.display().to_string();
            tweak(s);
        })),
        ..Default::default()
    })
    .await;
    (app, scripted)
}
