//! The issuance ledger: a durable record of every certificate citadel signed.
//!
//! It owns the `issuances` table (serial, SPIFFE ID, validity, requester, key
//! algorithm, authenticator, when recorded) in a SQLite file by default
//! (`<key-dir>/ledger.db`) or in PostgreSQL when given a `postgres://` URL, and the
//! schema migrations under `crates/citadel/migrations/{sqlite,postgres}`, applied on
//! open. It does not decide what to sign nor keep certificates themselves.
//!
//! The write path is a group commit, so that each issuance is durable before its
//! certificate is returned without paying one commit per certificate:
//! [`Ledger::record`] sends the issuance and a oneshot sender over a bounded channel →
//! the single writer task ([`writer`]) drains whatever is queued (up to
//! [`writer::MAX_BATCH`]) → writes the batch as one multi-row `INSERT` in one
//! transaction and commits → answers every waiter through its oneshot (a serial that
//! is already present gets [`LedgerError::Duplicate`], the others `Ok`). Reads
//! ([`Ledger::list`], [`Ledger::count`]) go straight to the pool.
//!
//! Durability: on SQLite the file is in WAL mode with `synchronous=NORMAL`. A commit
//! is then in the WAL before `record` returns, so it survives the process being
//! killed at any point (the crash test SIGKILLs a writer mid-stream); a power loss
//! may lose the last commits, which would need `synchronous=FULL`. On PostgreSQL a
//! commit is as durable as the server's `synchronous_commit` setting makes it.

mod url;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{mpsc, oneshot};

pub use url::redact;
use writer::Job;

/// One certificate issuance, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Issuance {
    /// The certificate's serial number in lowercase hex, no separators; unique.
    pub serial: String,
    /// The SPIFFE ID the certificate carries, e.g. `spiffe://cluster.local/ns/default/sa/web`.
    pub spiffe_id: String,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// Who asked: the token's subject or the client certificate's serial.
    pub requester: String,
    /// The CSR's public key algorithm, e.g. `ECDSA-P256` or `RSA-2048`.
    pub key_algorithm: String,
    /// How the requester was authenticated: `jwt`, `token-review` or `client-cert`.
    pub authenticator: String,
}

/// A row read back: the issuance plus when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Record {
    /// The issuance as recorded.
    #[serde(flatten)]
    pub issuance: Issuance,
    /// When its batch was committed, unix seconds.
    pub recorded_at: i64,
}

/// What [`Ledger::list`] returns: newest first, optionally filtered and limited.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// At most this many records; all when `None`.
    pub limit: Option<u32>,
    /// Only records for this SPIFFE ID.
    pub spiffe_id: Option<String>,
}

