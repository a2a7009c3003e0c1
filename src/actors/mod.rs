//! The actor tree: live work, not data. Every actor can be rebuilt from its
//! rows, so a crash anywhere loses nothing (DESIGN.md "Actor tree").
//!
//! `RootSupervisor` → `OrderSupervisor` (→ `OrderActor` → `ImageActor`),
//! `RestorationPool`, `Mailer`, `Cleanup`, `Monitor`; restarts are
//! one-for-one within budgets. No message crosses instances: Postgres is the only channel.

pub mod cleanup;
pub mod image;
pub mod mailer;
pub mod monitor;
pub mod order;
pub mod restoration_pool;
pub mod root;
pub mod supervisor;

use std::sync::{Arc, RwLock};

use ractor::{Actor, ActorRef};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    config::Settings,
    providers::{mail::MailSender, restoration::Restorer},
    storage::Storage,
};
use root::{RootArgs, RootSupervisor};
use supervisor::OrderSupervisorMsg;

/// What every actor needs from the outside world.
#[derive(Clone)]
pub struct ActorContext {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    pub storage: Storage,
    /// Photos with a live `ImageActor` at once (`restoration.max_live_photos`):
    /// past it a photo waits, as its rows alone, for its turn (first come,
    /// first served), so thousands of waiting orders stay cheap.
    pub photo_slots: Arc<tokio::sync::Semaphore>,
}

impl ActorContext {
    pub fn new(settings: Arc<Settings>, db: PgPool, storage: Storage) -> Self {
        let slots = settings.restoration.max_live_photos;
        Self {
            settings,
            db,
            storage,
            photo_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
        }
    }
}

/// A reference to an actor that follows it across restarts.
pub struct Handle<M>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M> Default for Handle<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M: ractor::Message> Handle<M> {
    pub fn set(&self, actor: ActorRef<M>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(actor);
        }
    }

    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().ok().and_then(|a| a.clone())
    }

    pub fn send(&self, msg: M) -> Result<(), String> {
        let actor = self.get().ok_or("the actor is not running")?;
        actor.cast(msg).map_err(|e| e.to_string())
    }
}

/// The running tree, as the rest of the shop sees it.
#[derive(Clone)]
pub struct Actors {
    root: ActorRef<()>,
    orders: Handle<OrderSupervisorMsg>,
}

impl Actors {
    /// Starts the tree; the order supervisor at once claims and resumes every
    /// live order nobody else holds.
    pub async fn start(
        ctx: ActorContext,
        restorer: Arc<dyn Restorer>,
        mailer: Arc<dyn MailSender>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
        let orders = Handle::default();
        let args = RootArgs {
            owner: ctx.settings.instance_id(),
            ctx,
            restorer,
            mailer,
            orders: orders.clone(),
            pool: Handle::default(),
            cleanup: Handle::default(),
        };
        let (root, handle) = Actor::spawn(None, RootSupervisor, args).await?;
        Ok((Self { root, orders }, handle))
    }

    /// Hands a newly committed order to its actor.
    pub fn dispatch(&self, order_id: Uuid) {
        if let Err(e) = self.orders.send(OrderSupervisorMsg::Spawn(order_id)) {
            // The periodic sweep claims the order from its row.
            tracing::warn!(%order_id, error = %e, "order supervisor unreachable; the sweep will resume the order");
        }
    }

    /// Tells a live order's actor that the order was refunded.
    pub fn refunded(&self, order_id: Uuid) {
        let _ = self.orders.send(OrderSupervisorMsg::Refunded(order_id));
    }

    /// Stops the tree: orders first (their leases are given back), then the rest.
    pub async fn stop(self, handle: tokio::task::JoinHandle<()>) {
        if let Some(orders) = self.orders.get() {
            let _ = orders
                .stop_and_wait(Some("shutdown".into()), Some(std::time::Duration::from_secs(15)))
                .await;
        }
        self.root.stop(Some("shutdown".into()));
        let _ = handle.await;
    }
}
