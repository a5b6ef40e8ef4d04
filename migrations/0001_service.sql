-- Ballast service schema. Portable SQL: the same file runs on SQLite and on
-- PostgreSQL, so it uses only BIGINT, DOUBLE PRECISION, TEXT and BYTEA
-- (SQLite stores BYTEA values as blobs), times as Unix milliseconds, and no
-- auto-increment columns (every key is natural).

-- One row per cluster. `lineage` counts topology changes: plans of an older
-- lineage no longer fit. `last_cycle_at_ms`/`cycles` let exactly one replica
-- claim each planner cycle.
CREATE TABLE clusters (
    name TEXT PRIMARY KEY,
    topology TEXT NOT NULL,
    lineage BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    last_cycle_at_ms BIGINT NOT NULL,
    cycles BIGINT NOT NULL
);

-- One row per GPU worker of a cluster's current topology. `last_seq` is the
-- highest telemetry sequence number accepted (monotonicity check).
CREATE TABLE workers (
    cluster TEXT NOT NULL,
    name TEXT NOT NULL,
    gpu BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    last_seen_at_ms BIGINT,
    down_since_ms BIGINT,
    applied_version BIGINT,
    applied_at_ms BIGINT,
    PRIMARY KEY (cluster, name)
);

-- Idempotency keys of accepted telemetry windows, kept for the dedup horizon.
CREATE TABLE telemetry_receipts (
    cluster TEXT NOT NULL,
    worker TEXT NOT NULL,
    seq BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (cluster, worker, seq)
);
CREATE INDEX telemetry_receipts_age ON telemetry_receipts (received_at_ms);

-- Accepted windows not yet folded into their cluster window. A fold adds them
-- to `load_windows` and deletes them in one transaction (exactly once).
CREATE TABLE telemetry_pending (
    cluster TEXT NOT NULL,
    worker TEXT NOT NULL,
    seq BIGINT NOT NULL,
    lineage BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    load BYTEA NOT NULL,
    PRIMARY KEY (cluster, worker, seq)
);

-- The cluster's load per time bucket: the sum of every worker window whose
-- end falls in the bucket (f64 little-endian, L x E).
CREATE TABLE load_windows (
    cluster TEXT NOT NULL,
    lineage BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    windows BIGINT NOT NULL,
    load BYTEA NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (cluster, lineage, bucket)
);

-- Published plans: immutable, versioned per cluster (versions continue across
-- lineages and never repeat). `document` is the exact body served.
CREATE TABLE plans (
    cluster TEXT NOT NULL,
    version BIGINT NOT NULL,
    lineage BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    reason TEXT NOT NULL,
    stats TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (cluster, version)
);

-- Every version a worker reported as applied.
CREATE TABLE acks (
    cluster TEXT NOT NULL,
    worker TEXT NOT NULL,
    version BIGINT NOT NULL,
    acked_at_ms BIGINT NOT NULL,
    PRIMARY KEY (cluster, worker, version)
);

-- Why each planner candidate was published or skipped.
CREATE TABLE planner_decisions (
    cluster TEXT NOT NULL,
    cycle BIGINT NOT NULL,
    decided_at_ms BIGINT NOT NULL,
    lineage BIGINT NOT NULL,
    base_version BIGINT,
    published_version BIGINT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    observed_imbalance DOUBLE PRECISION,
    predicted_imbalance DOUBLE PRECISION,
    migrations BIGINT,
    net_gain DOUBLE PRECISION,
    streak BIGINT NOT NULL,
    PRIMARY KEY (cluster, cycle)
);
