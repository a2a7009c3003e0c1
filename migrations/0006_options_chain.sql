-- Restoration options as a chain of steps: what each photo was sold (frozen
-- by its checkout, copied to its image when paid), and one row per step of
-- its chain (repair → faces → colorize → upscale). The photo's job drives
-- the step it is on (`restoration_jobs.step`), with the attempts and
-- prediction id of that step; a finished step's row keeps its output, so a
-- crash resumes at the first unfinished step and never recomputes one.
ALTER TABLE checkout_photos ADD COLUMN options text[] NOT NULL DEFAULT '{}';
ALTER TABLE images ADD COLUMN options text[] NOT NULL DEFAULT '{}';

-- The step the job is on (a position in `image_steps`), and the job's
-- attempt count when that step began: attempt numbers stay unique across
-- the chain, so an answer for an earlier step's attempt is always fenced off.
ALTER TABLE restoration_jobs ADD COLUMN step integer NOT NULL DEFAULT 0 CHECK (step >= 0);
ALTER TABLE restoration_jobs ADD COLUMN step_attempts_from integer NOT NULL DEFAULT 0
    CHECK (step_attempts_from >= 0);
-- A fresh seed for the models that take one, set when the customer asks
-- for a redo (kept on the row, so a resumed attempt uses the same one).
ALTER TABLE restoration_jobs ADD COLUMN seed bigint;

CREATE TABLE image_steps (
    image_id     uuid NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    position     integer NOT NULL CHECK (position >= 0),
    name         text NOT NULL CHECK (name IN ('repair', 'faces', 'colorize', 'upscale_2x', 'upscale_4x')),
    -- `pending` until the step's output is stored; the running step's own
    -- state (queued, processing, failed) is its job's.
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed')),
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    provider     text,
    external_id  text,
    output_key   text,
    output_bytes bigint,
    finished_at  timestamptz,
    PRIMARY KEY (image_id, position),
    CHECK (status = 'pending' OR output_key IS NOT NULL)
);

-- Photos paid before this migration have one step, their repair; a finished
-- one keeps its restored photo as that step's output.
INSERT INTO image_steps (image_id, position, name, status, attempts, provider, external_id, output_key,
                         output_bytes, finished_at)
SELECT i.id, 0, 'repair',
       CASE WHEN j.status = 'completed' AND i.restored_key IS NOT NULL THEN 'completed' ELSE 'pending' END,
       coalesce(j.attempts, 0), j.provider, j.external_id,
       CASE WHEN j.status = 'completed' THEN i.restored_key END,
       CASE WHEN j.status = 'completed' THEN i.restored_bytes END,
       CASE WHEN j.status = 'completed' THEN j.finished_at END
FROM images i LEFT JOIN restoration_jobs j ON j.image_id = i.id;

-- The customer's review of a restored photo, within `review.days` of the
-- order finishing: once per photo, a redo or a refund.
CREATE TABLE image_reviews (
    image_id         uuid PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    order_id         uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    action           text NOT NULL CHECK (action IN ('redo', 'refund')),
    note             text CHECK (length(note) <= 1000),
    -- The request's `Idempotency-Key`: the same request again is answered
    -- as the first was.
    idempotency_key  text,
    refund_id        uuid REFERENCES refunds (id),
    created_at       timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE email_queue DROP CONSTRAINT email_queue_kind_check;
ALTER TABLE email_queue ADD CONSTRAINT email_queue_kind_check
    CHECK (kind IN ('order_confirmation', 'restoration_complete', 'restoration_failed', 'admin_alert',
                    'review_accepted'));
