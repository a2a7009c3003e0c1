//! `OrderSupervisor`: one `OrderActor` per live order, restarted one-for-one
//! within a restart budget, and a sweep that resumes orders from their rows
//! (at start-up, and periodically, for work whose hand-off was lost).

use std::collections::HashMap;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use uuid::Uuid;

use super::{
    ActorContext,
    order::{OrderActor, OrderMsg},
};
use crate::db;

/// Restarts allowed per order before it is left to the next sweep.
const RESTART_BUDGET: u32 = 5;

pub enum OrderSupervisorMsg {
    /// A committed order needs its actor.
    Spawn(Uuid),
    /// Look in the database for live orders with unfinished steps.
    Sweep,
}

pub struct OrderSupervisor;

pub struct OrderSupervisorState {
    ctx: ActorContext,
    live: HashMap<Uuid, ActorRef<OrderMsg>>,
    by_actor: HashMap<ActorId, Uuid>,
    restarts: HashMap<Uuid, u32>,
}

impl Actor for OrderSupervisor {
    type Msg = OrderSupervisorMsg;
    type State = OrderSupervisorState;
    type Arguments = ActorContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: ActorContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(OrderSupervisorMsg::Sweep)?;
        let every = ctx.settings.orders.lease_ttl;
        myself.send_interval(every, || OrderSupervisorMsg::Sweep);
        Ok(OrderSupervisorState {
            ctx,
            live: HashMap::new(),
            by_actor: HashMap::new(),
            restarts: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrderSupervisorMsg::Spawn(order_id) => state.spawn(&myself, order_id).await,
            OrderSupervisorMsg::Sweep => {
                match db::orders::awaiting_originals(&state.ctx.db).await {
                    Ok(orders) => {
                        for order_id in orders {
                            state.spawn(&myself, order_id).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "order sweep failed; retrying at the next tick")
                    }
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
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(order_id) = state.forget(cell.get_id()) {
                    state.restarts.remove(&order_id);
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
                    tracing::error!(%order_id, %error, "order actor keeps failing; left for the next sweep");
                    state.restarts.remove(&order_id);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl OrderSupervisorState {
    async fn spawn(&mut self, myself: &ActorRef<OrderSupervisorMsg>, order_id: Uuid) {
        if self.live.contains_key(&order_id) {
            return;
        }
        let spawned = Actor::spawn_linked(
            None,
            OrderActor,
            (self.ctx.clone(), order_id),
            myself.get_cell(),
        )
        .await;
        match spawned {
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
