-- Operations: the Monitor's alerts, and operator retries of failed photos.

-- One row per alert, shared by every instance: an episode is fired (and
-- emailed) by whichever instance moves the row first, once.
CREATE TABLE alerts (
    name          text PRIMARY KEY
                  CHECK (name IN ('queue_backup', 'slow_processing', 'high_error_rate', 'storage_limit')),
    status        text NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'firing', 'resolved')),
    episode       integer NOT NULL DEFAULT 0 CHECK (episode >= 0),
    breach_since  timestamptz,          -- the condition has held since; NULL while clear
    value         double precision,     -- the measurement at the last transition
    fired_at      timestamptz,
    resolved_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO alerts (name) VALUES ('queue_backup'), ('slow_processing'), ('high_error_rate'), ('storage_limit');

-- The Monitor's windows look at recently finished jobs.
CREATE INDEX restoration_jobs_finished ON restoration_jobs (finished_at) WHERE finished_at IS NOT NULL;

-- An operator's retry reopens a finished order; each round gets its own outcome email.
ALTER TABLE orders ADD COLUMN retry_round integer NOT NULL DEFAULT 0 CHECK (retry_round >= 0);
