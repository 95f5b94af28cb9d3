import type { Database } from 'better-sqlite3'

/** Applied in order, each once, each in its own transaction; never edit one that has shipped. */
/**
 * Retention's index of finished orders, as the last migration that touches it leaves it. The store
 * keeps it only while a retention of orders needs it (SqliteStore's `ordersFinishedIndex`).
 */
export const ORDERS_FINISHED_INDEX = "CREATE INDEX IF NOT EXISTS orders_finished ON orders (status, updated_at) WHERE status = 'Completed' OR status = 'Cancelled' OR status = 'Failed'"

const MIGRATIONS: string[] = [
  `
  CREATE TABLE orders (
    seq INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL,
    item_ids TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    available_at INTEGER NOT NULL,
    processing_started_at INTEGER,
    completed_at INTEGER,
    updated_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    claim_token TEXT,
    lease_until INTEGER
  );
  CREATE INDEX orders_claimable ON orders (available_at) WHERE status = 'Pending';
  CREATE INDEX orders_by_status ON orders (status, seq);
  CREATE INDEX orders_by_user ON orders (user_id, seq);
  CREATE TABLE order_stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
  INSERT INTO order_stats (name, value) VALUES
    ('Pending', 0), ('Processing', 0), ('Completed', 0), ('Failed', 0), ('Cancelled', 0),
    ('started', 0), ('pending_ms', 0), ('processing_ms', 0), ('total_ms', 0);
  CREATE TABLE populate_batches (
    batch_id TEXT PRIMARY KEY,
    total_entries INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  `
  CREATE TABLE service_keys (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
  INSERT INTO service_keys (name, value) VALUES ('cursor', lower(hex(randomblob(32))));
  `,
  `
  CREATE TABLE readiness_checks (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at INTEGER NOT NULL);
  INSERT INTO readiness_checks (id, checked_at) VALUES (1, 0);
  `,
  `
  CREATE INDEX orders_by_status_user ON orders (status, user_id, seq);
  `,
  `
  -- How far each populate got, written with each chunk, so that one cut short can be finished.
  ALTER TABLE populate_batches ADD COLUMN entries_done INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE populate_batches ADD COLUMN failure_count INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE populate_batches ADD COLUMN failed_ids TEXT NOT NULL DEFAULT '[]';
  -- Batches recorded before kept no progress: taken as finished, their ids stay used.
  UPDATE populate_batches SET entries_done = total_entries;
  `,
  `
  -- Webhooks: endpoints, one delivery per event and endpoint (its id is the webhook-id), and
  -- per-endpoint counts kept with each delivery's change, like order_stats (one shard here).
  CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_error TEXT,
    last_error_at INTEGER
  ) WITHOUT ROWID;
  CREATE TABLE webhook_deliveries (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    order_id TEXT,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_token TEXT,
    last_error TEXT,
    last_status_code INTEGER,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER,
    updated_at INTEGER NOT NULL
  );
  CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
  CREATE INDEX webhook_deliveries_chain ON webhook_deliveries (endpoint_id, order_id) WHERE status = 'pending';
  CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, status);
  CREATE TABLE webhook_stats (
    endpoint_id TEXT NOT NULL,
    name TEXT NOT NULL,
    shard INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, name, shard)
  ) WITHOUT ROWID;
  `,
  `
  -- Whether processors claim orders (POST /processing/pause and /resume), kept across restarts.
  CREATE TABLE processing_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL CHECK (state IN ('running', 'paused')),
    since INTEGER NOT NULL
  );
  INSERT INTO processing_state (id, state, since) VALUES (1, 'running', CAST(unixepoch('subsec') * 1000 AS INTEGER));
  `,
  `
  -- What the processing step returned (JSON text), written with the completion.
  ALTER TABLE orders ADD COLUMN result TEXT;
  `,
  `
  -- The W3C traceparent of the request that created the order (only while tracing is on), so that
  -- its attempts and webhooks, in any process, join the request's trace.
  ALTER TABLE orders ADD COLUMN traceparent TEXT;
  `,
  `
  -- Endpoints deleted whose deliveries are still being removed, a batch at a time, in the
  -- background: removing them in the delete itself held the store for seconds with a long history.
  CREATE TABLE webhook_endpoint_purges (
    endpoint_id TEXT PRIMARY KEY,
    deleted_at INTEGER NOT NULL
  );
  `,
  `
  -- Retention and erasure: each sweep batch is a range of one of these. Partial, so an order enters
  -- orders_finished once, when it finishes, and a delivery webhook_deliveries_settled once, when settled.
  CREATE INDEX orders_finished ON orders (status, updated_at) WHERE status IN ('Completed', 'Cancelled', 'Failed');
  CREATE INDEX webhook_deliveries_settled ON webhook_deliveries (updated_at) WHERE status IN ('delivered', 'failed');
  CREATE INDEX webhook_deliveries_by_order ON webhook_deliveries (order_id) WHERE order_id IS NOT NULL;
  `,
  `
  -- Each endpoint's circuit breaker: its failed attempts in a row, and while its circuit is open,
  -- until when its deliveries wait (then one probe goes).
  ALTER TABLE webhook_endpoints ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE webhook_endpoints ADD COLUMN circuit_open_until INTEGER;
  `,
  `
  -- Room the readiness check writes besides its time (see SQL.readinessCheck).
  ALTER TABLE readiness_checks ADD COLUMN room BLOB;
  `,
  `
  -- A partial index whose condition is an IN list made SQLite build a temporary table (an 8 KiB
  -- page zeroed) for each row inserted or updated, to test the row against the list: 64,000
  -- instructions an order with retention off, 16% of the end-to-end CPU (callgrind, 20,000 orders
  -- created and completed: 10.05 G instructions against 8.77 G without orders_finished, 8.64 G
  -- with it written so). Alternatives joined with OR are tested in place, and a sweep's
  -- status = 'Completed' still selects the index. Keep SQLite's partial indexes so.
  DROP INDEX orders_finished;
  ${ORDERS_FINISHED_INDEX};
  DROP INDEX webhook_deliveries_settled;
  CREATE INDEX webhook_deliveries_settled ON webhook_deliveries (updated_at) WHERE status = 'delivered' OR status = 'failed';
  `,
  `
  -- Customers whose finished orders are being erased (DELETE /orders?user_id=N): kept until the
  -- erasure's last batch, in its transaction, so that one cut short by a stop or a crash is finished.
  CREATE TABLE erasures (
    user_id INTEGER PRIMARY KEY,
    requested_at INTEGER NOT NULL
  );
  `,
  `
  -- When a populate batch finished (its last chunk's time): retention keeps the record that long
  -- after it, so that a populate sent again meanwhile gets the first call's answer.
  ALTER TABLE populate_batches ADD COLUMN finished_at INTEGER;
  UPDATE populate_batches SET finished_at = created_at WHERE entries_done = total_entries;
  `,
  `
  -- A customer's orders are listed (and erased) through orders_by_status_user, one range per status:
  -- orders_by_user cost every insert of an order an index entry.
  -- IF EXISTS: an operator may have dropped it by hand meanwhile.
  DROP INDEX IF EXISTS orders_by_user;
  `
]

export function migrate (db: Database): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)')
  const current = (db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').get() as { v: number }).v
  MIGRATIONS.forEach((sql, index) => {
    const version = index + 1
    if (version <= current) return
    db.transaction(() => {
      db.exec(sql)
      db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(version, Date.now())
    })()
  })
}
