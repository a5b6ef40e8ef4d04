-- A cluster load window is stored one row per layer (E values, about 1 KB)
-- instead of one L x E blob: every ingest batch rewrites the window it adds
-- to, and a 60 KB blob lives out of line (PostgreSQL TOAST), so each rewrite
-- left a dead copy that autovacuum had to chase. Rows this small stay in the
-- table and are updated in place. Aggregates of pre-release builds are not
-- carried over.
CREATE TABLE load_window_layers (
    cluster TEXT NOT NULL,
    lineage BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    layer BIGINT NOT NULL,
    -- Worker windows summed into the bucket (the same in every layer row).
    windows BIGINT NOT NULL,
    load BYTEA NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (cluster, lineage, bucket, layer)
);
DROP TABLE load_windows;
