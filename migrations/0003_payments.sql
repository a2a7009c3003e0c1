-- Payments buy exactly what was sold (issue "every payment buys exactly what
-- was paid for"): a checkout freezes its photos and prices, refunds are rows
-- written before the provider is called, a refund that arrives before its
-- payment is kept, and every payment the shop turns down leaves an audit row.

-- A checkout can wait for a delayed payment method, and a paid checkout the
-- shop could not honour is refunded.
ALTER TABLE checkout_sessions DROP CONSTRAINT checkout_sessions_status_check;
ALTER TABLE checkout_sessions ADD CONSTRAINT checkout_sessions_status_check
    CHECK (status IN ('open', 'awaiting_payment', 'paid', 'failed', 'expired', 'refunded'));
-- What the provider said about the mode the checkout runs in (live or test).
ALTER TABLE checkout_sessions ADD COLUMN livemode boolean NOT NULL DEFAULT false;
-- The line items sent to the provider, as sent: [{kind, name, unit_amount, quantity}].
ALTER TABLE checkout_sessions ADD COLUMN line_items jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE checkout_sessions ADD COLUMN payment_intent_id text;
-- When the shop last asked the provider about this checkout (rate limit of the poll).
ALTER TABLE checkout_sessions ADD COLUMN synced_at timestamptz;
-- A checkout outlives its upload session: a payment that lands after the
-- photos were swept must still be recognised (and refunded).
ALTER TABLE checkout_sessions ALTER COLUMN upload_session_id DROP NOT NULL;
ALTER TABLE checkout_sessions DROP CONSTRAINT checkout_sessions_upload_session_id_fkey;
ALTER TABLE checkout_sessions ADD CONSTRAINT checkout_sessions_upload_session_id_fkey
    FOREIGN KEY (upload_session_id) REFERENCES upload_sessions (id) ON DELETE SET NULL;
CREATE INDEX checkout_sessions_unsettled ON checkout_sessions (expires_at)
    WHERE status IN ('open', 'awaiting_payment');

-- The photos a checkout sold, in order, with what each costs. No foreign key
-- to file_uploads: a photo removed after its checkout was voided stays named here.
CREATE TABLE checkout_photos (
    checkout_session_id  text NOT NULL REFERENCES checkout_sessions (id) ON DELETE CASCADE,
    position             integer NOT NULL CHECK (position > 0),
    file_upload_id       uuid NOT NULL,
    unit_amount          bigint NOT NULL CHECK (unit_amount >= 0),
    PRIMARY KEY (checkout_session_id, position)
);

-- Checkouts opened before this migration sold the photos their session had
-- then; where the count still agrees, those are frozen as what they sold.
INSERT INTO checkout_photos (checkout_session_id, position, file_upload_id, unit_amount)
SELECT c.id, row_number() OVER (PARTITION BY c.id ORDER BY f.created_at, f.id), f.id, c.unit_amount
FROM checkout_sessions c JOIN file_uploads f ON f.session_id = c.upload_session_id
WHERE c.status = 'open'
  AND c.quantity = (SELECT count(*) FROM file_uploads g WHERE g.session_id = c.upload_session_id);
UPDATE checkout_sessions
SET line_items = jsonb_build_array(jsonb_build_object(
        'kind', 'repair', 'name', 'Photo restoration', 'unit_amount', unit_amount, 'quantity', quantity))
WHERE line_items = '[]'::jsonb;

-- An upload session whose checkout was completed with a delayed payment
-- method waits for the money; its photos must not be swept meanwhile.
ALTER TABLE upload_sessions DROP CONSTRAINT upload_sessions_status_check;
ALTER TABLE upload_sessions ADD CONSTRAINT upload_sessions_status_check
    CHECK (status IN ('open', 'checkout_started', 'awaiting_payment', 'paid', 'payment_failed', 'expired'));

-- Every refund the shop makes: the row is committed before the provider is
-- called and completed after, so a crash in between retries with the same
-- idempotency key and refunds once.
CREATE TABLE refunds (
    id                  uuid PRIMARY KEY,
    order_id            uuid REFERENCES orders (id) ON DELETE SET NULL,
    checkout_session_id text,
    payment_intent_id   text NOT NULL,
    amount              bigint NOT NULL CHECK (amount > 0),
    currency            text NOT NULL,
    -- The whole payment this refund is part of (for the provider's records).
    payment_amount      bigint NOT NULL CHECK (payment_amount >= amount),
    reason              text NOT NULL
                        CHECK (reason IN ('failed_photos', 'payment_mismatch', 'duplicate_payment',
                                          'photos_gone', 'operator', 'customer')),
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sending', 'succeeded', 'failed')),
    idempotency_key     text NOT NULL UNIQUE,
    provider_refund_id  text,
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    locked_by           text,
    lease_until         timestamptz,
    last_error          text,
    detail              jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz
);
CREATE INDEX refunds_due ON refunds (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX refunds_order ON refunds (order_id);
CREATE INDEX refunds_payment ON refunds (payment_intent_id);

-- What a photo cost, and the refund that gave it back (at most one).
ALTER TABLE images ADD COLUMN unit_amount bigint NOT NULL DEFAULT 0 CHECK (unit_amount >= 0);
ALTER TABLE images ADD COLUMN refund_id uuid REFERENCES refunds (id) ON DELETE SET NULL;
UPDATE images i SET unit_amount = o.amount_total / o.image_count FROM orders o WHERE i.order_id = o.id;

-- `charge.refunded` for a payment the shop has no order for (yet): Stripe
-- does not order its events, so a later payment event must find it.
CREATE TABLE refund_notices (
    payment_intent_id  text PRIMARY KEY,
    amount_refunded    bigint NOT NULL CHECK (amount_refunded >= 0),
    refunded           boolean NOT NULL,
    event_id           text NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT now()
);

-- Every payment the shop turned down or could not honour, and why.
CREATE TABLE payment_audit (
    id                   bigserial PRIMARY KEY,
    checkout_session_id  text NOT NULL,
    payment_intent_id    text,
    event_id             text,
    reason               text NOT NULL,
    detail               jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_audit_checkout ON payment_audit (checkout_session_id);
