-- Co-visit counts of a cluster load window (issue 16): `covisit[l][e][k]`,
-- tokens that chose expert e in layer l and some expert of group k, summed
-- over the worker windows that carried them. One row per (layer, group)
-- holding E values, like load_window_layers (about 1 KB for 256 experts, so
-- rows stay in the table and are updated in place): a DeepSeek-V3 window is
-- 58 x 8 rows. `windows` counts the worker windows summed into the row; a
-- bucket's counts are complete only when it equals the load rows' `windows`
-- (a worker that sent no counts leaves the bucket without co-visit).
-- Written in the same transaction as the load rows.
CREATE TABLE load_window_covisit (
    cluster TEXT NOT NULL,
    lineage BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    layer BIGINT NOT NULL,
    grp BIGINT NOT NULL,
    windows BIGINT NOT NULL,
    counts BYTEA NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (cluster, lineage, bucket, layer, grp)
);
