-- Windows are now added into `load_windows` in the transaction that accepts
-- them, so the staging table and its fold are gone. Rows still staged by a
-- pre-release build (at most one planner tick of telemetry) are dropped with it.
DROP TABLE telemetry_pending;
