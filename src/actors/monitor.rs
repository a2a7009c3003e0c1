//! `Monitor`: turns the database's queues into gauges on a timer
//! (`restoreclick_queue_depth{queue}`), so a scrape never costs a query.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::ActorContext;

const EVERY: Duration = Duration::from_secs(10);

pub enum MonitorMsg {
    Tick,
}

pub struct Monitor;

impl Actor for Monitor {
    type Msg = MonitorMsg;
    type State = ActorContext;
    type Arguments = ActorContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: ActorContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(MonitorMsg::Tick)?;
        myself.send_interval(EVERY, || MonitorMsg::Tick);
        Ok(ctx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        ctx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MonitorMsg::Tick => {
                let depths = sqlx::query_as::<_, (i64, i64)>(
                    "SELECT (SELECT count(*) FROM restoration_jobs WHERE status IN ('pending', 'queued', 'processing')),
                            (SELECT count(*) FROM email_queue WHERE status IN ('pending', 'sending'))",
                )
                .fetch_one(&ctx.db)
                .await;
                match depths {
                    Ok((restoration, email)) => {
                        metrics::gauge!("restoreclick_queue_depth", "queue" => "restoration")
                            .set(restoration as f64);
                        metrics::gauge!("restoreclick_queue_depth", "queue" => "email").set(email as f64);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read queue depths"),
                }
            }
        }
        Ok(())
    }
}
