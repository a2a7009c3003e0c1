-- Every journal entry wakes the live-progress streams of its order, on
-- every instance, through NOTIFY (delivered at commit; one per order and
-- transaction, as Postgres folds equal payloads), instead of each stream
-- polling the journal.
CREATE FUNCTION notify_order_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_events', NEW.order_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER order_events_notify
    AFTER INSERT ON order_events
    FOR EACH ROW EXECUTE FUNCTION notify_order_event();
