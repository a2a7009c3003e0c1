//! `ImageActor`: drives one photo's restoration job through its state
//! machine, one chain step after another (repair → faces → colorize →
//! upscale, as the photo was sold): each step's input is the previous
//! step's stored output, and a step's output is stored and recorded before
//! the next begins, so a restart resumes at the first unfinished step and
//! never recomputes a finished one. Every step is checkpointed before it is acted on: an attempt is
//! counted before it is submitted, a provider's id is recorded before it is
//! waited on, and the next attempt's time is stored, so a restart resumes
//! exactly where the rows say (a recorded prediction is polled again, never
//! submitted twice; an attempt cut off before its id was recorded counts as
//! spent and the next one starts).

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::RngExt;
use uuid::Uuid;

use super::{
    ActorContext,
    order::OrderMsg,
    restoration_pool::{AttemptOutcome, PoolHandle, PoolMsg},
    weather::{self, Backoff},
};
use crate::{
    db::{
        self,
        jobs::{Begun, JobRow},
        orders::ImageRow,
    },
    domain::{
        ImageStatus, JobStatus, backoff,
        chain::{self, Step},
    },
    providers::restoration::{ErrorKind, RestoreError, RestoreRequest, Restored},
    storage::keys,
};

/// How long a finished prediction's output can still be fetched (Replicate
/// deletes API outputs about an hour after the prediction ends).
const OUTPUT_LIFETIME: Duration = Duration::from_secs(55 * 60);
/// When the rows say there is nothing to start, look again this late (a
/// lease or an original on its way; the order actor stops this one if the
/// photo is no longer ours).
const RECHECK: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub enum ImageMsg {
    /// Look at the job's row and take its next step.
    Attempt,
    /// The pool's answer for one attempt.
    PoolResult {
        job_id: Uuid,
        attempt: u32,
        outcome: AttemptOutcome,
    },
    /// Fetch the result of attempt `attempt`'s finished work again (its
    /// download or storage failed): the same prediction, not a new one.
    /// `external_id` is that prediction, for when its id could not be
    /// recorded (the database was away when it was made).
    Resume { attempt: u32, external_id: String },
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
    /// Retries of a step that met weather (the database or storage away).
    backoff: Backoff,
    /// Since when this attempt's finished result has been failing to arrive.
    resuming_since: Option<Instant>,
    /// This actor began an attempt and did not hear whether it was counted
    /// (the database went away mid-commit). A job then found `processing`
    /// with no prediction is that attempt, never handed to the pool: it is
    /// submitted, not charged as an interruption.
    begun_unheard: bool,
    /// The chain step of the attempt handed to the pool: its position and
    /// whether it is the photo's last.
    running: Option<Running>,
}

