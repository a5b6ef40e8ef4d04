-- Telemetry receipts are keyed per topology lineage. A topology change
-- starts every worker again at `last_seq` -1, and agents restarted for the
-- new topology begin again at seq 0; keyed by (cluster, worker, seq) alone,
-- the old lineage's receipts made those seqs collide (a unique violation
-- that failed the whole group-commit batch) or answered a window that is new
-- in the new lineage as a `duplicate` and dropped it.
CREATE TABLE telemetry_receipts_by_lineage (
    cluster TEXT NOT NULL,
    lineage BIGINT NOT NULL,
    worker TEXT NOT NULL,
    seq BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (cluster, lineage, worker, seq)
);
-- Receipts of the current lineage carry over (a retry within the dedup
-- horizon is still a duplicate). A receipt above its worker's `last_seq`
-- cannot belong to the current lineage and is dropped; older lineages' lower
-- ones cannot be told apart and are kept: such a seq is below `last_seq`, so
-- it would be refused as not monotone anyway.
INSERT INTO telemetry_receipts_by_lineage (cluster, lineage, worker, seq, received_at_ms)
SELECT r.cluster, c.lineage, r.worker, r.seq, r.received_at_ms
FROM telemetry_receipts r
JOIN clusters c ON c.name = r.cluster
JOIN workers w ON w.cluster = r.cluster AND w.name = r.worker
WHERE r.seq <= w.last_seq;
DROP TABLE telemetry_receipts;
ALTER TABLE telemetry_receipts_by_lineage RENAME TO telemetry_receipts;
CREATE INDEX telemetry_receipts_age ON telemetry_receipts (received_at_ms);
