//! `RootSupervisor`: starts the tree's long-lived children and restarts any
//! that fails, one-for-one, within a restart budget. Past the budget it
//! stops them all and, after a pause (growing from 5 s to a minute while
//! budgets keep being spent), starts the whole tree again from the rows: it
//! never stops for good. `/healthz` says 503 when the tree stays down.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::{
    ActorContext, Handle,
    cleanup::{Cleanup, CleanupMsg},
    mailer::{Mailer, MailerArgs},
    monitor::{Monitor, MonitorArgs},
    refunder::{Refunder, RefunderArgs},
    restoration_pool::{PoolArgs, PoolMsg, RestorationPool},
    supervisor::{OrderSupervisor, SupervisorArgs},
};
use crate::providers::{mail::MailSender, restoration::Restorer};

/// At most this many restarts of children within [`BUDGET_WINDOW`].
const RESTART_BUDGET: usize = 5;
const BUDGET_WINDOW: Duration = Duration::from_secs(60);
/// The first pause before the whole tree restarts, and the longest.
const FIRST_PAUSE: Duration = Duration::from_secs(5);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);
/// A tree that ran this long since its last restart starts over from the first pause.
const CALM: Duration = Duration::from_secs(300);
/// How long a child may take to stop when the tree restarts.
const STOP_WAIT: Duration = Duration::from_secs(15);

pub struct RootSupervisor;

pub enum RootMsg {
    /// The pause after a spent budget is over: start the whole tree again.
    Restart,
}

pub struct RootArgs {
    pub ctx: ActorContext,
    pub restorer: Arc<dyn Restorer>,
    pub mailer: Arc<dyn MailSender>,
    pub owner: String,
    pub pool: Handle<PoolMsg>,
    pub cleanup: Handle<CleanupMsg>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Child {
    Orders,
    Pool,
    Mailer,
    Refunder,
    Cleanup,
    Monitor,
}

/// The children in the order they start: the pool first, as order actors
/// send to it as soon as they start.
const CHILDREN: [Child; 6] = [
    Child::Pool,
    Child::Orders,
    Child::Mailer,
    Child::Refunder,
    Child::Cleanup,
    Child::Monitor,
];

pub struct RootState {
    args: RootArgs,
    children: Vec<(ActorCell, Child)>,
    restarts: VecDeque<Instant>,
    /// The pause before the next whole-tree restart.
    pause: Duration,
    /// When the whole tree last restarted.
    restarted_at: Option<Instant>,
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RootMsg>,
        args: RootArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = RootState {
            args,
            children: Vec::new(),
            restarts: VecDeque::new(),
            pause: FIRST_PAUSE,
            restarted_at: None,
        };
        for child in CHILDREN {
            state.start(&myself, child).await?;
        }
        state.args.ctx.tree.health.running();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        msg: RootMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Restart => state.restart_tree(&myself).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, error) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason.unwrap_or_default()),
            _ => return Ok(()),
        };
        let Some(index) = state
            .children
            .iter()
            .position(|(c, _)| c.get_id() == cell.get_id())
        else {
            return Ok(());
        };
        let (_, child) = state.children.remove(index);
        if error == "shutdown" {
            return Ok(());
        }
        let now = Instant::now();
        state.restarts.push_back(now);
        while state
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > BUDGET_WINDOW)
        {
            state.restarts.pop_front();
        }
        if state.restarts.len() > RESTART_BUDGET {
            tracing::error!(?child, %error, "restart budget spent; the actor tree restarts after a pause");
            state.stop_tree(&myself).await;
            return Ok(());
        }
        tracing::warn!(?child, %error, "restarting a failed actor");
        if let Err(e) = state.start(&myself, child).await {
            tracing::error!(?child, error = %e, "cannot restart the actor; the actor tree restarts after a pause");
            state.stop_tree(&myself).await;
        }
        Ok(())
    }
}

