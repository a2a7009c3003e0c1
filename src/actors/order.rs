//! `OrderActor`: drives one paid order to its outcome.
//!
//! It brings the photos from temp storage into `originals/` (copy-then-delete,
//! safe to repeat; each image checkpointed `uploaded` after its move), runs
//! one linked `ImageActor` per unfinished photo (as photo slots allow:
//! `restoration.max_live_photos`), restarts a crashed one from
//! its job row within a budget, and when every photo is done has the
//! outcome workflow record the order's outcome (`shop::outcome`).

use std::collections::{HashMap, HashSet, VecDeque};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use super::{
    ActorContext,
    image::{ImageActor, ImageArgs},
    restoration_pool::PoolHandle,
    weather::{self, Backoff},
};
use crate::{
    db::{self, orders::ImageRow},
    domain::{ImageStatus, JobStatus, OrderStatus},
    shop,
    storage::StorageError,
};

/// The reason an order actor stops with once its order is finished.
pub const FINISHED: &str = "order finished";

/// Restarts allowed per photo before it is failed.
const IMAGE_RESTART_BUDGET: u32 = 3;

pub enum OrderMsg {
    /// Resume the order from its rows.
    Start,
    /// One photo reached its end.
    ImageFinished { image_id: Uuid, completed: bool },
    /// The order was refunded: stop working on it.
    Refunded,
    /// A photo slot freed up for the order's next waiting photo.
    Admitted(OwnedSemaphorePermit),
    /// A photo whose actor kept crashing fails.
    FailImage { image_id: Uuid, reason: String },
}

impl OrderMsg {
    /// The same message, to try again after weather (a slot cannot be
    /// copied; its photo is admitted again instead).
    fn again(&self) -> Option<OrderMsg> {
        match self {
            OrderMsg::Start => Some(OrderMsg::Start),
            OrderMsg::ImageFinished { image_id, completed } => Some(OrderMsg::ImageFinished {
                image_id: *image_id,
                completed: *completed,
            }),
            OrderMsg::FailImage { image_id, reason } => Some(OrderMsg::FailImage {
                image_id: *image_id,
                reason: reason.clone(),
            }),
            OrderMsg::Refunded | OrderMsg::Admitted(_) => None,
        }
    }
}

pub struct OrderActor;

pub struct OrderArgs {
    pub ctx: ActorContext,
    pub order_id: Uuid,
    pub pool: PoolHandle,
    pub provider: &'static str,
}

pub struct OrderState {
    args: OrderArgs,
    children: HashMap<ActorId, Uuid>,
    remaining: HashSet<Uuid>,
    restarts: HashMap<Uuid, u32>,
    /// Unfinished photos still waiting for a photo slot, in order.
    waiting: VecDeque<Uuid>,
    /// Retries of a step that met weather (the database or storage away).
    backoff: Backoff,
}

impl Actor for OrderActor {
    type Msg = OrderMsg;
    type State = OrderState;
    type Arguments = OrderArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: OrderArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        metrics::gauge!("restoreclick_live_actors", "kind" => "order").increment(1.0);
        Ok(OrderState {
            args,
            children: HashMap::new(),
            remaining: HashSet::new(),
            restarts: HashMap::new(),
            waiting: VecDeque::new(),
            backoff: Backoff::default(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("restoreclick_live_actors", "kind" => "order").decrement(1.0);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(order_id = %state.args.order_id))]
    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let again = msg.again();
        // Boxed, so each live order's task stays small while it waits.
        let result = Box::pin(state.receive(&myself, msg)).await;
        // Weather: the same step again after a wait; no restart is spent and
        // no photo fails because a dependency was away.
        weather::settle(result, &mut state.backoff, &myself, again).map(drop)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        Box::pin(state.supervise(&myself, event)).await
    }
}

