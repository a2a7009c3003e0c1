//! The actor tree: live work, not data. Every actor can be rebuilt from its
//! rows, so a crash anywhere loses nothing (DESIGN.md "Actor tree").
//!
//! `RootSupervisor` → `OrderSupervisor` (→ `OrderActor` → `ImageActor`),
//! `RestorationPool`, `Mailer`, `Refunder`, `Cleanup`, `Monitor`; restarts
//! are one-for-one within budgets, and past the root's budget the whole
//! tree restarts after a pause. A dependency that is away is weather
//! (`weather`): actors wait it out and spend no budget on it. No message
//! crosses instances: Postgres is the only channel.

pub mod cleanup;
pub mod image;
pub mod mailer;
pub mod monitor;
pub mod order;
pub mod refunder;
pub mod restoration_pool;
pub mod root;
pub mod supervisor;
pub mod weather;

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use ractor::{Actor, ActorRef};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    config::Settings,
    providers::{mail::MailSender, payments::PaymentProvider, restoration::Restorer},
    shop::{fulfilment::Applied, refund::OrderRefunded},
    storage::Storage,
};
use refunder::RefunderMsg;
use root::{RootArgs, RootMsg, RootSupervisor};
use supervisor::OrderSupervisorMsg;

/// What every actor needs from the outside world.
#[derive(Clone)]
pub struct ActorContext {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    pub storage: Storage,
    pub payments: Arc<dyn PaymentProvider>,
    /// Photos with a live `ImageActor` at once (`restoration.max_live_photos`):
    /// past it a photo waits, as its rows alone, for its turn (first come,
    /// first served), so thousands of waiting orders stay cheap.
    pub photo_slots: Arc<tokio::sync::Semaphore>,
    /// The tree's entry points, for actors that start work for others.
    pub tree: Tree,
    /// This instance's name in leases and claims (`instance.id`): every
    /// completion write is fenced by it.
    pub owner: String,
}

impl ActorContext {
    pub fn new(
        settings: Arc<Settings>,
        db: PgPool,
        storage: Storage,
        payments: Arc<dyn PaymentProvider>,
        restorer: Arc<dyn Restorer>,
    ) -> Self {
        let slots = settings.restoration.max_live_photos;
        Self {
            owner: settings.instance_id(),
            settings,
            db,
            storage,
            payments,
            photo_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            tree: Tree {
                orders: Handle::default(),
                refunder: Handle::default(),
                restorer,
                health: TreeHealth::default(),
            },
        }
    }
}

/// The tree's entry points, shared by its actors and the HTTP side: what a
/// committed workflow asks of the live work.
#[derive(Clone)]
pub struct Tree {
    orders: Handle<OrderSupervisorMsg>,
    refunder: Handle<RefunderMsg>,
    restorer: Arc<dyn Restorer>,
    health: TreeHealth,
}

/// How long the tree may be restarting before `/healthz` gives up on it: a
/// few of the root's pauses (they grow to a minute), so that a process whose
/// tree cannot come back is restarted by its orchestrator.
const RESTART_GRACE: Duration = Duration::from_secs(150);

/// Whether the actor tree can do its work, for `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Running,
    /// The root's budget was spent; the tree restarts after a pause.
    Restarting,
    /// Restarting for longer than [`RESTART_GRACE`], or stopped for good.
    Stopped,
}

impl Health {
    pub fn can_run(self) -> bool {
        self != Health::Stopped
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Running => "running",
            Health::Restarting => "restarting",
            Health::Stopped => "stopped",
        }
    }
}

/// The tree's state as its root supervisor reports it.
#[derive(Clone, Default)]
pub struct TreeHealth(Arc<Mutex<Option<Instant>>>);

impl TreeHealth {
    /// The tree is down and restarting (since now, unless it already was).
    pub fn restarting(&self) {
        if let Ok(mut since) = self.0.lock() {
            since.get_or_insert_with(Instant::now);
        }
    }

    /// The tree is up again.
    pub fn running(&self) {
        if let Ok(mut since) = self.0.lock() {
            *since = None;
        }
    }

    fn get(&self) -> Health {
        match self.0.lock().ok().and_then(|since| *since) {
            None => Health::Running,
            Some(since) if since.elapsed() < RESTART_GRACE => Health::Restarting,
            Some(_) => Health::Stopped,
        }
    }
}

