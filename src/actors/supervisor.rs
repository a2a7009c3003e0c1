//! `OrderSupervisor`: one `OrderActor` per live order this instance holds a
//! lease on. It claims free or expired leases (at start-up and on every
//! sweep), renews its own by heartbeat and stops an actor whose lease was
//! lost, restarts a crashed order actor one-for-one within a budget, and past
//! the budget fails the order cleanly. On stop it gives its leases back.

use std::{collections::HashMap, time::Duration};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use uuid::Uuid;

use super::{
    ActorContext,
    order::{OrderActor, OrderArgs, OrderMsg, fail_order},
    restoration_pool::PoolHandle,
};
use crate::db::leases;

/// Restarts allowed per order before it is failed.
const RESTART_BUDGET: u32 = 5;
/// Orders claimed per sweep.
const CLAIM_BATCH: i64 = 500;

pub enum OrderSupervisorMsg {
    /// A committed order needs its actor.
    Spawn(Uuid),
    /// Claim live orders nobody holds (the periodic sweep; it schedules the
    /// next one when it ends).
    Sweep,
    /// Claim the next batch at once (the last one was full).
    ClaimMore,
    /// Renew this instance's leases (schedules the next heartbeat when it ends).
    Heartbeat,
    /// The order was refunded.
    Refunded(Uuid),
}

pub struct OrderSupervisor;

pub struct SupervisorArgs {
    pub ctx: ActorContext,
    pub pool: PoolHandle,
    pub provider: &'static str,
    pub owner: String,
}

pub struct OrderSupervisorState {
    args: SupervisorArgs,
    live: HashMap<Uuid, ActorRef<OrderMsg>>,
    by_actor: HashMap<ActorId, Uuid>,
    restarts: HashMap<Uuid, u32>,
    /// Whether a sweep has run: the first one also takes back the orders
    /// this instance's name held before a restart.
    swept: bool,
}