impl OrderState {
    async fn receive(
        &mut self,
        myself: &ActorRef<OrderMsg>,
        msg: OrderMsg,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrderMsg::Start => self.start(myself).await,
            OrderMsg::ImageFinished { image_id, completed } => {
                tracing::debug!(%image_id, completed, "image finished");
                self.remaining.remove(&image_id);
                self.finish_if_done(myself).await
            }
            OrderMsg::Admitted(slot) => {
                if let Some(image_id) = self.waiting.pop_front() {
                    self.spawn_image(myself, image_id, slot).await?;
                }
                self.wait_for_slot(myself);
                Ok(())
            }
            OrderMsg::FailImage { image_id, reason } => {
                self.fail_image(image_id, &reason).await?;
                self.remaining.remove(&image_id);
                self.finish_if_done(myself).await
            }
            OrderMsg::Refunded => {
                // The refund's transaction cancelled the unfinished photos.
                tracing::info!("order refunded; its work stops");
                myself.stop_children(Some("refunded".into()));
                myself.stop(Some("refunded".into()));
                Ok(())
            }
        }
    }

    /// A photo's actor stopped: a crash is restarted from its job row within
    /// a budget, past which the photo fails.
    async fn supervise(
        &mut self,
        myself: &ActorRef<OrderMsg>,
        event: SupervisionEvent,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            let Some(image_id) = self.children.remove(&cell.get_id()) else {
                return Ok(());
            };
            let restarts = self.restarts.entry(image_id).or_default();
            *restarts += 1;
            if *restarts <= IMAGE_RESTART_BUDGET {
                tracing::warn!(%image_id, restarts = *restarts, %error, "image actor failed; restarting from its job row");
                self.admit(myself, image_id).await?;
            } else {
                tracing::error!(%image_id, %error, "image actor keeps failing; the photo fails");
                myself.cast(OrderMsg::FailImage {
                    image_id,
                    reason: format!("restoration kept crashing: {error}"),
                })?;
            }
        } else if let SupervisionEvent::ActorTerminated(cell, _, _) = event {
            self.children.remove(&cell.get_id());
        }
        Ok(())
    }
}

impl OrderState {
    fn ctx(&self) -> &ActorContext {
        &self.args.ctx
    }

    async fn start(&mut self, myself: &ActorRef<OrderMsg>) -> Result<(), ActorProcessingErr> {
        let Some(order) = db::orders::get(&self.ctx().db, self.args.order_id).await? else {
            myself.stop(Some("order gone".into()));
            return Ok(());
        };
        if order.status() != OrderStatus::Processing {
            myself.stop(Some("order not processing".into()));
            return Ok(());
        }
        let mut images = db::orders::images(&self.ctx().db, self.args.order_id).await?;
        self.store_originals(&mut images).await?;
        for image in images.iter().filter(|i| !i.status().is_terminal()) {
            self.remaining.insert(image.id);
            // A start tried again after weather skips the photos it already admitted.
            let live = self.children.values().any(|id| *id == image.id) || self.waiting.contains(&image.id);
            if !live {
                self.admit(myself, image.id).await?;
            }
        }
        self.finish_if_done(myself).await
    }

    /// Gives the photo its actor if a photo slot is free, else queues it
    /// behind the order's other waiting photos.
    async fn admit(&mut self, myself: &ActorRef<OrderMsg>, image_id: Uuid) -> Result<(), ActorProcessingErr> {
        if self.waiting.is_empty()
            && let Ok(slot) = self.ctx().photo_slots.clone().try_acquire_owned()
        {
            return self.spawn_image(myself, image_id, slot).await;
        }
        self.waiting.push_back(image_id);
        if self.waiting.len() == 1 {
            self.wait_for_slot(myself);
        }
        Ok(())
    }

    /// One task per order waits (in the semaphore's fair queue) for the next
    /// slot and hands it to the order.
    fn wait_for_slot(&self, myself: &ActorRef<OrderMsg>) {
        if self.waiting.is_empty() {
            return;
        }
        let (slots, me) = (self.ctx().photo_slots.clone(), myself.clone());
        tokio::spawn(async move {
            if let Ok(slot) = slots.acquire_owned().await {
                // An order actor gone meanwhile drops the slot with the message.
                let _ = me.cast(OrderMsg::Admitted(slot));
            }
        });
    }

    async fn spawn_image(
        &mut self,
        myself: &ActorRef<OrderMsg>,
        image_id: Uuid,
        slot: OwnedSemaphorePermit,
    ) -> Result<(), ActorProcessingErr> {
        let args = ImageArgs {
            ctx: self.ctx().clone(),
            image_id,
            pool: self.args.pool.clone(),
            parent: myself.clone(),
            provider: self.args.provider,
            slot,
        };
        let (child, _) = Actor::spawn_linked(None, ImageActor, args, myself.get_cell()).await?;
        self.children.insert(child.get_id(), image_id);
        Ok(())
    }