/// The chain step an attempt runs.
#[derive(Debug, Clone, Copy)]
struct Running {
    position: i32,
    last: bool,
    /// The job's attempts when this step began (a step's backoff starts
    /// afresh).
    attempts_from: u32,
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
            backoff: Backoff::default(),
            resuming_since: None,
            begun_unheard: false,
            running: None,
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
        let again = msg.clone();
        let answer_for = match &msg {
            ImageMsg::PoolResult { attempt, .. } => Some(*attempt),
            _ => None,
        };
        // Boxed: the actor's resident task holds only a pointer to the work of
        // one message, not room for the largest one (thousands of photos wait).
        let result = Box::pin(state.receive(&myself, msg)).await;
        // Weather: the same step again after a wait, with nothing lost.
        if weather::settle(result, &mut state.backoff, &myself, Some(again))? && answer_for.is_some() {
            state.waiting_on = answer_for;
        }
        Ok(())
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
                    AttemptOutcome::Restored(restored) => {
                        self.completed(myself, job_id, attempt, restored).await
                    }
                    AttemptOutcome::Failed(error) => self.failed(myself, job_id, attempt, error).await,
                    AttemptOutcome::Crashed(message) => {
                        Err(format!("the restoration provider crashed: {message}").into())
                    }
                }
            }
            ImageMsg::Resume { attempt, external_id } => {
                let (job, image) = self.load().await?;
                if job.status() == JobStatus::Processing && job.attempts as u32 == attempt {
                    let external_id = job.external_id.clone().unwrap_or(external_id);
                    tracing::info!(job_id = %job.id, external_id, "fetching a finished attempt's result again");
                    self.submit(myself, &job, &image, attempt, Some(external_id))
                        .await
                } else {
                    self.step(myself).await
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
                // Its original is not stored yet: the order actor stores it.
                myself.send_after(RECHECK, || ImageMsg::Attempt);
                Ok(())
            }
            JobStatus::Pending | JobStatus::Queued => self.start_attempt(myself, &job, &image).await,
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
                    .await
                }
                None if self.begun_unheard => {
                    self.begun_unheard = false;
                    tracing::info!(job_id = %job.id, attempt = job.attempts, "an attempt counted while the database was away; submitting it");
                    self.submit(myself, &job, &image, job.attempts as u32, None).await
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
    /// is handed to the pool. Whether a retry is due is the database's
    /// answer, by its clock, and the timer follows it.
    async fn start_attempt(
        &mut self,
        myself: &ActorRef<ImageMsg>,
        job: &JobRow,
        image: &ImageRow,
    ) -> Result<(), ActorProcessingErr> {
        // Cleared once the answer is heard; left set if the commit's answer is lost.
        self.begun_unheard = true;
        let ctx = self.ctx();
        let begun =
            db::jobs::begin_attempt(&ctx.db, job.id, image.id, self.args.provider, &ctx.owner).await?;
        // The commit's answer lost on its way back, as when the database stops mid-reply.
        fail::fail_point!("image::begin_unheard", |_| Err(sqlx::Error::PoolTimedOut.into()));
        self.begun_unheard = false;
        match begun {
            Begun::Started(attempt) => {
                tracing::info!(job_id = %job.id, attempt, step = job.step, "attempt started");
                self.submit(myself, job, image, attempt as u32, None).await
            }
            Begun::NotDue(wait) => {
                // A little past the due time, so the database agrees it has come.
                myself.send_after(wait + Duration::from_millis(20), || ImageMsg::Attempt);
                Ok(())
            }
            Begun::Moved => {
                myself.send_after(RECHECK, || ImageMsg::Attempt);
                Ok(())
            }
        }
    }

    /// Hands attempt `attempt` of the job's current chain step to the pool:
    /// on the original for the repair, on the previous step's stored output
    /// after it; the last step writes the restored photo, the others their
    /// own output under `steps/`.
    async fn submit(
        &mut self,
        myself: &ActorRef<ImageMsg>,
        job: &JobRow,
        image: &ImageRow,
        attempt: u32,
        external_id: Option<String>,
    ) -> Result<(), ActorProcessingErr> {
        let steps = chain::steps_of(&image.options)?;
        let position = job.step.max(0) as usize;
        let step: Step = *steps
            .get(position)
            .ok_or_else(|| format!("the job is on step {position} of a chain of {}", steps.len()))?;
        let last = position + 1 == steps.len();
        let (input_key, content_type) = if position == 0 {
            (image.original_key.clone(), image.content_type.clone())
        } else {
            let key = db::jobs::step_output(&self.ctx().db, image.id, job.step - 1)
                .await?
                .ok_or_else(|| format!("step {} has no stored output", job.step - 1))?;
            let content_type = ::image::ImageFormat::from_path(&key)
                .map_or(image.content_type.as_str(), |f| f.to_mime_type())
                .to_owned();
            (key, content_type)
        };
        let (order, photo) = (image.order_id, image.position as u32);
        let output_key = if last {
            keys::restored(order, photo, &image.stem, &image.ext)
        } else {
            keys::step_output(
                order,
                photo,
                &image.stem,
                position as u32,
                step.as_str(),
                &image.ext,
            )
        };
        let request = RestoreRequest {
            job_id: job.id,
            attempt,
            input_key,
            content_type,
            output_key,
            external_id,
            step,
            seed: job.seed.map(|s| s as u64),
        };
        self.running = Some(Running {
            position: job.step,
            last,
            attempts_from: job.step_attempts_from.max(0) as u32,
        });
        self.waiting_on = Some(attempt);
        self.args.pool.send(PoolMsg::Restore(request, myself.clone()))?;
        Ok(())
    }

    async fn completed(
        &mut self,
        myself: &ActorRef<ImageMsg>,
        job_id: Uuid,
        attempt: u32,
        restored: Restored,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = self.ctx();
        let Some(running) = self.running else {
            return self.look_again(myself);
        };
        if !running.last {
            let written = db::jobs::advance_step(
                &ctx.db,
                job_id,
                attempt as i32,
                &ctx.owner,
                running.position,
                &restored.output_key,
                restored.bytes as i64,
                ctx.settings.restoration.max_attempts as i32,
            )
            .await?;
            self.resuming_since = None;
            if !written {
                return self.look_again(myself);
            }
            tracing::info!(%job_id, step = running.position, "step finished; the next one starts");
            myself.cast(ImageMsg::Attempt)?;
            return Ok(());
        }
        let written = db::jobs::finish_restored(
            &ctx.db,
            job_id,
            attempt as i32,
            &ctx.owner,
            &restored.output_key,
            restored.bytes as i64,
        )
        .await?;
        self.resuming_since = None;
        if !written {
            return self.look_again(myself);
        }
        metrics::counter!("restoreclick_images_total", "outcome" => "completed").increment(1);
        tracing::info!(%job_id, "image restored");
        self.report(myself, true)
    }

    /// A failed attempt. A finished prediction whose result did not arrive
    /// is fetched again (within its output's lifetime); a try the provider
    /// turned away, or that met the shop's own outage, is retried without
    /// spending an attempt (for `restoration.throttle_deadline` in a row);
    /// anything else spends the attempt, and is retried if it may be, or
    /// fails the photo.
    async fn failed(
        &mut self,
        myself: &ActorRef<ImageMsg>,
        job_id: Uuid,
        attempt: u32,
        error: RestoreError,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(external_id) = error.resume.clone() {
            let since = *self.resuming_since.get_or_insert_with(Instant::now);
            if since.elapsed() < OUTPUT_LIFETIME {
                let wait = self.backoff.wait();
                tracing::warn!(%job_id, attempt, ?wait, error = %error.message, "the result did not arrive; fetching it again");
                myself.send_after(wait, move || ImageMsg::Resume { attempt, external_id });
                return Ok(());
            }
        }
        self.resuming_since = None;
        let ctx = self.ctx().clone();
        let settings = &ctx.settings.restoration;
        let jitter = rand::rng().random_range(0.75..1.25);
        // Each step backs off from its own first attempt.
        let step_attempt = attempt
            .saturating_sub(self.running.map_or(0, |r| r.attempts_from))
            .max(1);
        let backoff = backoff::delay(settings.backoff_base, settings.max_backoff, step_attempt, jitter);
        let wait = backoff::next_wait(backoff, error.retry_after.map(|w| w.mul_f64(jitter.max(1.0))));
        let mut tx = ctx.db.begin().await?;
        if !error.kind.is_charged()
            && db::jobs::retry_after(
                &mut tx,
                job_id,
                attempt as i32,
                &ctx.owner,
                wait,
                &error.message,
                error.kind.as_str(),
                Some(settings.throttle_deadline),
            )
            .await?
        {
            tx.commit().await?;
            tracing::warn!(%job_id, attempt, ?wait, kind = error.kind.as_str(), error = %error.message,
                           "the attempt did not run; retrying without spending it");
            myself.send_after(wait, || ImageMsg::Attempt);
            return Ok(());
        }
        let retry = error.kind != ErrorKind::Permanent && attempt < self.max_attempts;
        if retry {
            let kind = if error.kind.is_charged() {
                error.kind
            } else {
                ErrorKind::Transient
            };
            let written = db::jobs::retry_after(
                &mut tx,
                job_id,
                attempt as i32,
                &ctx.owner,
                wait,
                &error.message,
                kind.as_str(),
                None,
            )
            .await?;
            tx.commit().await?;
            if !written {
                return self.look_again(myself);
            }
            tracing::warn!(%job_id, attempt, ?wait, error = %error.message, "attempt failed; retrying");
            myself.send_after(wait, || ImageMsg::Attempt);
            return Ok(());
        }
        let kind = if error.kind.is_charged() {
            error.kind
        } else {
            ErrorKind::Transient
        };
        let written = db::jobs::fail_attempt(
            &mut *tx,
            job_id,
            attempt as i32,
            &ctx.owner,
            &error.message,
            kind.as_str(),
        )
        .await?;
        tx.commit().await?;
        if !written {
            return self.look_again(myself);
        }
        metrics::counter!("restoreclick_images_total", "outcome" => "failed").increment(1);
        tracing::warn!(%job_id, attempt, error = %error.message, "image failed");
        self.report(myself, false)
    }

    /// A completion write was fenced off (the attempt moved on, or the order
    /// is no longer this instance's): look at the rows again a little later;
    /// the order actor stops this one if the photo is no longer ours.
    fn look_again(&self, myself: &ActorRef<ImageMsg>) -> Result<(), ActorProcessingErr> {
        myself.send_after(RECHECK, || ImageMsg::Attempt);
        Ok(())
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
