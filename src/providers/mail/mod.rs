//! Mail senders: one trait, chosen by `mail.provider`: `sendgrid`, `smtp`,
//! or `outbox` (the embedded default), which writes each email as an `.eml`
//! file.

pub mod outbox;
pub mod sendgrid;
pub mod smtp;

use std::time::Duration;

use futures::future::BoxFuture;

use crate::mail::Composed;

/// An accepted email.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The provider's id for it (SendGrid's `X-Message-Id`, the outbox file name).
    pub provider_message_id: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct MailError {
    /// Retrying cannot help (a refused address, a bad request).
    pub permanent: bool,
    pub message: String,
    /// When the provider said how long to wait.
    pub retry_after: Option<Duration>,
    /// The provider turned the email away unsent (429): the try spends no
    /// attempt.
    pub throttled: bool,
}

pub trait MailSender: Send + Sync {
    fn name(&self) -> &'static str;
    fn send<'a>(&'a self, email: &'a Composed) -> BoxFuture<'a, Result<Sent, MailError>>;
}
