//! `ImageActor`: drives one photo's restoration job through its state
//! machine. Every step is checkpointed before it is acted on: an attempt is
//! counted before it is submitted, a provider's id is recorded before it is
//! waited on, and the next attempt's time is stored, so a restart resumes
//! exactly where the rows say (a recorded prediction is polled again, never
//! submitted twice; an attempt cut off before its id was recorded counts as
//! spent and the next one starts).

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::RngExt;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    ActorContext,
    order::OrderMsg,
    restoration_pool::{AttemptOutcome, PoolHandle, PoolMsg},
};
use crate::{
    db::{self, jobs::JobRow, orders::ImageRow},
    domain::{ImageStatus, JobStatus, backoff},
    providers::restoration::{ErrorKind, RestoreError, RestoreRequest, Restored},
    storage::keys,
};

pub enum ImageMsg {
    /// Look at the job's row and take its next step.
    Attempt,
    /// The pool's answer for one attempt.
    PoolResult {
        job_id: Uuid,
        attempt: u32,
        outcome: AttemptOutcome,
    },
}

pub struct ImageActor;

pub struct ImageArgs {
    pub ctx: ActorContext,
    pub image_id: Uuid,
    pub pool: PoolHandle,
    pub parent: ActorRef<OrderMsg>,
    pub provider: &'static str,
    /// The photo slot this actor holds while it lives (freed when it stops).
    pub slot: tokio::sync::OwnedSemaphorePermit,
}

pub struct ImageState {
    args: ImageArgs,
    /// The attempt this actor is waiting on, if any. A job found
    /// `processing` while this is `None` was cut off by a crash or restart.
    waiting_on: Option<u32>,
    /// The job's budget of attempts, as its row last said (an operator's
    /// retry raises it).
    max_attempts: u32,
}

impl Actor for ImageActor {
    type Msg = ImageMsg;
    type State = ImageState;
    type Arguments = ImageArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ImageArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(ImageMsg::Attempt)?;
        metrics::gauge!("restoreclick_live_actors", "kind" => "image").increment(1.0);
        Ok(ImageState {
            max_attempts: args.ctx.settings.restoration.max_attempts,
            args,
            waiting_on: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("restoreclick_live_actors", "kind" => "image").decrement(1.0);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(image_id = %state.args.image_id))]
    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Boxed: the actor's resident task holds only a pointer to the work of
        // one message, not room for the largest one (thousands of photos wait).
        Box::pin(state.receive(&myself, msg)).await
    }
}

impl ImageState {
    async fn receive(
        &mut self,
        myself: &ActorRef<ImageMsg>,
        msg: ImageMsg,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ImageMsg::Attempt => self.step(myself).await,
            ImageMsg::PoolResult {
                job_id,
                attempt,
                outcome,
            } => {
                if self.waiting_on != Some(attempt) {
                    return Ok(()); // an answer for an attempt this actor no longer waits on
                }
                self.waiting_on = None;
                match outcome {
                    AttemptOutcome::Restored(restored) => self.completed(myself, job_id, restored).await,
                    AttemptOutcome::Failed(error) => self.failed(myself, job_id, attempt, error).await,
                    AttemptOutcome::Crashed(message) => {
                        Err(format!("the restoration provider crashed: {message}").into())
                    }
                }
            }
        }
    }
}

impl ImageState {
    fn ctx(&self) -> &ActorContext {
        &self.args.ctx
    }

    async fn load(&self) -> Result<(JobRow, ImageRow), ActorProcessingErr> {
        let id = self.args.image_id;
        let db = &self.ctx().db;
        let (job, image) = tokio::try_join!(db::jobs::by_image(db, id), db::orders::image(db, id))?;
        Ok((
            job.ok_or("the image has no restoration job")?,
            image.ok_or("the image is gone")?,
        ))
    }

    /// Takes the next step the rows call for.
    async fn step(&mut self, myself: &ActorRef<ImageMsg>) -> Result<(), ActorProcessingErr> {
        let (job, image) = self.load().await?;
        self.max_attempts = job.max_attempts.max(1) as u32;
        match job.status() {
            JobStatus::Completed | JobStatus::Failed => {
                self.report(myself, job.status() == JobStatus::Completed)
            }
            JobStatus::Pending if image.status() != ImageStatus::Uploaded => {
                Ok(()) // its original was not stored: the order actor retries on its next start
            }
            JobStatus::Pending => self.start_attempt(myself, &job, &image).await,
            JobStatus::Queued => {
                let now = OffsetDateTime::now_utc();
                if let Some(due) = job.next_attempt_at.filter(|due| *due > now) {
                    let wait = Duration::try_from(due - now).unwrap_or_default();
                    myself.send_after(wait, || ImageMsg::Attempt);
                    return Ok(());
                }
                self.start_attempt(myself, &job, &image).await
            }
            JobStatus::Processing if self.waiting_on.is_some() => Ok(()),
            JobStatus::Processing => match &job.external_id {
                Some(external_id) => {
                    tracing::info!(job_id = %job.id, external_id, "resuming a submitted attempt");
                    self.submit(
                        myself,
                        &job,
                        &image,
                        job.attempts as u32,
                        Some(external_id.clone()),
                    )
                }
                None => {
                    let interrupted =
                        RestoreError::transient("the attempt was interrupted before it was submitted");
                    self.failed(myself, job.id, job.attempts as u32, interrupted)
                        .await
                }
            },
        }
    }

