//! Wake-ups for the live-progress streams: one `LISTEN order_events`
//! connection per process, fanned out to the streams of each order. A
//! stream that is woken reads the journal (`order_events`) for what is new;
//! the notification carries only the order's id. When the listening
//! connection is lost, notifications may have been missed, so every stream
//! is woken once it is back.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;
use uuid::Uuid;

const CHANNEL: &str = "order_events";

/// The wake-ups of every order someone is watching.
#[derive(Clone, Default)]
pub struct OrderFeed {
    watched: Arc<Mutex<HashMap<Uuid, watch::Sender<u64>>>>,
}

/// One stream's wake-ups for its order; unwatched when dropped.
pub struct Watch {
    feed: OrderFeed,
    order_id: Uuid,
    rx: Option<watch::Receiver<u64>>,
}

impl Watch {
    /// Waits for the next change to the order's journal (or a reconnect);
    /// a change since the last call returns at once, so none is lost.
    pub async fn changed(&mut self) {
        match &mut self.rx {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut watched = self.feed.lock();
        if watched
            .get(&self.order_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            watched.remove(&self.order_id);
        }
    }
}

impl OrderFeed {
    /// Starts listening on a connection of `pool`, reconnecting with a
    /// growing pause when the database is away.
    pub fn start(pool: PgPool) -> Self {
        let feed = Self::default();
        tokio::spawn(feed.clone().listen(pool));
        feed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, watch::Sender<u64>>> {
        self.watched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wake-ups for `order_id`, from now on.
    pub fn watch(&self, order_id: Uuid) -> Watch {
        let rx = self
            .lock()
            .entry(order_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Watch {
            feed: self.clone(),
            order_id,
            rx: Some(rx),
        }
    }

    /// Orders watched on this instance.
    pub fn watched(&self) -> usize {
        self.lock().len()
    }

    fn wake(&self, order_id: Uuid) {
        if let Some(tx) = self.lock().get(&order_id) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn wake_all(&self) {
        for tx in self.lock().values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    async fn listen(self, pool: PgPool) {
        let mut pause = Duration::from_millis(500);
        loop {
            match self.listen_once(&pool, &mut pause).await {
                Ok(()) => return, // the pool closed: the process is stopping
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "the live-progress listener lost the database");
                    // Streams fall back on reading the journal meanwhile.
                    self.wake_all();
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Listens until the pool closes (`Ok`) or the connection fails.
    async fn listen_once(&self, pool: &PgPool, pause: &mut Duration) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        *pause = Duration::from_millis(500);
        // What happened while nobody listened is in the journal.
        self.wake_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Ok(order_id) = notification.payload().parse::<Uuid>() {
                        self.wake(order_id);
                    }
                }
                // Reconnected: anything in between may have been missed.
                Ok(None) => self.wake_all(),
                Err(sqlx::Error::PoolClosed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}