impl Tree {
    /// Hands a newly committed (or reopened) order to its actor.
    pub fn dispatch(&self, order_id: Uuid) {
        if let Err(e) = self.orders.send(OrderSupervisorMsg::Spawn(order_id)) {
            // The periodic sweep claims the order from its row.
            tracing::warn!(%order_id, error = %e, "order supervisor unreachable; the sweep will resume the order");
        }
    }

    /// A refund was queued: the refunder looks at once.
    pub fn wake_refunder(&self) {
        if let Err(e) = self.refunder.send(RefunderMsg::Wake) {
            tracing::warn!(error = %e, "refunder unreachable; its next look does the refund");
        }
    }

    /// Money was given back: a fully refunded order's work stops, here
    /// and at the restoration provider.
    pub fn refunded(&self, effect: &OrderRefunded) {
        let Some(order_id) = effect.order_id.filter(|_| effect.now_refunded) else {
            return;
        };
        metrics::counter!("restoreclick_orders_total", "status" => "refunded").increment(1);
        let _ = self.orders.send(OrderSupervisorMsg::Refunded(order_id));
        if effect.cancel.is_empty() {
            return;
        }
        let (restorer, predictions) = (self.restorer.clone(), effect.cancel.clone());
        tokio::spawn(async move {
            for id in predictions {
                restorer.cancel(&id).await;
            }
        });
    }

    /// Acts on what a payment workflow committed.
    pub fn follow_up(&self, applied: &Applied) {
        match applied {
            Applied::OrderCreated(order_id) => {
                metrics::counter!("restoreclick_orders_total", "status" => "processing").increment(1);
                self.dispatch(*order_id);
            }
            Applied::Refunded(effect) => self.refunded(effect),
            Applied::PaymentRefused { refund: Some(_), .. } => self.wake_refunder(),
            _ => {}
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
    root: ActorRef<RootMsg>,
    tree: Tree,
}

impl Actors {
    /// Starts the tree; the order supervisor at once claims and resumes every
    /// live order nobody else holds.
    pub async fn start(
        ctx: ActorContext,
        restorer: Arc<dyn Restorer>,
        mailer: Arc<dyn MailSender>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
        let tree = ctx.tree.clone();
        let args = RootArgs {
            owner: ctx.owner.clone(),
            ctx,
            restorer,
            mailer,
            pool: Handle::default(),
            cleanup: Handle::default(),
        };
        let (root, handle) = Actor::spawn(None, RootSupervisor, args).await?;
        Ok((Self { root, tree }, handle))
    }

    /// The tree's entry points.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Whether the tree can do its work: its root is alive and it is not
    /// stuck restarting.
    pub fn health(&self) -> Health {
        match self.root.get_status() {
            ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped => Health::Stopped,
            _ => self.tree.health.get(),
        }
    }

    /// Hands a newly committed order to its actor.
    pub fn dispatch(&self, order_id: Uuid) {
        self.tree.dispatch(order_id);
    }

    /// Acts on what a payment workflow committed.
    pub fn follow_up(&self, applied: &Applied) {
        self.tree.follow_up(applied);
    }

    /// Stops the tree: orders first (their leases are given back), then the rest.
    pub async fn stop(self, handle: tokio::task::JoinHandle<()>) {
        if let Some(orders) = self.tree.orders.get() {
            let _ = orders
                .stop_and_wait(Some("shutdown".into()), Some(std::time::Duration::from_secs(15)))
                .await;
        }
        self.root.stop(Some("shutdown".into()));
        let _ = handle.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/healthz` answers 503 (`can_run` false) only once the tree has been
    /// restarting longer than the grace, so an orchestrator restarts a
    /// process whose tree cannot come back, and not one riding out a blip.
    #[test]
    fn a_tree_restarting_past_its_grace_is_unhealthy_and_a_running_one_healthy() {
        let health = TreeHealth::default();
        assert_eq!(health.get(), Health::Running);
        health.restarting();
        assert_eq!(health.get(), Health::Restarting);
        assert!(health.get().can_run());
        if let Ok(mut since) = health.0.lock() {
            *since = Instant::now().checked_sub(RESTART_GRACE + Duration::from_secs(1));
        }
        assert_eq!(health.get(), Health::Stopped);
        assert!(!health.get().can_run());
        health.running();
        assert_eq!(health.get(), Health::Running);
    }
}
