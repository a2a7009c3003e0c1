-- RestoreClick's whole data model (DESIGN.md "Data model").
-- Postgres is the source of truth: every status column is CHECKed against its
-- state machine's states, and the unique keys below are what make webhook
-- deliveries, orders and emails idempotent.

CREATE TABLE upload_sessions (
    id           uuid PRIMARY KEY,
    status       text NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'checkout_started', 'paid', 'payment_failed', 'expired')),
    email        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
-- Cleanup scans unpaid sessions by expiry.
CREATE INDEX upload_sessions_expiry ON upload_sessions (expires_at) WHERE status <> 'paid';

-- A photo accepted into an upload session, stored under uploads/temp/.
CREATE TABLE file_uploads (
    id            uuid PRIMARY KEY,
    session_id    uuid NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
    filename      text NOT NULL,          -- as the customer sent it: display only, never a path
    stem          text NOT NULL,          -- sanitised: [A-Za-z0-9_-]{1,60}
    ext           text NOT NULL CHECK (ext IN ('jpg', 'png', 'webp', 'tiff')),
    content_type  text NOT NULL,
    bytes         bigint NOT NULL CHECK (bytes > 0),
    width         integer NOT NULL CHECK (width > 0),
    height        integer NOT NULL CHECK (height > 0),
    sha256        text NOT NULL,
    storage_key   text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_uploads_session ON file_uploads (session_id, created_at, id);

-- Checkout sessions created at the payment provider (Stripe, or the dev page).
CREATE TABLE checkout_sessions (
    id                 text PRIMARY KEY,  -- cs_…
    upload_session_id  uuid NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
    provider           text NOT NULL CHECK (provider IN ('stripe', 'dev')),
    status             text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid', 'failed', 'expired')),
    url                text NOT NULL,
    quantity           integer NOT NULL CHECK (quantity > 0),
    unit_amount        bigint NOT NULL CHECK (unit_amount >= 0),
    amount_total       bigint NOT NULL CHECK (amount_total >= 0),
    currency           text NOT NULL,
    email              text,
    idempotency_key    text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL
);
CREATE INDEX checkout_sessions_upload ON checkout_sessions (upload_session_id, created_at);

CREATE TABLE customers (
    id          uuid PRIMARY KEY,
    email       text NOT NULL UNIQUE,     -- lower-cased
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id                           uuid PRIMARY KEY,
    upload_session_id            uuid NOT NULL UNIQUE REFERENCES upload_sessions (id),
    stripe_checkout_session_id   text NOT NULL UNIQUE,
    stripe_payment_intent_id     text,
    customer_id                  uuid REFERENCES customers (id),
    email                        text,
    status                       text NOT NULL
                                 CHECK (status IN ('pending_payment', 'processing', 'completed', 'failed', 'refunded')),
    access_token_hash            bytea NOT NULL,
    amount_total                 bigint NOT NULL CHECK (amount_total >= 0),
    amount_refunded              bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    currency                     text NOT NULL,
    image_count                  integer NOT NULL CHECK (image_count > 0),
    failed_images                integer NOT NULL DEFAULT 0 CHECK (failed_images >= 0),
    owner_id                     text,
    lease_until                  timestamptz,
    restarts                     integer NOT NULL DEFAULT 0,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    completed_at                 timestamptz,
    refunded_at                  timestamptz,
    purged_at                    timestamptz
);
CREATE INDEX orders_payment_intent ON orders (stripe_payment_intent_id);
CREATE INDEX orders_status ON orders (status, created_at);
-- Lease sweeps look only at live orders.
CREATE INDEX orders_live_lease ON orders (lease_until) WHERE status IN ('pending_payment', 'processing');
CREATE INDEX orders_retention ON orders (completed_at) WHERE purged_at IS NULL AND status IN ('completed', 'failed', 'refunded');

CREATE TABLE images (
    id              uuid PRIMARY KEY,
    order_id        uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    file_upload_id  uuid REFERENCES file_uploads (id) ON DELETE SET NULL,
    position        integer NOT NULL CHECK (position > 0),
    filename        text NOT NULL,
    stem            text NOT NULL,
    ext             text NOT NULL,
    content_type    text NOT NULL,
    bytes           bigint NOT NULL,
    width           integer NOT NULL,
    height          integer NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'uploaded', 'processing', 'completed', 'failed')),
    temp_key        text NOT NULL,
    original_key    text NOT NULL,
    restored_key    text,
    restored_bytes  bigint,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    UNIQUE (order_id, position)
);
CREATE INDEX images_pending ON images (order_id) WHERE status IN ('pending', 'uploaded', 'processing');

CREATE TABLE restoration_jobs (
    id               uuid PRIMARY KEY,
    image_id         uuid NOT NULL UNIQUE REFERENCES images (id) ON DELETE CASCADE,
    order_id         uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'queued', 'processing', 'completed', 'failed')),
    provider         text,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL CHECK (max_attempts > 0),
    external_id      text,              -- the provider's prediction id for the current attempt
    next_attempt_at  timestamptz,
    last_error       text,
    error_kind       text CHECK (error_kind IN ('permanent', 'transient')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);
CREATE INDEX restoration_jobs_due ON restoration_jobs (next_attempt_at) WHERE status IN ('pending', 'queued');
CREATE INDEX restoration_jobs_order ON restoration_jobs (order_id);
CREATE INDEX restoration_jobs_external ON restoration_jobs (external_id) WHERE external_id IS NOT NULL;

CREATE TABLE email_queue (
    id                   uuid PRIMARY KEY,
    idempotency_key      text NOT NULL UNIQUE,   -- order:{id}:confirmation, …
    order_id             uuid REFERENCES orders (id) ON DELETE SET NULL,
    kind                 text NOT NULL
                         CHECK (kind IN ('order_confirmation', 'restoration_complete', 'restoration_failed', 'admin_alert')),
    to_email             text NOT NULL,
    payload              jsonb NOT NULL DEFAULT '{}'::jsonb,
    status               text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts             integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts         integer NOT NULL CHECK (max_attempts > 0),
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    locked_by            text,
    lease_until          timestamptz,
    provider_message_id  text,
    last_error           text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz
);
CREATE INDEX email_queue_due ON email_queue (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX email_queue_order ON email_queue (order_id);

CREATE TABLE download_links (
    id                 uuid PRIMARY KEY,
    order_id           uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    token_hash         bytea NOT NULL UNIQUE,
    expires_at         timestamptz NOT NULL,
    max_uses           integer NOT NULL CHECK (max_uses > 0),
    uses               integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_used_at       timestamptz
);
CREATE INDEX download_links_expiry ON download_links (expires_at);
CREATE INDEX download_links_order ON download_links (order_id);

-- One row per third-party event ever processed: the guarantee behind Redis's fast path.
CREATE TABLE webhook_events (
    id            text PRIMARY KEY,            -- evt_… (Stripe) or the webhook-id (Replicate)
    source        text NOT NULL CHECK (source IN ('stripe', 'replicate')),
    event_type    text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    payload       jsonb NOT NULL
);
CREATE INDEX webhook_events_received ON webhook_events (received_at);

-- Append-only journal of every transition: the SSE stream's source and the audit trail.
CREATE TABLE order_events (
    id          bigserial PRIMARY KEY,
    order_id    uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    image_id    uuid REFERENCES images (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('order', 'image')),
    status      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_events_order ON order_events (order_id, id);
