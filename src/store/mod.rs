//! The database: one code path over SQLite and PostgreSQL.
//!
//! Everything goes through sqlx's `Any` driver with portable SQL (`$n`
//! placeholders, `ON CONFLICT`, `RETURNING`, BIGINT/TEXT/BYTEA columns), so
//! the two backends differ in exactly two places, both here:
//!
//! * **Writers.** SQLite has one writer per file. Rather than letting
//!   connections race for its lock (its busy handler sleeps for milliseconds
//!   at a time, which wrecks tail latency), writers queue on an in-process
//!   gate and open `BEGIN IMMEDIATE` transactions. One process owns an SQLite
//!   file. PostgreSQL writers run concurrently.
//! * **Cluster lock.** Folding telemetry and publishing a plan must happen
//!   once per cluster even with several replicas on one PostgreSQL, so those
//!   transactions take `pg_advisory_xact_lock(key(cluster))`. On SQLite the
//!   writer gate already serialises them.

pub mod clusters;
pub mod decisions;
pub mod plans;
pub mod telemetry;
pub mod workers;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Connection, SqlSafeStr, Transaction};
use thiserror::Error;
use tokio::sync::{Mutex, MutexGuard};

use crate::domain::load_codec::CodecError;
use crate::domain::ClusterName;

/// The migrations in `migrations/`, compiled in so the binary is self-contained.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "service",
        include_str!("../../migrations/0001_service.sql"),
    ),
    (
        2,
        "ingest_without_staging",
        include_str!("../../migrations/0002_ingest_without_staging.sql"),
    ),
    (
        3,
        "load_window_layers",
        include_str!("../../migrations/0003_load_window_layers.sql"),
    ),
    (
        4,
        "window_grid",
        include_str!("../../migrations/0004_window_grid.sql"),
    ),
    (
        5,
        "receipts_per_lineage",
        include_str!("../../migrations/0005_receipts_per_lineage.sql"),
    ),
    (
        6,
        "load_window_covisit",
        include_str!("../../migrations/0006_load_window_covisit.sql"),
    ),
];

/// Which database the URL selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database failure, or stored data that no longer parses.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("unsupported database URL `{0}`: use sqlite:PATH or postgres://...")]
    Url(String),
    #[error("SQLite database {file}: directory {dir} does not exist (create it, or point --database-url elsewhere)")]
    MissingDirectory { file: String, dir: String },
    #[error("cannot reach PostgreSQL at {target}: {detail}")]
    Unreachable { target: String, detail: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// SQLite's `synchronous` setting for the service's database (WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SqliteSynchronous {
    /// Commits survive a process crash; an OS crash or power loss may drop
    /// the last ones.
    #[default]
    Normal,
    /// Every commit is synced to disk: it also survives power loss.
    Full,
}

/// Whether a connection may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadWrite,
    ReadOnly,
}

/// The connection pool plus what the backend needs to write safely.
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// `Some` on SQLite: the queue every write transaction waits in.
    write_gate: Option<Mutex<()>>,
}

/// A write transaction; on SQLite it also holds the writer gate.
pub struct WriteTx<'a> {
    // Declared first so the transaction ends (rolls back) before the gate opens.
    pub tx: Transaction<'static, sqlx::Any>,
    _gate: Option<MutexGuard<'a, ()>>,
}

impl WriteTx<'_> {
    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// The PostgreSQL channel on which replicas announce cluster changes.
pub const CHANGES_CHANNEL: &str = "ballast_changes";

/// The default database: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:ballast.db";

impl Store {
    /// Connects to `url` (`sqlite:PATH`, created if missing, or `postgres://`).
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Store> {
        Self::connect_with(url, max_connections, SqliteSynchronous::Normal).await
    }

