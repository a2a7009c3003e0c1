//! `Monitor`: every `monitor.interval` it measures the shop (queue depths
//! and recent restoration jobs in one query, stored bytes from the storage
//! counters), publishes the gauges, and judges the four alerts.
//!
//! Each alert is a state machine in the shared `alerts` table
//! (`domain::alerts`): the instance that moves a row logs the transition
//! once and, on firing, queues one admin email for the episode in the same
//! transaction. Every instance shows the rows as
//! `restoreclick_alert_active{alert}` and acts on them for itself: while
//! the queue is backed up it raises its pool's concurrency a step per tick up
//! to `restoration.max_concurrency` (and lowers it back once the queue is
//! under the threshold); when storage passes its limit it runs the cleanup
//! sweeps at once, and again every [`CLEANUP_EVERY_TICKS`] ticks while the
//! alert fires.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use time::OffsetDateTime;

use super::{ActorContext, Handle, cleanup::CleanupMsg, restoration_pool::PoolHandle};
use crate::{
    config::Settings,
    db::{self, alerts::AlertRow, monitor::Measurements},
    domain::alerts::{AlertName, AlertStatus, Verdict, judge},
};

/// While storage is past its limit, the cleanup runs every this many ticks.
pub const CLEANUP_EVERY_TICKS: u32 = 10;

pub enum MonitorMsg {
    Tick,
}

pub struct Monitor;

pub struct MonitorArgs {
    pub ctx: ActorContext,
    pub pool: PoolHandle,
    pub cleanup: Handle<CleanupMsg>,
}

pub struct MonitorState {
    args: MonitorArgs,
    /// The pool's concurrency as this Monitor last set it.
    concurrency: usize,
    /// Ticks since this instance last ran the cleanup early, while storage
    /// is past its limit.
    since_cleanup: Option<u32>,
    last_reconcile: Option<Instant>,
    reconciling: Arc<AtomicBool>,
}

impl Actor for Monitor {
    type Msg = MonitorMsg;
    type State = MonitorState;
    type Arguments = MonitorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MonitorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(MonitorMsg::Tick)?;
        Ok(MonitorState {
            concurrency: args.ctx.settings.restoration.concurrency,
            args,
            since_cleanup: None,
            last_reconcile: None,
            reconciling: Arc::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MonitorMsg::Tick => {
                metrics::counter!("restoreclick_actor_ticks_total", "actor" => "monitor").increment(1);
                state.tick().await;
                // Scheduled when this tick ends: a slow one never piles up ticks.
                myself.send_after(state.args.ctx.settings.monitor.interval, || MonitorMsg::Tick);
            }
        }
        Ok(())
    }
}

/// One alert's reading: whether its condition holds, the measured value,
/// and a sentence for the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub breached: bool,
    pub value: f64,
    pub summary: String,
}

/// Reads one alert's condition off the measurements (pure).
pub fn read(name: AlertName, m: &Measurements, stored_bytes: u64, settings: &Settings) -> Reading {
    let rules = &settings.alerts;
    match name {
        AlertName::QueueBackup => {
            let t = rules.queue_backup.threshold;
            Reading {
                breached: m.restoration_depth as u64 > t,
                value: m.restoration_depth as f64,
                summary: format!(
                    "{} photos are waiting for or in restoration (threshold {t})",
                    m.restoration_depth
                ),
            }
        }
        AlertName::SlowProcessing => {
            let rule = &rules.slow_processing;
            let p95 = m.p95_seconds.unwrap_or(0.0);
            let t = rule.threshold.as_secs_f64();
            Reading {
                breached: m.timed_jobs as u64 >= rule.min_jobs && p95 > t,
                value: p95,
                summary: format!(
                    "restoration attempts took {p95:.1} s at the 95th percentile over the last {} ({} attempts; threshold {t:.1} s)",
                    humantime::format_duration(rule.window),
                    m.timed_jobs
                ),
            }
        }
        AlertName::HighErrorRate => {
            let rule = &rules.high_error_rate;
            let share = if m.finished_jobs > 0 {
                m.failed_jobs as f64 / m.finished_jobs as f64
            } else {
                0.0
            };
            Reading {
                breached: m.finished_jobs as u64 >= rule.min_jobs && share > rule.threshold,
                value: share,
                summary: format!(
                    "{:.0} % of the photos finished in the last {} failed ({} of {}; threshold {:.0} %)",
                    share * 100.0,
                    humantime::format_duration(rule.window),
                    m.failed_jobs,
                    m.finished_jobs,
                    rule.threshold * 100.0
                ),
            }
        }
        AlertName::StorageLimit => {
            let rule = &rules.storage_limit;
            let share = if rule.limit_bytes > 0 {
                stored_bytes as f64 / rule.limit_bytes as f64
            } else {
                0.0
            };
            Reading {
                breached: rule.limit_bytes > 0 && share > rule.threshold,
                value: share,
                summary: format!(
                    "storage holds {stored_bytes} bytes, {:.0} % of its limit of {} bytes (threshold {:.0} %)",
                    share * 100.0,
                    rule.limit_bytes,
                    rule.threshold * 100.0
                ),
            }
        }
    }
}

