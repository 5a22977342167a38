-- ferry's team state: one estate's audit ledger and apply lock (run by `ferry state init`, in
-- the schema the state URL names, as that schema's owner). Never edit an applied migration:
-- ferry refuses a database whose migrations differ from its own; add a new one.

-- The ledger: one row per entry, `line` byte for byte the entry's line in a ledger file (the
-- canonical JSON its hash covers), so an export of either backend verifies the same way.
-- `epoch`: the apply lock's epoch of the apply that wrote it (NULL outside an apply).
CREATE TABLE ledger (
    seq bigint PRIMARY KEY CHECK (seq >= 0),
    line text NOT NULL,
    epoch bigint,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Append-only, whoever asks: UPDATE, DELETE and TRUNCATE are refused (an owner who disables
-- the triggers is found by `ferry ledger verify --checkpoints`).
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ferry ledger is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER ledger_no_change BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- The apply lock: one row, a lease. `token` names the holder's acquisition, `epoch` counts
-- acquisitions and breaks; lease and heartbeat are the database's own clock (one clock for
-- every client). Every append locks this row first: appends are serialised by it, and a
-- fenced append compares its token with the holder's in the same transaction.
CREATE TABLE apply_lock (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch bigint NOT NULL DEFAULT 0,
    holder text,
    token text,
    lease_until timestamptz,
    heartbeat timestamptz
);
INSERT INTO apply_lock (id) VALUES (true);
