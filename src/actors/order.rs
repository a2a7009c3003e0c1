//! `OrderActor`: drives one paid order. Here it brings the order's photos
//! from temp storage into `originals/`, checkpointing each image as
//! `uploaded` once its move is done; moves are copy-then-delete and safe to
//! repeat, so a crash between the move and the checkpoint only repeats a move.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use uuid::Uuid;

use super::ActorContext;
use crate::{db, domain::ImageStatus, storage::StorageError};

pub enum OrderMsg {
    /// Resume the order from its rows.
    Start,
}

pub struct OrderActor;

pub struct OrderState {
    ctx: ActorContext,
    order_id: Uuid,
}

impl Actor for OrderActor {
    type Msg = OrderMsg;
    type State = OrderState;
    type Arguments = (ActorContext, Uuid);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (ctx, order_id): (ActorContext, Uuid),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(OrderState { ctx, order_id })
    }

    #[tracing::instrument(skip_all, fields(order_id = %state.order_id))]
    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrderMsg::Start => {
                state.store_originals().await?;
                // Restoration of `uploaded` images is the restoration pool's work.
                myself.stop(Some("originals stored".into()));
            }
        }
        Ok(())
    }
}

impl OrderState {
    async fn store_originals(&self) -> Result<(), ActorProcessingErr> {
        let images = db::orders::images(&self.ctx.db, self.order_id).await?;
        for image in images.iter().filter(|i| i.status() == ImageStatus::Pending) {
            let moved = self
                .ctx
                .storage
                .move_object(&image.temp_key, &image.original_key)
                .await;
            let (to, error) = match moved {
                Ok(()) => (ImageStatus::Uploaded, None),
                Err(StorageError::NotFound(_)) => {
                    tracing::error!(image_id = %image.id, "the photo is missing from temp storage");
                    (
                        ImageStatus::Failed,
                        Some("the uploaded photo was lost before it could be stored"),
                    )
                }
                Err(e) => return Err(e.into()),
            };
            let mut tx = self.ctx.db.begin().await?;
            if db::orders::set_image_status(&mut tx, image.id, ImageStatus::Pending, to, error)
                .await?
            {
                db::events::append(
                    &mut tx,
                    self.order_id,
                    Some(image.id),
                    to.as_str(),
                    &json!({}),
                )
                .await?;
            }
            tx.commit().await?;
            tracing::info!(image_id = %image.id, status = to.as_str(), "image checkpointed");
        }
        Ok(())
    }
}