    /// The next attempt, counted (and the image marked processing) before it
    /// is handed to the pool.
    async fn start_attempt(
        &mut self,
        myself: &ActorRef<ImageMsg>,
        job: &JobRow,
        image: &ImageRow,
    ) -> Result<(), ActorProcessingErr> {
        let started = db::jobs::begin_attempt(&self.ctx().db, job.id, image.id, self.args.provider).await?;
        let Some(attempt) = started else {
            return Ok(()); // someone else moved it; the next look decides
        };
        tracing::info!(job_id = %job.id, attempt, "attempt started");
        self.submit(myself, job, image, attempt as u32, None)
    }

    fn submit(
        &mut self,
        myself: &ActorRef<ImageMsg>,
        job: &JobRow,
        image: &ImageRow,
        attempt: u32,
        external_id: Option<String>,
    ) -> Result<(), ActorProcessingErr> {
        let request = RestoreRequest {
            job_id: job.id,
            attempt,
            input_key: image.original_key.clone(),
            content_type: image.content_type.clone(),
            output_key: keys::restored(image.order_id, image.position as u32, &image.stem, &image.ext),
            external_id,
        };
        self.waiting_on = Some(attempt);
        self.args.pool.send(PoolMsg::Restore(request, myself.clone()))?;
        Ok(())
    }

    async fn completed(
        &mut self,
        myself: &ActorRef<ImageMsg>,
        job_id: Uuid,
        restored: Restored,
    ) -> Result<(), ActorProcessingErr> {
        db::jobs::finish_restored(
            &self.ctx().db,
            job_id,
            &restored.output_key,
            restored.bytes as i64,
        )
        .await?;
        metrics::counter!("restoreclick_images_total", "outcome" => "completed").increment(1);
        tracing::info!(%job_id, "image restored");
        self.report(myself, true)
    }

    /// A failed attempt: retried later if it may be, else the job fails.
    async fn failed(
        &mut self,
        myself: &ActorRef<ImageMsg>,
        job_id: Uuid,
        attempt: u32,
        error: RestoreError,
    ) -> Result<(), ActorProcessingErr> {
        let settings = &self.ctx().settings.restoration;
        let retry = error.kind == ErrorKind::Transient && attempt < self.max_attempts;
        let mut tx = self.ctx().db.begin().await?;
        if retry {
            let jitter = rand::rng().random_range(0.75..1.25);
            let wait = backoff::next_wait(
                backoff::delay(settings.backoff_base, settings.max_backoff, attempt, jitter),
                error.retry_after,
            );
            let at = OffsetDateTime::now_utc() + wait;
            db::jobs::retry_at(&mut tx, job_id, at, &error.message, error.kind.as_str()).await?;
            tx.commit().await?;
            tracing::warn!(%job_id, attempt, ?wait, error = %error.message, "attempt failed; retrying");
            myself.send_after(wait, || ImageMsg::Attempt);
            return Ok(());
        }
        db::jobs::fail(
            &mut tx,
            job_id,
            JobStatus::Processing,
            &error.message,
            error.kind.as_str(),
        )
        .await?;
        let image_id = self.args.image_id;
        if db::orders::set_image_status(
            &mut tx,
            image_id,
            ImageStatus::Processing,
            ImageStatus::Failed,
            Some(&error.message),
        )
        .await?
        {
            let order_id = db::orders::image(&mut *tx, image_id).await?.map(|i| i.order_id);
            if let Some(order_id) = order_id {
                db::events::append(
                    &mut tx,
                    order_id,
                    Some(image_id),
                    "failed",
                    &json!({"error": error.message}),
                )
                .await?;
            }
        }
        tx.commit().await?;
        metrics::counter!("restoreclick_images_total", "outcome" => "failed").increment(1);
        tracing::warn!(%job_id, attempt, error = %error.message, "image failed");
        self.report(myself, false)
    }

    /// Tells the order actor the image is done, and stops.
    fn report(&self, myself: &ActorRef<ImageMsg>, completed: bool) -> Result<(), ActorProcessingErr> {
        self.args.parent.cast(OrderMsg::ImageFinished {
            image_id: self.args.image_id,
            completed,
        })?;
        myself.stop(None);
        Ok(())
    }
}
