//! `RootSupervisor`: starts the tree's long-lived children and restarts any
//! that fails, one-for-one, within a restart budget; past the budget it
//! stops, and the process's health checks say so.

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

pub struct RootSupervisor;

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

pub struct RootState {
    args: RootArgs,
    children: Vec<(ActorCell, Child)>,
    restarts: VecDeque<Instant>,
}

impl Actor for RootSupervisor {
    type Msg = ();
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: RootArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = RootState {
            args,
            children: Vec::new(),
            restarts: VecDeque::new(),
        };
        // The pool first: order actors send to it as soon as they start.
        for child in [
            Child::Pool,
            Child::Orders,
            Child::Mailer,
            Child::Refunder,
            Child::Cleanup,
            Child::Monitor,
        ] {
            state.start(&myself, child).await?;
        }
        Ok(state)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
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
            tracing::error!(?child, %error, "restart budget spent; the actor tree stops");
            myself.stop(Some("restart budget spent".into()));
            return Ok(());
        }
        tracing::warn!(?child, %error, "restarting a failed actor");
        state.start(&myself, child).await
    }
}

impl RootState {
    async fn start(&mut self, myself: &ActorRef<()>, child: Child) -> Result<(), ActorProcessingErr> {
        let ctx = self.args.ctx.clone();
        let cell = match child {
            Child::Pool => {
                let args = PoolArgs {
                    restorer: self.args.restorer.clone(),
                    db: ctx.db.clone(),
                    concurrency: ctx.settings.restoration.concurrency,
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
