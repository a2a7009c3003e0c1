//! `Mailer`: drains `email_queue`. Rows are claimed one at a time with `FOR
//! NO KEY UPDATE SKIP LOCKED` and a lease (so several instances share the
//! queue, no lease runs out while a batch is sending, and a row whose sender
//! died is taken again once its lease runs out; at once by the same
//! instance restarted under its name), sent at most `mail.rate_per_sec` a
//! second, and moved through the email state machine: sent, retried later
//! with backoff (`Retry-After` honoured; a 429 spends no attempt), or failed
//! for good when the error is permanent or the attempts are spent. Every
//! write is fenced by this instance's name. A send the provider accepted is
//! never repeated by this instance: if recording it fails, the provider's id
//! is kept here and recorded first at the next look.

use std::{sync::Arc, time::Duration};

use minijinja::Environment;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::RngExt;
use uuid::Uuid;

use super::{ActorContext, weather};
use crate::{
    db::{
        self,
        emails::{self, EmailRow},
    },
    domain::{ImageStatus, backoff},
    mail::{self, Attachment},
    providers::mail::{MailError, MailSender, Sent},
};

/// The pause between two looks at the queue (counted from the end of one).
const EVERY: Duration = Duration::from_secs(1);
/// How long a claimed row stays this instance's: longer than one send.
const LEASE: Duration = Duration::from_secs(120);
/// The longest wait between two attempts of one email.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

pub enum MailerMsg {
    /// Look for due emails; the look schedules the next one when it ends,
    /// so a stalled send leaves one tick pending, never a pile.
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
    /// Whether the queue has been looked at: the first look also takes back
    /// the rows this instance's name held before a restart.
    looked: bool,
    /// Emails the provider accepted whose `sent` could not be recorded yet
    /// (the database was away): recorded before anything else is sent.
    unrecorded: Vec<(Uuid, Sent)>,
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
        Ok(MailerState {
            args,
            templates: mail::environment(),
            looked: false,
            unrecorded: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MailerMsg::Tick => {
                metrics::counter!("restoreclick_actor_ticks_total", "actor" => "mailer").increment(1);
                // A bug in the mailer, for the fault suite: it fails, and its restarts spend the root's budget.
                fail::fail_point!("mailer::tick", |_| Err("failpoint mailer::tick".into()));
                let drained = state.drain().await;
                myself.send_after(EVERY, || MailerMsg::Tick);
                match drained {
                    Err(e) if weather::is_transient(&e) => {
                        tracing::warn!(error = %e, "cannot drain the email queue; trying again at the next look");
                        Ok(())
                    }
                    other => other,
                }
            }
        }
    }
}

impl MailerState {
    /// Records what was sent but not recorded, then sends what is due, one
    /// row at a time, a second's worth of the rate limit.
    async fn drain(&mut self) -> Result<(), ActorProcessingErr> {
        self.record_unrecorded().await?;
        let rate = self.args.ctx.settings.mail.rate_per_sec.max(1);
        let pause = Duration::from_secs(1) / rate;
        for _ in 0..rate {
            let include_own = !self.looked;
            let row = emails::claim_due(
                &self.args.ctx.db,
                &self.args.owner,
                LEASE.as_secs_f64(),
                1,
                include_own,
            )
            .await?;
            self.looked = true;
            let Some(row) = row.into_iter().next() else {
                break;
            };
            self.send(&row).await?;
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }

    async fn record_unrecorded(&mut self) -> Result<(), ActorProcessingErr> {
        while let Some((id, sent)) = self.unrecorded.first() {
            emails::mark_sent(
                &self.args.ctx.db,
                *id,
                &self.args.owner,
                sent.provider_message_id.as_deref(),
            )
            .await?;
            tracing::info!(email_id = %id, "a sent email recorded late");
            self.unrecorded.remove(0);
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
            throttled: false,
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
            throttled: false,
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

    async fn send(&mut self, row: &EmailRow) -> Result<(), ActorProcessingErr> {
        let outcome = self.deliver(row).await;
        let (ctx, owner) = (&self.args.ctx, self.args.owner.as_str());
        let label = match outcome {
            Ok(sent) => {
                tracing::info!(email_id = %row.id, kind = %row.kind, "email sent");
                metrics::counter!("restoreclick_emails_total", "kind" => row.kind.clone(), "outcome" => "sent")
                    .increment(1);
                if let Err(e) =
                    emails::mark_sent(&ctx.db, row.id, owner, sent.provider_message_id.as_deref()).await
                {
                    // Sent, not recorded: kept, so that it is recorded, never sent again.
                    self.unrecorded.push((row.id, sent));
                    return Err(e.into());
                }
                return Ok(());
            }
            Err(e) if e.permanent || (!e.throttled && row.attempts >= row.max_attempts) => {
                emails::mark_failed(&ctx.db, row.id, owner, &e.message).await?;
                tracing::error!(email_id = %row.id, kind = %row.kind, error = %e, "email failed for good");
                "failed"
            }
            Err(e) => {
                let wait = retry_wait(ctx, row, &e);
                emails::retry_after(&ctx.db, row.id, owner, wait, &e.message, e.throttled).await?;
                tracing::warn!(email_id = %row.id, kind = %row.kind, ?wait, throttled = e.throttled, error = %e,
                               "email will be retried");
                if e.throttled { "throttled" } else { "retried" }
            }
        };
        metrics::counter!("restoreclick_emails_total", "kind" => row.kind.clone(), "outcome" => label)
            .increment(1);
        Ok(())
    }
}

/// The wait before an email's next try: what the provider asked (plus
/// jitter) after a 429, else backoff by attempts.
fn retry_wait(ctx: &ActorContext, row: &EmailRow, e: &MailError) -> Duration {
    let jitter: f64 = rand::rng().random_range(0.75..1.25);
    if e.throttled {
        return e
            .retry_after
            .unwrap_or(Duration::from_secs(1))
            .mul_f64(jitter.max(1.0));
    }
    let base = ctx.settings.mail.backoff_base;
    backoff::next_wait(
        backoff::delay(base, MAX_BACKOFF, row.attempts as u32, jitter),
        e.retry_after,
    )
}
