//! `Mailer`: drains `email_queue`. Rows are claimed with `FOR NO KEY UPDATE
//! SKIP LOCKED` and a lease (so several instances share the queue, and a
//! row whose sender died is taken again once its lease runs out), sent at
//! most `mail.rate_per_sec` a second, and moved through the email state
//! machine: sent, retried later with backoff (`Retry-After` honoured), or
//! failed for good when the error is permanent or the attempts are spent.

use std::{sync::Arc, time::Duration};

use minijinja::Environment;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::RngExt;
use time::OffsetDateTime;

use super::ActorContext;
use crate::{
    db::{
        self,
        emails::{self, EmailRow},
    },
    domain::{ImageStatus, backoff},
    mail::{self, Attachment},
    providers::mail::{MailError, MailSender, Sent},
};

const EVERY: Duration = Duration::from_secs(1);
/// How long a claimed row stays this instance's.
const LEASE: Duration = Duration::from_secs(120);
/// The longest wait between two attempts of one email.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

pub enum MailerMsg {
    /// Look for due emails.
    Tick,
}

pub struct Mailer;

pub struct MailerArgs {
    pub ctx: ActorContext,
    pub sender: Arc<dyn MailSender>,
    pub owner: String,
}

pub struct MailerState {
    args: MailerArgs,
    templates: Environment<'static>,
}

impl Actor for Mailer {
    type Msg = MailerMsg;
    type State = MailerState;
    type Arguments = MailerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MailerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(MailerMsg::Tick)?;
        myself.send_interval(EVERY, || MailerMsg::Tick);
        Ok(MailerState {
            args,
            templates: mail::environment(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MailerMsg::Tick => state.drain().await,
        }
    }
}

impl MailerState {
    /// Sends what is due, one batch a second's worth of the rate limit.
    async fn drain(&mut self) -> Result<(), ActorProcessingErr> {
        let rate = self.args.ctx.settings.mail.rate_per_sec.max(1);
        let pause = Duration::from_secs(1) / rate;
        let rows = emails::claim_due(
            &self.args.ctx.db,
            &self.args.owner,
            LEASE.as_secs_f64(),
            i64::from(rate),
        )
        .await?;
        for row in rows {
            self.send(&row).await?;
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }

    /// Composes the row's email (attachments included) and hands it to the sender.
    async fn deliver(&self, row: &EmailRow) -> Result<Sent, MailError> {
        let ctx = &self.args.ctx;
        let attachments = self.attachments(row).await.map_err(|e| MailError {
            permanent: false,
            message: format!("cannot read the photos to attach: {e}"),
            retry_after: None,
        })?;
        let email = mail::compose(
            &self.templates,
            &ctx.settings,
            row.id,
            &row.kind,
            &row.to_email,
            &row.payload,
            attachments,
        )
        .map_err(|e| MailError {
            permanent: true,
            message: e.to_string(),
            retry_after: None,
        })?;
        self.args.sender.send(&email).await
    }

    /// The restored photos, for a completion email, when together they are
    /// under `mail.attach_limit`; otherwise the email's link alone.
    async fn attachments(&self, row: &EmailRow) -> Result<Vec<Attachment>, ActorProcessingErr> {
        let (ctx, limit) = (&self.args.ctx, self.args.ctx.settings.mail.attach_limit);
        let Some(order_id) = row.order_id.filter(|_| row.kind == "restoration_complete") else {
            return Ok(Vec::new());
        };
        let images = db::orders::images(&ctx.db, order_id).await?;
        let restored: Vec<_> = images
            .iter()
            .filter(|i| i.status() == ImageStatus::Completed)
            .filter_map(|i| i.restored_key.clone())
            .collect();
        let mut total = 0;
        for key in &restored {
            total += ctx.storage.size(key).await?.unwrap_or(0);
        }
        if total == 0 || total > limit {
            return Ok(Vec::new());
        }
        let mut attachments = Vec::with_capacity(restored.len());
        for key in restored {
            let data = ctx.storage.get(&key).await?.to_vec();
            let filename = key.rsplit('/').next().unwrap_or(&key).to_owned();
            let content_type = image::ImageFormat::from_path(&filename)
                .map_or("application/octet-stream", |f| f.to_mime_type())
                .to_owned();
            attachments.push(Attachment {
                filename,
                content_type,
                data,
            });
        }
        Ok(attachments)
    }

    async fn send(&self, row: &EmailRow) -> Result<(), ActorProcessingErr> {
        let ctx = &self.args.ctx;
        let outcome = self.deliver(row).await;
        let label = match &outcome {
            Ok(sent) => {
                emails::mark_sent(&ctx.db, row.id, sent.provider_message_id.as_deref()).await?;
                tracing::info!(email_id = %row.id, kind = %row.kind, "email sent");
                "sent"
            }
            Err(e) if e.permanent || row.attempts >= row.max_attempts => {
                emails::mark_failed(&ctx.db, row.id, &e.message).await?;
                tracing::error!(email_id = %row.id, kind = %row.kind, error = %e, "email failed for good");
                "failed"
            }
            Err(e) => {
                let jitter = rand::rng().random_range(0.75..1.25);
                let base = ctx.settings.mail.backoff_base;
                let wait = backoff::next_wait(
                    backoff::delay(base, MAX_BACKOFF, row.attempts as u32, jitter),
                    e.retry_after,
                );
                emails::retry_at(&ctx.db, row.id, OffsetDateTime::now_utc() + wait, &e.message).await?;
                tracing::warn!(email_id = %row.id, kind = %row.kind, ?wait, error = %e, "email will be retried");
                "retried"
            }
        };
        metrics::counter!("restoreclick_emails_total", "kind" => row.kind.clone(), "outcome" => label)
            .increment(1);
        Ok(())
    }
}
