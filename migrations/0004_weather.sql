-- Faults are weather (issue "the shop outlives its dependencies"): an
-- attempt that never ran (the model's provider throttled it, or the shop's
-- own storage or database was away) is retried without spending one of the
-- photo's attempts, for at most `restoration.throttle_deadline` in a row.

ALTER TABLE restoration_jobs DROP CONSTRAINT restoration_jobs_error_kind_check;
ALTER TABLE restoration_jobs ADD CONSTRAINT restoration_jobs_error_kind_check
    CHECK (error_kind IN ('permanent', 'transient', 'throttled', 'outage'));
-- Since when the job's attempts have been turned away without running; NULL
-- once one ran.
ALTER TABLE restoration_jobs ADD COLUMN uncharged_since timestamptz;