fn hold(name: AlertName, settings: &Settings) -> std::time::Duration {
    let rules = &settings.alerts;
    match name {
        AlertName::QueueBackup => rules.queue_backup.hold,
        AlertName::SlowProcessing => rules.slow_processing.hold,
        AlertName::HighErrorRate => rules.high_error_rate.hold,
        AlertName::StorageLimit => rules.storage_limit.hold,
    }
}

/// The pool's next concurrency: a step up while the queue is backed up, a
/// step down (never under the configured base) once it is under the threshold.
pub fn next_concurrency(current: usize, backed_up: bool, drained: bool, settings: &Settings) -> usize {
    let r = &settings.restoration;
    if backed_up {
        (current + r.concurrency_step).min(r.max_concurrency)
    } else if drained {
        current.saturating_sub(r.concurrency_step).max(r.concurrency)
    } else {
        current
    }
}

impl MonitorState {
    fn ctx(&self) -> &ActorContext {
        &self.args.ctx
    }

    async fn tick(&mut self) {
        self.reconcile_storage_if_due();
        let storage = &self.ctx().storage;
        storage.usage().publish();
        let stored = storage.usage().total();
        metrics::gauge!("restoreclick_storage_limit_bytes")
            .set(self.ctx().settings.alerts.storage_limit.limit_bytes as f64);
        let settings = self.ctx().settings.clone();
        let rules = &settings.alerts;
        let measured = db::monitor::measure(
            &self.ctx().db,
            rules.slow_processing.window,
            rules.high_error_rate.window,
        )
        .await;
        let m = match measured {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot measure the queues; the alerts wait for the next tick");
                return;
            }
        };
        metrics::gauge!("restoreclick_queue_depth", "queue" => "restoration").set(m.restoration_depth as f64);
        metrics::gauge!("restoreclick_queue_depth", "queue" => "email").set(m.email_depth as f64);
        let rows = match db::alerts::all(&self.ctx().db).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alerts");
                return;
            }
        };
        let now = OffsetDateTime::now_utc();
        for row in &rows {
            let Some(name) = row.name() else { continue };
            let reading = read(name, &m, stored, &settings);
            let status = match self.judge(name, row, &reading, now).await {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(alert = name.as_str(), error = %e, "cannot record the alert");
                    row.state().status
                }
            };
            let firing = status == AlertStatus::Firing;
            metrics::gauge!("restoreclick_alert_active", "alert" => name.as_str()).set(if firing {
                1.0
            } else {
                0.0
            });
            match name {
                AlertName::QueueBackup => {
                    let drained = m.restoration_depth as u64 <= rules.queue_backup.threshold;
                    self.scale_pool(firing, drained);
                }
                AlertName::StorageLimit if firing => self.clean_up_early(),
                AlertName::StorageLimit => self.since_cleanup = None,
                _ => {}
            }
        }
    }

    /// Moves one alert's row as the reading calls for; returns its status.
    async fn judge(
        &self,
        name: AlertName,
        row: &AlertRow,
        reading: &Reading,
        now: OffsetDateTime,
    ) -> Result<AlertStatus, sqlx::Error> {
        let state = row.state();
        let (since, verdict) = judge(state, reading.breached, now, hold(name, &self.ctx().settings));
        if since.is_some() != state.breach_since.is_some() {
            db::alerts::set_breach(&self.ctx().db, name, since).await?;
        }
        match verdict {
            Verdict::Stay => Ok(state.status),
            Verdict::Fire => {
                let mut tx = self.ctx().db.begin().await?;
                if let Some(episode) = db::alerts::fire(&mut tx, name, reading.value).await? {
                    self.queue_email(&mut tx, name, episode, reading).await?;
                    tx.commit().await?;
                    tracing::warn!(alert = name.as_str(), episode, value = reading.value, summary = %reading.summary, "alert firing");
                }
                Ok(AlertStatus::Firing)
            }
            Verdict::Resolve => {
                let mut tx = self.ctx().db.begin().await?;
                if let Some(episode) = db::alerts::resolve(&mut tx, name, reading.value).await? {
                    tx.commit().await?;
                    tracing::info!(alert = name.as_str(), episode, value = reading.value, summary = %reading.summary, "alert resolved");
                }
                Ok(AlertStatus::Resolved)
            }
        }
    }

    async fn queue_email(
        &self,
        tx: &mut sqlx::PgConnection,
        name: AlertName,
        episode: i32,
        reading: &Reading,
    ) -> Result<(), sqlx::Error> {
        let settings = &self.ctx().settings;
        let payload = json!({
            "reason": format!("alert {} firing", name.as_str()),
            "alert": name.as_str(),
            "episode": episode,
            "value": reading.value,
            "summary": reading.summary,
            "instance": settings.instance_id(),
        });
        let key = format!("alert:{}:{episode}", name.as_str());
        db::emails::enqueue_admin_alert(tx, &settings.mail, &key, None, &payload)
            .await
            .map(drop)
    }

    /// Sets the pool's concurrency; repeated every tick while raised, so a
    /// restarted pool (which starts at the base) is raised again.
    fn scale_pool(&mut self, backed_up: bool, drained: bool) {
        let next = next_concurrency(self.concurrency, backed_up, drained, &self.ctx().settings);
        if next == self.concurrency && next == self.ctx().settings.restoration.concurrency {
            return;
        }
        match self
            .args
            .pool
            .send(super::restoration_pool::PoolMsg::SetConcurrency(next))
        {
            Ok(()) if next != self.concurrency => {
                tracing::info!(
                    from = self.concurrency,
                    to = next,
                    "restoration concurrency changed"
                );
                self.concurrency = next;
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "cannot reach the restoration pool"),
        }
    }

    fn clean_up_early(&mut self) {
        match self.since_cleanup {
            Some(ticks) if ticks + 1 < CLEANUP_EVERY_TICKS => {
                self.since_cleanup = Some(ticks + 1);
                return;
            }
            _ => {}
        }
        match self.args.cleanup.send(CleanupMsg::SweepNow) {
            Ok(()) => {
                if self.since_cleanup.is_none() {
                    tracing::info!(
                        "storage past its limit: the cleanup runs now, and often while it stays so"
                    );
                }
                self.since_cleanup = Some(0);
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach the cleanup actor"),
        }
    }

    /// Sets the storage counters from a listing, in the background, at
    /// start-up and every `storage.usage_reconcile`.
    fn reconcile_storage_if_due(&mut self) {
        let every = self.ctx().settings.storage.usage_reconcile;
        if self.last_reconcile.is_some_and(|at| at.elapsed() < every)
            || self.reconciling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.last_reconcile = Some(Instant::now());
        let storage = self.ctx().storage.clone();
        let busy = self.reconciling.clone();
        tokio::spawn(async move {
            match storage.reconcile_usage().await {
                Ok(total) => tracing::debug!(total, "storage usage reconciled"),
                Err(e) => tracing::warn!(error = %e, "cannot list storage to reconcile its usage"),
            }
            busy.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::load_with_env(std::path::Path::new("/nonexistent"), &[]).expect("defaults")
    }

    #[test]
    fn readings_follow_their_rules() {
        let mut s = settings();
        s.alerts.queue_backup.threshold = 10;
        s.alerts.high_error_rate.min_jobs = 4;
        s.alerts.storage_limit.limit_bytes = 1000;
        let m = Measurements {
            restoration_depth: 11,
            finished_jobs: 4,
            failed_jobs: 1,
            timed_jobs: 4,
            p95_seconds: Some(400.0),
            ..Default::default()
        };
        assert!(read(AlertName::QueueBackup, &m, 0, &s).breached);
        let errors = read(AlertName::HighErrorRate, &m, 0, &s);
        assert!(errors.breached, "25 % > 20 %");
        assert!((errors.value - 0.25).abs() < 1e-9);
        assert!(
            !read(AlertName::SlowProcessing, &m, 0, &s).breached,
            "min_jobs is 5"
        );
        assert!(read(AlertName::StorageLimit, &m, 901, &s).breached);
        assert!(!read(AlertName::StorageLimit, &m, 900, &s).breached);
        s.alerts.storage_limit.limit_bytes = 0;
        assert!(
            !read(AlertName::StorageLimit, &m, u64::MAX, &s).breached,
            "no limit"
        );
    }

    #[test]
    fn too_few_jobs_never_alert_on_rates() {
        let s = settings();
        let m = Measurements {
            finished_jobs: 2,
            failed_jobs: 2,
            ..Default::default()
        };
        assert!(!read(AlertName::HighErrorRate, &m, 0, &s).breached);
    }

    #[test]
    fn concurrency_steps_up_to_the_cap_and_back_to_the_base() {
        let mut s = settings();
        s.restoration.concurrency = 8;
        s.restoration.concurrency_step = 4;
        s.restoration.max_concurrency = 18;
        assert_eq!(next_concurrency(8, true, false, &s), 12);
        assert_eq!(next_concurrency(16, true, false, &s), 18);
        assert_eq!(next_concurrency(18, true, false, &s), 18);
        assert_eq!(
            next_concurrency(18, false, false, &s),
            18,
            "still above the threshold"
        );
        assert_eq!(next_concurrency(18, false, true, &s), 14);
        assert_eq!(next_concurrency(10, false, true, &s), 8);
        assert_eq!(next_concurrency(8, false, true, &s), 8);
    }
}