    /// Moves every `pending` photo from temp into originals (all at once),
    /// then records them `uploaded` in one statement; a photo whose upload
    /// is gone fails. `images` are updated to what was recorded.
    async fn store_originals(&self, images: &mut [ImageRow]) -> Result<(), ActorProcessingErr> {
        let storage = &self.ctx().storage;
        let pending: Vec<&ImageRow> = images
            .iter()
            .filter(|i| i.status() == ImageStatus::Pending)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let moves = pending
            .iter()
            .map(|i| storage.move_object(&i.temp_key, &i.original_key, i.bytes.max(0) as u64));
        let mut stored = Vec::new();
        let mut lost = Vec::new();
        for (image, moved) in pending.iter().zip(futures::future::join_all(moves).await) {
            match moved {
                Ok(()) => stored.push(image.id),
                Err(StorageError::NotFound(_)) => {
                    tracing::error!(image_id = %image.id, "the photo is missing from temp storage");
                    lost.push(image.id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let order_id = self.args.order_id;
        let mut tx = self.ctx().db.begin().await?;
        db::orders::originals_stored(&mut tx, order_id, &stored).await?;
        let reason = "the uploaded photo was lost before it could be stored";
        for &image_id in &lost {
            if db::orders::set_image_status(
                &mut tx,
                image_id,
                ImageStatus::Pending,
                ImageStatus::Failed,
                Some(reason),
            )
            .await?
            {
                if let Some(job) = db::jobs::by_image(&mut *tx, image_id).await? {
                    db::jobs::fail(&mut tx, job.id, JobStatus::Pending, reason, "permanent").await?;
                }
                db::events::append(
                    &mut tx,
                    order_id,
                    Some(image_id),
                    "failed",
                    &json!({"error": reason}),
                )
                .await?;
            }
        }
        tx.commit().await?;
        for image in images.iter_mut() {
            if stored.contains(&image.id) {
                image.status = ImageStatus::Uploaded.as_str().to_owned();
            } else if lost.contains(&image.id) {
                image.status = ImageStatus::Failed.as_str().to_owned();
            }
        }
        tracing::info!(stored = stored.len(), lost = lost.len(), "originals stored");
        Ok(())
    }

    /// A photo whose actor cannot go on fails, whatever step it was at.
    async fn fail_image(&self, image_id: Uuid, reason: &str) -> Result<(), ActorProcessingErr> {
        let mut tx = self.ctx().db.begin().await?;
        if let Some(job) = db::jobs::by_image(&mut *tx, image_id).await? {
            let status = job.status();
            if status.can_transition_to(JobStatus::Failed) {
                db::jobs::fail(&mut tx, job.id, status, reason, "permanent").await?;
            }
        }
        if let Some(image) = db::orders::image(&mut *tx, image_id).await? {
            let status = image.status();
            if status.can_transition_to(ImageStatus::Failed)
                && db::orders::set_image_status(&mut tx, image_id, status, ImageStatus::Failed, Some(reason))
                    .await?
            {
                db::events::append(
                    &mut tx,
                    image.order_id,
                    Some(image_id),
                    "failed",
                    &json!({"error": reason}),
                )
                .await?;
            }
        }
        tx.commit().await?;
        metrics::counter!("restoreclick_images_total", "outcome" => "failed").increment(1);
        Ok(())
    }

    async fn finish_if_done(&mut self, myself: &ActorRef<OrderMsg>) -> Result<(), ActorProcessingErr> {
        if !self.remaining.is_empty() {
            return Ok(());
        }
        finish_order(self.ctx(), self.args.order_id).await?;
        myself.stop(Some(FINISHED.into()));
        Ok(())
    }
}

/// Records the order's outcome (and queues its refund for failed photos
/// and its outcome email); wakes the refunder when a refund was queued.
pub async fn finish_order(ctx: &ActorContext, order_id: Uuid) -> Result<(), ActorProcessingErr> {
    let finished = shop::outcome::finish_order(&ctx.db, &ctx.settings, order_id).await?;
    if finished.is_some_and(|f| f.refund.is_some()) {
        ctx.tree.wake_refunder();
    }
    Ok(())
}

/// An order whose actor keeps crashing fails cleanly (see
/// [`shop::outcome::fail_order`]).
pub async fn fail_order(ctx: &ActorContext, order_id: Uuid, reason: &str) -> Result<(), ActorProcessingErr> {
    let finished = shop::outcome::fail_order(&ctx.db, &ctx.settings, order_id, reason).await?;
    if finished.is_some_and(|f| f.refund.is_some()) {
        ctx.tree.wake_refunder();
    }
    Ok(())
}