impl RootState {
    /// Stops every child and schedules the whole tree's restart.
    async fn stop_tree(&mut self, myself: &ActorRef<RootMsg>) {
        self.args.ctx.tree.health.restarting();
        metrics::counter!("restoreclick_actor_tree_restarts_total").increment(1);
        // Orders first, so their leases are given back before the rest stops.
        let mut children = std::mem::take(&mut self.children);
        children.sort_by_key(|(_, child)| *child != Child::Orders);
        for (cell, _) in children {
            cell.stop_and_wait(Some("tree restart".into()), Some(STOP_WAIT))
                .await
                .unwrap_or_else(|e| tracing::warn!(error = %e, "an actor did not stop in time"));
        }
        self.pause = match self.restarted_at {
            Some(at) if at.elapsed() < CALM => (self.pause * 2).min(LONGEST_PAUSE),
            _ => FIRST_PAUSE,
        };
        tracing::warn!(pause = ?self.pause, "the actor tree is stopped; restarting it after the pause");
        myself.send_after(self.pause, || RootMsg::Restart);
    }

    /// Starts the whole tree again from the rows, with a fresh budget.
    async fn restart_tree(&mut self, myself: &ActorRef<RootMsg>) {
        self.restarts.clear();
        self.restarted_at = Some(Instant::now());
        for child in CHILDREN {
            if let Err(e) = self.start(myself, child).await {
                tracing::error!(?child, error = %e, "cannot start the actor tree; trying again after a pause");
                self.stop_tree(myself).await;
                return;
            }
        }
        self.args.ctx.tree.health.running();
        tracing::info!("the actor tree is running again");
    }

    async fn start(&mut self, myself: &ActorRef<RootMsg>, child: Child) -> Result<(), ActorProcessingErr> {
        let ctx = self.args.ctx.clone();
        let cell = match child {
            Child::Pool => {
                let args = PoolArgs {
                    restorer: self.args.restorer.clone(),
                    db: ctx.db.clone(),
                    concurrency: ctx.settings.restoration.concurrency,
                    owner: self.args.owner.clone(),
                };
                let (pool, _) = Actor::spawn_linked(None, RestorationPool, args, myself.get_cell()).await?;
                self.args.pool.set(pool.clone());
                pool.get_cell()
            }
            Child::Orders => {
                let args = SupervisorArgs {
                    ctx,
                    pool: self.args.pool.clone(),
                    provider: self.args.restorer.name(),
                    owner: self.args.owner.clone(),
                };
                let (orders, _) = Actor::spawn_linked(None, OrderSupervisor, args, myself.get_cell()).await?;
                self.args.ctx.tree.orders.set(orders.clone());
                orders.get_cell()
            }
            Child::Mailer => {
                let args = MailerArgs {
                    ctx,
                    sender: self.args.mailer.clone(),
                    owner: self.args.owner.clone(),
                };
                Actor::spawn_linked(None, Mailer, args, myself.get_cell())
                    .await?
                    .0
                    .get_cell()
            }
            Child::Refunder => {
                let args = RefunderArgs {
                    ctx,
                    owner: self.args.owner.clone(),
                };
                let (refunder, _) = Actor::spawn_linked(None, Refunder, args, myself.get_cell()).await?;
                self.args.ctx.tree.refunder.set(refunder.clone());
                refunder.get_cell()
            }
            Child::Cleanup => {
                let (cleanup, _) = Actor::spawn_linked(None, Cleanup, ctx, myself.get_cell()).await?;
                self.args.cleanup.set(cleanup.clone());
                cleanup.get_cell()
            }
            Child::Monitor => {
                let args = MonitorArgs {
                    ctx,
                    pool: self.args.pool.clone(),
                    cleanup: self.args.cleanup.clone(),
                };
                Actor::spawn_linked(None, Monitor, args, myself.get_cell())
                    .await?
                    .0
                    .get_cell()
            }
        };
        self.children.push((cell, child));
        Ok(())
    }
}
