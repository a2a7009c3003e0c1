//! The `smtp` sender: any RFC 5321 server through lettre, configured by one
//! URL (`smtp.url`): `smtp://user:pass@host:587?tls=required` for STARTTLS,
//! `smtps://…:465` for TLS from the start. SMTP replies say themselves
//! whether an error is permanent (5xx) or transient (4xx).

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope};

use super::{MailError, MailSender, Sent};
use crate::mail::Composed;

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Smtp {
    pub fn new(url: &str) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError {
                permanent: true,
                message: format!("bad smtp.url: {e}"),
                retry_after: None,
                throttled: false,
            })?
            .timeout(Some(Duration::from_secs(60)))
            .build();
        Ok(Self { transport })
    }
}

impl MailSender for Smtp {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn send<'a>(&'a self, email: &'a Composed) -> BoxFuture<'a, Result<Sent, MailError>> {
        Box::pin(async move {
            let to = email.to.parse().map_err(|e| MailError {
                permanent: true,
                message: format!("bad recipient: {e}"),
                retry_after: None,
                throttled: false,
            })?;
            let envelope =
                Envelope::new(Some(email.from.email.clone()), vec![to]).map_err(|e| MailError {
                    permanent: true,
                    message: e.to_string(),
                    retry_after: None,
                    throttled: false,
                })?;
            match self.transport.send_raw(&envelope, &email.raw).await {
                Ok(response) => Ok(Sent {
                    provider_message_id: response.message().next().map(str::to_owned),
                }),
                Err(e) => Err(MailError {
                    permanent: e.is_permanent(),
                    message: format!("the SMTP server refused: {e}"),
                    retry_after: None,
                    throttled: false,
                }),
            }
        })
    }
}