    /// [`Store::connect`] with a choice of SQLite durability (ignored on PostgreSQL).
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        synchronous: SqliteSynchronous,
    ) -> StoreResult<Store> {
        Self::open(url, max_connections, Access::ReadWrite, synchronous).await
    }

    /// Connects to an existing database to read it beside the service that
    /// writes it (a replay reading history): an SQLite file is opened
    /// read-only and never created, a PostgreSQL session refuses writes.
    pub async fn connect_read_only(url: &str, max_connections: u32) -> StoreResult<Store> {
        Self::open(
            url,
            max_connections,
            Access::ReadOnly,
            SqliteSynchronous::Normal,
        )
        .await
    }

    async fn open(
        url: &str,
        max_connections: u32,
        access: Access,
        synchronous: SqliteSynchronous,
    ) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        let url = match backend {
            // Create the file on first start (read-only: never); keep any
            // mode the operator gave.
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                let mode = match access {
                    Access::ReadWrite => "rwc",
                    Access::ReadOnly => "ro",
                };
                format!("{url}{sep}mode={mode}")
            }
            _ => url.to_owned(),
        };
        match backend {
            Backend::Sqlite if access == Access::ReadWrite => sqlite_directory_exists(&url)?,
            Backend::Postgres => reachable(&url).await?,
            Backend::Sqlite => {}
        }
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let pragmas: &[&'static str] = match (backend, access) {
                        // WAL: readers never block the writer. synchronous=NORMAL
                        // in WAL mode loses nothing when the process dies (kill -9);
                        // only an OS crash or power loss can drop the last commits
                        // (`--sqlite-synchronous full` closes that). Automatic
                        // checkpoints would run inside a writer's commit, under the
                        // writer gate, stalling every queued ingest for tens of
                        // milliseconds; `checkpoint` runs them beside the writers.
                        (Backend::Sqlite, Access::ReadWrite) => &[
                            "PRAGMA journal_mode = WAL",
                            match synchronous {
                                SqliteSynchronous::Normal => "PRAGMA synchronous = NORMAL",
                                SqliteSynchronous::Full => "PRAGMA synchronous = FULL",
                            },
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA wal_autocheckpoint = 0",
                        ],
                        // The journal mode is the writer's to choose.
                        (Backend::Sqlite, Access::ReadOnly) => &["PRAGMA busy_timeout = 10000"],
                        (Backend::Postgres, Access::ReadWrite) => &[],
                        (Backend::Postgres, Access::ReadOnly) => {
                            &["SET default_transaction_read_only = on"]
                        }
                    };
                    for pragma in pragmas {
                        sqlx::query(*pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store {
            pool,
            backend,
            write_gate: (backend == Backend::Sqlite).then(|| Mutex::new(())),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    fn migrator() -> Migrator {
        Migrator::with_migrations(
            MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        )
    }

    /// Applies the embedded migrations (idempotent; run at start).
    pub async fn migrate(&self) -> StoreResult<()> {
        let _gate = self.gate().await;
        Self::migrator().run(&self.pool).await?;
        if self.backend == Backend::Postgres {
            // Every ingest batch rewrites one row per layer of its window:
            // room on each page lets the new version land beside the old
            // one (a HOT update), which needs no index change or vacuum.
            for statement in [
                "ALTER TABLE load_window_layers SET (fillfactor = 50)",
                "ALTER TABLE load_window_covisit SET (fillfactor = 50)",
            ] {
                sqlx::query(statement).execute(&self.pool).await?;
            }
        }
        Ok(())
    }

    /// True when every embedded migration is recorded as applied successfully.
    pub async fn migrations_applied(&self) -> StoreResult<bool> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?;
        Ok(MIGRATIONS.iter().all(|(v, _, _)| applied.contains(v)))
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    async fn gate(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }

    /// Opens a write transaction (queued behind other writers on SQLite).
    pub async fn write(&self) -> StoreResult<WriteTx<'_>> {
        let gate = self.gate().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _gate: gate })
    }

    /// Opens a read-only transaction whose queries all see one snapshot, so
    /// that rows written together (a window's load and its co-visit counts)
    /// are read together. SQLite in WAL mode fixes the snapshot at the first
    /// read of a deferred transaction; PostgreSQL needs REPEATABLE READ, as
    /// its default gives each statement its own snapshot.
    pub async fn snapshot(&self) -> StoreResult<Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN DEFERRED").await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }

    /// Serialises this transaction with every other one that locks `cluster`,
    /// across replicas (PostgreSQL); released at commit or rollback.
    pub async fn lock_cluster(
        &self,
        tx: &mut WriteTx<'_>,
        cluster: &ClusterName,
    ) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock_key(cluster.as_str()))
                .execute(&mut *tx.tx)
                .await?;
        }
        Ok(())
    }

    /// Copies the SQLite write-ahead log back into the database file without
    /// waiting for readers or the writer (PostgreSQL: nothing to do). Run
    /// periodically, since automatic checkpoints are off.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Tells the other replicas that `cluster` changed (a plan or its
    /// topology), when `tx` commits; PostgreSQL only (one process owns an
    /// SQLite file). Polling (`--sync-interval`) still catches anything missed.
    pub async fn announce_change(
        &self,
        tx: &mut WriteTx<'_>,
        cluster: &ClusterName,
    ) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(cluster.as_str())
                .execute(&mut *tx.tx)
                .await?;
        }
        Ok(())
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A stable 64-bit key for a cluster's advisory lock (FNV-1a of a prefixed
/// name, so other applications' keys on the same database are unlikely to
/// collide).
pub fn lock_key(cluster: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"ballast:".iter().chain(cluster.as_bytes()) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Converts a stored non-negative BIGINT back to `usize`.
/// A stored cluster name, parsed again: the column holds only names that
/// were parsed on the way in, so anything else is corruption.
fn cluster_name(row: &sqlx::any::AnyRow, column: &str) -> StoreResult<ClusterName> {
    let text: String = sqlx::Row::try_get(row, column)?;
    ClusterName::parse(&text).map_err(|e| StoreError::Corrupt {
        what: "cluster name",
        detail: e.to_string(),
    })
}

fn to_usize(what: &'static str, value: i64) -> StoreResult<usize> {
    usize::try_from(value).map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("{value} is negative"),
    })
}