impl Actor for OrderSupervisor {
    type Msg = OrderSupervisorMsg;
    type State = OrderSupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ttl = args.ctx.settings.orders.lease_ttl;
        myself.cast(OrderSupervisorMsg::Sweep)?;
        myself.send_after(ttl / 3, || OrderSupervisorMsg::Heartbeat);
        Ok(OrderSupervisorState {
            args,
            live: HashMap::new(),
            by_actor: HashMap::new(),
            restarts: HashMap::new(),
            swept: false,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself
            .stop_children_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10)))
            .await;
        match leases::release_all(&state.ctx().db, &state.args.owner).await {
            Ok(n) => tracing::info!(released = n, "order leases released"),
            Err(e) => tracing::warn!(error = %e, "cannot release order leases; they expire by themselves"),
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrderSupervisorMsg::Spawn(order_id) => {
                if !state.live.contains_key(&order_id) {
                    let ttl = state.ctx().settings.orders.lease_ttl;
                    match leases::claim(&state.ctx().db, &state.args.owner, ttl, order_id).await {
                        Ok(true) => state.spawn(&myself, order_id).await,
                        Ok(false) => tracing::debug!(%order_id, "order held by another instance"),
                        Err(e) => {
                            tracing::warn!(%order_id, error = %e, "cannot claim the order; the sweep will")
                        }
                    }
                }
            }
            OrderSupervisorMsg::Sweep => {
                metrics::counter!("restoreclick_actor_ticks_total", "actor" => "order_sweep").increment(1);
                state.sweep(&myself).await;
                let ttl = state.ctx().settings.orders.lease_ttl;
                myself.send_after(ttl / 2, || OrderSupervisorMsg::Sweep);
            }
            OrderSupervisorMsg::ClaimMore => state.sweep(&myself).await,
            OrderSupervisorMsg::Heartbeat => {
                metrics::counter!("restoreclick_actor_ticks_total", "actor" => "order_heartbeat")
                    .increment(1);
                state.heartbeat().await;
                let ttl = state.ctx().settings.orders.lease_ttl;
                myself.send_after(ttl / 3, || OrderSupervisorMsg::Heartbeat);
            }
            OrderSupervisorMsg::Refunded(order_id) => {
                if let Some(actor) = state.live.get(&order_id) {
                    let _ = actor.cast(OrderMsg::Refunded);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(order_id) = state.forget(cell.get_id()) {
                    state.restarts.remove(&order_id);
                    // A finished order gave its lease back in the transaction that finished it.
                    if reason.as_deref() != Some(super::order::FINISHED) {
                        let _ = leases::release(&state.ctx().db, &state.args.owner, order_id).await;
                    }
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(order_id) = state.forget(cell.get_id()) else {
                    return Ok(());
                };
                let restarts = state.restarts.entry(order_id).or_default();
                *restarts += 1;
                if *restarts <= RESTART_BUDGET {
                    tracing::warn!(%order_id, restarts = *restarts, %error, "order actor failed; restarting from its rows");
                    state.spawn(&myself, order_id).await;
                } else {
                    tracing::error!(%order_id, %error, "order actor keeps failing; the order fails");
                    state.restarts.remove(&order_id);
                    if let Err(e) = fail_order(
                        state.ctx(),
                        order_id,
                        &format!("the order kept crashing: {error}"),
                    )
                    .await
                    {
                        tracing::error!(%order_id, error = %e, "cannot fail the order; the next sweep retries");
                    }
                    let _ = leases::release(&state.ctx().db, &state.args.owner, order_id).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl OrderSupervisorState {
    fn ctx(&self) -> &ActorContext {
        &self.args.ctx
    }

    async fn sweep(&mut self, myself: &ActorRef<OrderSupervisorMsg>) {
        let ttl = self.ctx().settings.orders.lease_ttl;
        let include_own = !self.swept;
        match leases::claim_free(&self.ctx().db, &self.args.owner, ttl, CLAIM_BATCH, include_own).await {
            Ok(orders) => {
                self.swept = true;
                // A full batch means more are waiting: claim them now, not a sweep later.
                if orders.len() as i64 == CLAIM_BATCH {
                    let _ = myself.cast(OrderSupervisorMsg::ClaimMore);
                }
                for order_id in orders {
                    self.spawn(myself, order_id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "order sweep failed; retrying at the next tick"),
        }
    }

    /// Renews every live order's lease; an order whose lease another
    /// instance took is stopped here at once.
    async fn heartbeat(&mut self) {
        if self.live.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = self.live.keys().copied().collect();
        let ttl = self.ctx().settings.orders.lease_ttl;
        match leases::renew(&self.ctx().db, &self.args.owner, ttl, &ids).await {
            Ok(held) => {
                for lost in ids.into_iter().filter(|id| !held.contains(id)) {
                    if let Some(actor) = self.live.remove(&lost) {
                        tracing::warn!(order_id = %lost, "lease lost; stopping the order's actor");
                        self.by_actor.remove(&actor.get_id());
                        actor.stop_children(Some("lease lost".into()));
                        actor.stop(Some("lease lost".into()));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease heartbeat failed"),
        }
    }

    async fn spawn(&mut self, myself: &ActorRef<OrderSupervisorMsg>, order_id: Uuid) {
        if self.live.contains_key(&order_id) {
            return;
        }
        let args = OrderArgs {
            ctx: self.ctx().clone(),
            order_id,
            pool: self.args.pool.clone(),
            provider: self.args.provider,
        };
        match Actor::spawn_linked(None, OrderActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), order_id);
                if let Err(e) = actor.cast(OrderMsg::Start) {
                    tracing::warn!(%order_id, error = %e, "order actor stopped before its start");
                }
                self.live.insert(order_id, actor);
            }
            Err(e) => tracing::error!(%order_id, error = %e, "cannot spawn an order actor"),
        }
    }

    fn forget(&mut self, actor: ActorId) -> Option<Uuid> {
        let order_id = self.by_actor.remove(&actor)?;
        self.live.remove(&order_id);
        Some(order_id)
    }
}
