//! The `outbox` sender: every email becomes `{outbox.dir}/{row id}.eml`, a
//! complete RFC 5322 message. Written to a temporary name and renamed, so a
//! reader never sees half a file and sending the same row twice leaves one.

use std::path::PathBuf;

use futures::future::BoxFuture;

use super::{MailError, MailSender, Sent};
use crate::mail::Composed;

pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl MailSender for Outbox {
    fn name(&self) -> &'static str {
        "outbox"
    }

    fn send<'a>(&'a self, email: &'a Composed) -> BoxFuture<'a, Result<Sent, MailError>> {
        Box::pin(async move {
            let failed = |e: std::io::Error| MailError {
                permanent: false,
                message: format!("cannot write to the outbox {}: {e}", self.dir.display()),
                retry_after: None,
                throttled: false,
            };
            tokio::fs::create_dir_all(&self.dir).await.map_err(failed)?;
            let name = format!("{}.eml", email.id.simple());
            let partial = self.dir.join(format!(".{name}.partial"));
            tokio::fs::write(&partial, &email.raw).await.map_err(failed)?;
            tokio::fs::rename(&partial, self.dir.join(&name))
                .await
                .map_err(failed)?;
            Ok(Sent {
                provider_message_id: Some(name),
            })
        })
    }
}
