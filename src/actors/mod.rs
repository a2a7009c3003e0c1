//! The actor tree: live work, not data. Every actor can be rebuilt from its
//! rows, so a crash anywhere loses nothing (DESIGN.md "Actor tree").
//!
//! `OrderSupervisor` owns one `OrderActor` per live order; the order actor
//! checkpoints each step to Postgres before its side effect.

pub mod order;
pub mod supervisor;

use std::sync::Arc;

use ractor::{Actor, ActorRef};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{config::Settings, storage::Storage};
use supervisor::{OrderSupervisor, OrderSupervisorMsg};

/// What every actor needs from the outside world.
#[derive(Clone)]
pub struct ActorContext {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    pub storage: Storage,
}

/// The running tree, as the rest of the shop sees it.
#[derive(Clone)]
pub struct Actors {
    supervisor: ActorRef<OrderSupervisorMsg>,
}

impl Actors {
    /// Starts the tree; the supervisor at once resumes every order left unfinished.
    pub async fn start(
        ctx: ActorContext,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
        let (supervisor, handle) = Actor::spawn(None, OrderSupervisor, ctx).await?;
        Ok((Self { supervisor }, handle))
    }

    /// Hands a newly committed order to its actor.
    pub fn dispatch(&self, order_id: Uuid) {
        if let Err(e) = self.supervisor.cast(OrderSupervisorMsg::Spawn(order_id)) {
            // The periodic sweep picks the order up from its rows.
            tracing::warn!(%order_id, error = %e, "order supervisor unreachable; the sweep will resume the order");
        }
    }

    /// Stops the tree (its children first) and waits for it.
    pub async fn stop(self, handle: tokio::task::JoinHandle<()>) {
        self.supervisor.stop(Some("shutdown".into()));
        let _ = handle.await;
    }
}
