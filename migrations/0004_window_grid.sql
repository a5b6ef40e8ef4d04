-- The grid the stored load windows are cut on (`--window`, `--window-grace`),
-- recorded by the service at every start. A stored bucket number is a time
-- only on its grid, so whoever reads the history straight from the database
-- (`ballast replay --database-url`) needs the grid as much as the windows.
-- One row (`id` = 1); the last service to start wrote it.
CREATE TABLE window_grid (
    id BIGINT PRIMARY KEY,
    window_ms BIGINT NOT NULL,
    grace_ms BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL
);