/// An optional `f64` parameter. sqlx 0.9's `Any` driver sends a NULL `f64`
/// to PostgreSQL as FLOAT4 (its NULL type mapping swaps REAL and DOUBLE), and
/// the prepared statement then rejects later non-NULL values; NULL is sent
/// as the type that maps to FLOAT8 instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NullableF64(pub Option<f64>);

impl sqlx::Type<sqlx::Any> for NullableF64 {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <f64 as sqlx::Type<sqlx::Any>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Any> for NullableF64 {
    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match self.0 {
            Some(v) => <f64 as sqlx::Encode<sqlx::Any>>::encode_by_ref(&v, buf),
            None => <Option<f32> as sqlx::Encode<sqlx::Any>>::encode_by_ref(&None, buf),
        }
    }
}

/// SQLite says only "unable to open database file" when the file's
/// directory is missing; name the directory instead.
fn sqlite_directory_exists(url: &str) -> StoreResult<()> {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    let dir = match std::path::Path::new(path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => return Ok(()),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(StoreError::MissingDirectory {
            file: path.to_owned(),
            dir: dir.display().to_string(),
        })
    }
}

/// How long the first connection to PostgreSQL may take before the start
/// fails: a server that does not answer within it is as good as down.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One direct connection before the pool is built: the pool retries a
/// refused connection until its acquire timeout and then reports only
/// "pool timed out", hiding "connection refused" or a bad password.
async fn reachable(url: &str) -> StoreResult<()> {
    let target = without_credentials(url);
    let unreachable = |detail: String| StoreError::Unreachable {
        target: target.clone(),
        detail,
    };
    let options = AnyConnectOptions::from_str(url)?;
    match tokio::time::timeout(FIRST_CONNECT_TIMEOUT, AnyConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => {
            // Closing a connection we no longer need; its error changes nothing.
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(err)) => Err(unreachable(err.to_string())),
        Err(_) => Err(unreachable(format!(
            "no answer within {} s",
            FIRST_CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// The URL without its user and password, for messages.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let host = host.split('?').next().unwrap_or(host);
            format!("{scheme}://{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords() {
        assert_eq!(
            redacted("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redacted("sqlite:ballast.db"), "sqlite:ballast.db");
    }

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("a"), lock_key("a"));
        assert_ne!(lock_key("a"), lock_key("b"));
    }
}