/// Why a ledger operation failed. URLs in messages have their password redacted.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The URL is neither `sqlite:` nor `postgres://`/`postgresql://`.
    #[error(
        "unsupported ledger URL {url:?}: use sqlite://PATH (a file, created if missing) or postgres://USER:PASSWORD@HOST/DB"
    )]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
    },
    /// The URL has a known scheme but sqlx could not parse it.
    #[error("invalid ledger URL {url}: {source}; fix the URL")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// sqlx's parse error.
        #[source]
        source: sqlx::Error,
    },
    /// The SQLite file's directory did not exist and could not be created.
    #[error(
        "cannot create the ledger directory {}: {source}; create it or choose another --key-dir / --db-url",
        path.display()
    )]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite file could not be created.
    #[error(
        "cannot create the ledger file {}: {source}; check the permissions of its directory or choose another --key-dir / --db-url",
        path.display()
    )]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// [`Ledger::open_existing`] found no SQLite file.
    #[error(
        "no ledger at {}: start citadel with --key-dir DIR first (it creates DIR/ledger.db), or pass --db-url",
        path.display()
    )]
    NotFound {
        /// The file that is missing.
        path: PathBuf,
    },
    /// The database could not be opened or reached.
    #[error(
        "cannot open the ledger at {url}: {source}; check the URL, that the file is writable or the server is running, and the credentials"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// The schema migrations failed (e.g. a migration already applied was changed).
    #[error(
        "cannot migrate the ledger schema at {url}: {source}; the database may belong to another program or a newer citadel"
    )]
    Migrate {
        /// The URL, password redacted.
        url: String,
        /// sqlx's migration error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The serial is already in the ledger; nothing was written for this issuance.
    #[error(
        "certificate serial {serial} is already in the ledger; serials must be unique, so issue with a fresh serial"
    )]
    Duplicate {
        /// The serial that was refused.
        serial: String,
    },
    /// The batch holding this issuance could not be committed; it was not recorded
    /// and its certificate must not be returned.
    #[error(
        "cannot commit to the ledger at {url}: {source}; the issuance was not recorded (check disk space or the server)"
    )]
    Write {
        /// The URL, password redacted.
        url: String,
        /// sqlx's error, shared by every issuance of the failed batch.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// A read (`list`, `count`) failed.
    #[error("cannot read the ledger at {url}: {source}")]
    Read {
        /// The URL, password redacted.
        url: String,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// The ledger was closed (citadel is shutting down) or its writer task is gone.
    #[error("the ledger is closed; no more issuances can be recorded")]
    Closed,
}

/// Result of ledger operations.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// The connection pool of either backend.
#[derive(Clone)]
pub(crate) enum Pool {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// Runs the same code against whichever pool backs the ledger.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::ledger::Pool::Sqlite($p) => $body,
            $crate::ledger::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The ledger: cheap to clone; clones share the writer task and the pool.
///
/// The writer task is spawned on the Tokio runtime that calls [`Ledger::open`] and
/// lives until [`Ledger::close`] or until every clone is dropped.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    jobs: mpsc::Sender<Job>,
    /// The URL with its password redacted, for messages.
    url: String,
}

/// How many issuances may wait for the writer before `record` callers wait to send.
const QUEUE: usize = 8192;

/// Which backend a URL names, and the SQLite options when it is SQLite.
enum Target {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

impl Ledger {
    /// The default ledger URL: the SQLite file `<key_dir>/ledger.db`.
    pub fn default_url(key_dir: &Path) -> String {
        url::sqlite_url(&key_dir.join("ledger.db"))
    }

    /// Opens (creating if needed) the ledger at `url` and applies pending migrations.
    ///
    /// `sqlite://PATH` (or `sqlite:PATH`) is a file, created with its parent
    /// directory if missing; `postgres://` or `postgresql://` is a server database,
    /// which must exist. Any other scheme is refused.
    pub async fn open(url: &str) -> Result<Ledger> {
        Self::open_with(url, true).await
    }

    /// Opens an existing ledger without creating it: a SQLite file that does not
    /// exist is [`LedgerError::NotFound`] (and is not created). Pending migrations
    /// are applied as by [`Ledger::open`]. For readers such as `mizzen ca list`.
    pub async fn open_existing(url: &str) -> Result<Ledger> {
        Self::open_with(url, false).await
    }

    async fn open_with(url: &str, create: bool) -> Result<Ledger> {
        let shown = redact(url);
        let invalid = |source| LedgerError::InvalidUrl {
            url: shown.clone(),
            source,
        };
        let target = if url.starts_with("sqlite:") {
            Target::Sqlite(url.parse().map_err(invalid)?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Target::Postgres(url.parse().map_err(invalid)?)
        } else {
            return Err(LedgerError::UnsupportedUrl { url: shown });
        };
        let connect = |source| LedgerError::Connect {
            url: shown.clone(),
            source,
        };
        let migrate = |source| LedgerError::Migrate {
            url: shown.clone(),
            source,
        };
        let pool = match target {
            Target::Sqlite(options) => {
                let path = options.get_filename().to_path_buf();
                if create {
                    create_parent(&path)?;
                    create_private_file(&path)?;
                } else if !path.exists() {
                    return Err(LedgerError::NotFound { path });
                }
                let options = options
                    .create_if_missing(create)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5));
                // One direct connection first: it fails at once on a bad file or
                // server (a pool would retry until its timeout) and runs migrations.
                let mut conn = options.connect().await.map_err(connect)?;
                sqlx::migrate!("migrations/sqlite")
                    .run(&mut conn)
                    .await
                    .map_err(migrate)?;
                conn.close().await.map_err(connect)?;
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .map_err(connect)?;
                Pool::Sqlite(pool)
            }
            Target::Postgres(options) => {
                let mut conn = options.connect().await.map_err(connect)?;
                sqlx::migrate!("migrations/postgres")
                    .run(&mut conn)
                    .await
                    .map_err(migrate)?;
                conn.close().await.map_err(connect)?;
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .map_err(connect)?;
                Pool::Postgres(pool)
            }
        };
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(writer::run(pool.clone(), shown.clone(), queue));
        Ok(Ledger {
            inner: Arc::new(Inner {
                pool,
                jobs,
                url: shown,
            }),
        })
    }

    /// Records one issuance; returns once the batch holding it is committed.
    ///
    /// A serial already in the ledger is [`LedgerError::Duplicate`] and leaves the
    /// other issuances of its batch unaffected.
    pub async fn record(&self, issuance: Issuance) -> Result<()> {
        let (done, answer) = oneshot::channel();
        self.inner
            .jobs
            .send(Job::Record(issuance, done))
            .await
            .map_err(|_| LedgerError::Closed)?;
        answer.await.map_err(|_| LedgerError::Closed)?
    }

    /// Reads records newest first, filtered and limited by `query`.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Record>> {
        let rows: Vec<Row> = on_pool!(&self.inner.pool, pool => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT serial, spiffe_id, not_before, not_after, requester, \
                 key_algorithm, authenticator, recorded_at FROM issuances",
            );
            if let Some(id) = &query.spiffe_id {
                q.push(" WHERE spiffe_id = ").push_bind(id.clone());
            }
            q.push(" ORDER BY id DESC");
            if let Some(limit) = query.limit {
                q.push(" LIMIT ").push_bind(i64::from(limit));
            }
            q.build_query_as().fetch_all(pool).await
        })
        .map_err(|source| self.read_error(source))?;
        Ok(rows.into_iter().map(Record::from).collect())
    }

    /// How many issuances the ledger holds.
    pub async fn count(&self) -> Result<u64> {
        let (n,): (i64,) = on_pool!(&self.inner.pool, pool => {
            sqlx::query_as("SELECT COUNT(*) FROM issuances").fetch_one(pool).await
        })
        .map_err(|source| self.read_error(source))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The backend: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.inner.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// The ledger's URL with its password redacted, for logs.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Commits everything already queued, stops the writer and closes the pool.
    /// Later `record` calls fail with [`LedgerError::Closed`]; calling it twice is
    /// harmless.
    pub async fn close(&self) {
        let (done, flushed) = oneshot::channel();
        if self.inner.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = flushed.await;
        }
        on_pool!(&self.inner.pool, pool => pool.close().await);
    }

    fn read_error(&self, source: sqlx::Error) -> LedgerError {
        LedgerError::Read {
            url: self.inner.url.clone(),
            source,
        }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("backend", &self.backend())
            .field("url", &self.inner.url)
            .finish()
    }
}

/// Creates the directory a SQLite file lives in, if missing.
fn create_parent(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Creates a missing SQLite file empty with mode 0600 (SQLite gives its WAL files
/// the same mode): the ledger says who holds which identity, for the CA's eyes.
fn create_private_file(file: &Path) -> Result<()> {
    crate::files::create_new(file, b"", 0o600)
        .map(|_| ())
        .map_err(|source| LedgerError::CreateFile {
            path: file.to_path_buf(),
            source,
        })
}

/// A row of `issuances` as read.
#[derive(sqlx::FromRow)]
struct Row {
    serial: String,
    spiffe_id: String,
    not_before: i64,
    not_after: i64,
    requester: String,
    key_algorithm: String,
    authenticator: String,
    recorded_at: i64,
}

impl From<Row> for Record {
    fn from(r: Row) -> Record {
        Record {
            issuance: Issuance {
                serial: r.serial,
                spiffe_id: r.spiffe_id,
                not_before: r.not_before,
                not_after: r.not_after,
                requester: r.requester,
                key_algorithm: r.key_algorithm,
                authenticator: r.authenticator,
            },
            recorded_at: r.recorded_at,
        }
    }
}
