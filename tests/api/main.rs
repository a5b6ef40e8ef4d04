//! HTTP-level tests of `ballast serve`: each test starts the real server on
//! 127.0.0.1:0 against a fresh database — SQLite always, PostgreSQL too when
//! `BALLAST_TEST_POSTGRES_URL` names a role that may create databases.

mod helpers;

mod auth;
mod clusters;
mod contract;
mod covisit;
mod crash;
mod faults_gpu;
mod faults_http;
mod faults_ingest;
mod health;
mod metrics;
mod plans;
mod replicas;
mod telemetry;
mod trace;
mod workers;
