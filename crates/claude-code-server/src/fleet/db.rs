//! The fleet's database: one schema on PostgreSQL (many replicas) or SQLite (one
//! server alone), reached through sqlx's `Any` driver so every statement is written
//! once.
//!
//! Portable choices: times are Unix milliseconds (`BIGINT`), ids are UUID text, JSON is
//! text, flags are `0`/`1` integers. Statements use `$1`-style placeholders, rewritten
//! to SQLite's `?1` when needed. What only PostgreSQL has (`FOR UPDATE SKIP LOCKED`,
//! `LISTEN/NOTIFY`) is used there; SQLite has one writer, which is the same guarantee
//! for a single server.

use std::time::Duration;

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};

/// Which database the fleet runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Postgres,
    Sqlite,
}

impl Kind {
    /// The clause that locks the rows a `SELECT` reads until the transaction ends:
    /// `FOR UPDATE` on PostgreSQL; nothing on SQLite, whose one writer holds the whole
    /// database from a writing statement's start.
    pub(crate) fn row_lock(self) -> &'static str {
        match self {
            Kind::Postgres => "FOR UPDATE",
            Kind::Sqlite => "",
        }
    }
}

/// A database error, as the server reports it (the details go to the log).
#[derive(Debug)]
pub(crate) struct DbError(pub(crate) sqlx::Error);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the database failed: {}", self.0)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl DbError {
    /// Whether the database could not write for want of room: PostgreSQL's `disk_full`
    /// (53100), SQLite's `SQLITE_FULL` (13), or its `SQLITE_IOERR_WRITE` (778: a write
    /// the system refused, `EFBIG` past a file size limit among them).
    pub(crate) fn is_storage_full(&self) -> bool {
        match &self.0 {
            sqlx::Error::Database(err) => {
                matches!(err.code().as_deref(), Some("53100" | "13" | "778"))
            }
            _ => false,
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        DbError(err)
    }
}

pub(crate) type DbResult<T> = Result<T, DbError>;

/// The pool, and which database it is.
#[derive(Clone)]
pub(crate) struct Db {
    pool: AnyPool,
    kind: Kind,
    url: String,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("kind", &self.kind).finish()
    }
}

/// How many of the oldest claimable runs one claim considers: runs a tenant at its
/// concurrency limit keeps queued are passed over, and more than this many of them at
/// the head of the queue delay the runs behind them until they start.
pub(crate) const CLAIM_WINDOW: i64 = 256;

/// The most events one read of a run's log returns.
pub(crate) const EVENT_PAGE: usize = 256;

// Both limits are written into their statements as literals, not bound: SQLite's
// planner reads a bound `LIMIT` value, which makes the statement's cached plan expire
// at every new binding, so each execution was compiled again (seen in `perf` as
// `sqlite3Reprepare`, about 9% of the database thread's time).

// A run's `next_seq` stays past its highest event: `append_event` inserts an event at
// `next_seq` in one statement and this trigger moves `next_seq` on (an insert at a
// number reserved beforehand leaves it as it is). Created when missing, never
// replaced: a different body needs a new name.
const NEXT_SEQ_TRIGGER_SQLITE: &str =
    "CREATE TRIGGER IF NOT EXISTS ccs_events_next_seq AFTER INSERT ON ccs_events
     FOR EACH ROW BEGIN
         UPDATE ccs_runs SET next_seq = NEW.seq + 1
          WHERE id = NEW.run_id AND next_seq <= NEW.seq;
     END";
const NEXT_SEQ_TRIGGER_POSTGRES: [&str; 2] = [
    "CREATE OR REPLACE FUNCTION ccs_events_next_seq() RETURNS trigger
     LANGUAGE plpgsql AS $body$
     BEGIN
         UPDATE ccs_runs SET next_seq = NEW.seq + 1
          WHERE id = NEW.run_id AND next_seq <= NEW.seq;
         RETURN NULL;
     END
     $body$",
    "CREATE TRIGGER ccs_events_next_seq AFTER INSERT ON ccs_events
     FOR EACH ROW EXECUTE FUNCTION ccs_events_next_seq()",
];

/// A tenant's limit by tenant id (`None`: no limit).
pub(crate) type TenantLimit = dyn Fn(&str) -> Option<u32> + Send + Sync;

/// The fleet's clock, in milliseconds since the Unix epoch: the database's clock as
/// last read ([`Db::sync_clock`]: when the store opens, then at every heartbeat),
/// carried forward by this process's monotonic clock. Leases, heartbeats and expiries
/// are compared across replicas, so none may follow a replica's own wall clock: one
/// set an hour ahead would see every other replica's lease as run out and take its runs
/// over, one set behind would write leases that look run out to everyone else. Before
/// the first reading: the wall clock.
pub(crate) fn now_ms() -> i64 {
    let anchor = *CLOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match anchor {
        Some((at_ms, at)) => {
            at_ms.saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX))
        }
        None => chrono::Utc::now().timestamp_millis(),
    }
}

/// The last reading of the database's clock and when (monotonic) it was taken.
static CLOCK: std::sync::Mutex<Option<(i64, std::time::Instant)>> = std::sync::Mutex::new(None);

/// How long a statement waits for a connection: while the database is down (or every
/// connection busy), requests get their `503` after this, not after a client's own
/// timeout (it was 30 s: a restart of the database held every request that long).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `/ready` waits for the database to answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A run's state. `queued → claimed → running → succeeded | failed | interrupted |
/// cancelled`.
pub(crate) mod state {
    pub(crate) const QUEUED: &str = "queued";
    pub(crate) const CLAIMED: &str = "claimed";
    pub(crate) const RUNNING: &str = "running";
    pub(crate) const SUCCEEDED: &str = "succeeded";
    pub(crate) const FAILED: &str = "failed";
    pub(crate) const INTERRUPTED: &str = "interrupted";
    pub(crate) const CANCELLED: &str = "cancelled";

    /// Whether a run in this state is over.
    pub(crate) fn is_final(state: &str) -> bool {
        matches!(state, SUCCEEDED | FAILED | INTERRUPTED | CANCELLED)
    }
}

/// How a run ends, for [`Db::finish_run`]: its final state and event, and what else
/// the run leaves behind, written with them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunEnd<'a> {
    /// The final state ([`state`]).
    pub(crate) state: &'a str,
    /// A `message` event written just before the final one (the run's result, when
    /// its stream ended with it).
    pub(crate) last_message: Option<&'a Value>,
    /// The final event: its kind (`done` or `error`) and data.
    pub(crate) event: (&'a str, &'a Value),
    /// Whether the run used a tool with side effects.
    pub(crate) side_effects: bool,
    /// The CLI conversation the run continued or started, and what the run cost: the
    /// run's tenant owns it (unless another tenant already does).
    pub(crate) conversation: Option<(&'a str, f64)>,
    /// The session whose turn the run was: it continues `conversation` next, on this
    /// replica's hot process.
    pub(crate) session: Option<&'a str>,
    /// The run's cost and the tools it used, for its audit row (`None` leaves the
    /// row as it is).
    pub(crate) audit: Option<(f64, &'a [String])>,
    /// A session to delete with the run (its first turn was cancelled: the client
    /// never learned of it).
    pub(crate) forget_session: Option<&'a str>,
}

impl<'a> RunEnd<'a> {
    /// An end with only its state and final event.
    pub(crate) fn new(state: &'a str, kind: &'a str, data: &'a Value) -> Self {
        RunEnd {
            state,
            last_message: None,
            event: (kind, data),
            side_effects: false,
            conversation: None,
            session: None,
            audit: None,
            forget_session: None,
        }
    }
}

/// A run to queue ([`Db::queue_run`]), with what its audit row records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRun<'a> {
    pub(crate) id: &'a str,
    pub(crate) tenant: &'a str,
    /// The session whose turn it is.
    pub(crate) session: Option<&'a str>,
    pub(crate) request: &'a crate::runs::RunRequest,
    /// Whether a client streams its events (a run nobody reads is cancelled).
    pub(crate) stream: bool,
    /// The endpoint that submitted it (the audit row's `endpoint`).
    pub(crate) endpoint: &'a str,
    /// Whether the audit row keeps the prompt's text (`--audit-prompts`).
    pub(crate) audit_prompt: bool,
}

/// A run as the database keeps it.
#[derive(Debug, Clone)]
pub(crate) struct RunRow {
    pub(crate) id: String,
    pub(crate) tenant: String,
    pub(crate) session: Option<String>,
    /// The request (prompt and options) as JSON.
    pub(crate) request: Value,
    pub(crate) state: String,
    pub(crate) replica: Option<String>,
    pub(crate) epoch: i64,
    pub(crate) stream: bool,
    pub(crate) cancel: Option<String>,
    pub(crate) created_at: i64,
}

impl RunRow {
    fn from_row(row: &AnyRow) -> DbResult<RunRow> {
        Ok(RunRow {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant_id")?,
            session: row.try_get("session_id")?,
            request: json_col(row, "request")?,
            state: row.try_get("state")?,
            replica: row.try_get("replica")?,
            epoch: row.try_get("epoch")?,
            stream: row.try_get::<i64, _>("stream")? != 0,
            cancel: row.try_get("cancel")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// One event of a run's log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventRow {
    pub(crate) seq: i64,
    pub(crate) kind: String,
    pub(crate) data: Value,
    /// When it was appended (Unix ms).
    pub(crate) at: i64,
}

/// A server session (`/v1/sessions`).
#[derive(Debug, Clone)]
pub(crate) struct SessionRow {
    pub(crate) id: String,
    pub(crate) tenant: String,
    pub(crate) cwd: String,
    /// The session's request options (model, mode, ...) as JSON.
    pub(crate) options: Value,
    pub(crate) state: String,
    pub(crate) cli_session: Option<String>,
    pub(crate) home: Option<String>,
    pub(crate) workspace: Option<String>,
    pub(crate) turns: i64,
    pub(crate) total_cost: f64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl SessionRow {
    fn from_row(row: &AnyRow) -> DbResult<SessionRow> {
        Ok(SessionRow {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant_id")?,
            cwd: row.try_get("cwd")?,
            options: json_col(row, "options")?,
            state: row.try_get("state")?,
            cli_session: row.try_get("cli_session_id")?,
            home: row.try_get("home_replica")?,
            workspace: row.try_get("workspace")?,
            turns: row.try_get("turns")?,
            total_cost: row.try_get("total_cost")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// An approval a run waits for.
#[derive(Debug, Clone)]
pub(crate) struct ApprovalRow {
    pub(crate) state: String,
    pub(crate) answer: Option<Value>,
    pub(crate) expires_at: i64,
}

fn json_col(row: &AnyRow, column: &str) -> DbResult<Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| DbError(sqlx::Error::Decode(Box::new(e))))
}

/// Writes of one transaction that read nothing back, run together by
/// [`Db::run_batch`]. Each statement is written as it would be alone, with `$1`,
/// `$2`, ... numbering its own arguments.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    statements: Vec<(String, Vec<Arg>)>,
}

impl Batch {
    /// Adds `sql` (a constant, or built from constants: values travel in `args`).
    pub(crate) fn push(&mut self, sql: impl Into<String>, args: Vec<Arg>) {
        self.statements.push((sql.into(), args));
    }
}

/// A value bound to a statement of a [`Batch`].
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(i64),
    Real(f64),
    Text(String),
}

impl Arg {
    fn bind_to<'q>(
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
        arg: Arg,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        match arg {
            Arg::Int(v) => query.bind(v),
            Arg::Real(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
        }
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Real(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}

/// `sql` with each `$n` placeholder written as SQLite's anonymous `?`, and the
/// argument it names pushed onto `out` (once per use): sqlx binds the anonymous
/// parameters of a multi-statement query in order across its statements. (Numbered
/// ones would not do: SQLite counts a statement's parameters up to its highest
/// number, and sqlx binds the unnamed gaps below it from the same list, running out
/// before the named ones of a later statement.)
///
/// A batch's statements hold no `$` but their placeholders (no string literal with
/// one): a `$` that names none of `args` is an error, not a value bound out of place.
fn positional(sql: &str, args: &[Arg], out: &mut Vec<Arg>) -> DbResult<String> {
    let mut text = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let arg = after[..digits]
            .parse::<usize>()
            .ok()
            .and_then(|n| args.get(n.checked_sub(1)?))
            .ok_or_else(|| {
                DbError(sqlx::Error::Protocol(format!(
                    "a batch statement's `${}` names none of its {} arguments",
                    &after[..digits],
                    args.len()
                )))
            })?;
        text.push('?');
        out.push(arg.clone());
        rest = &after[digits..];
    }
    text.push_str(rest);
    Ok(text)
}

impl Db {
    /// Connects to `url` (`postgres://...` or `sqlite://path`) and creates the schema
    /// if it is missing.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached or set up.
    pub(crate) async fn connect(url: &str, max_connections: u32) -> DbResult<Db> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            Kind::Sqlite
        } else {
            Kind::Postgres
        };
        let options = AnyPoolOptions::new()
            .max_connections(if kind == Kind::Sqlite {
                4
            } else {
                max_connections
            })
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A SQLite connection is a file handle that does not go stale: no ping
            // round trip when a connection is taken from the pool (sqlx's default). A
            // PostgreSQL one can (a restarted server), so it is tested.
            .test_before_acquire(kind == Kind::Postgres)
            // A connection sqlx still counts inside a transaction is not handed out
            // again: when a COMMIT fails with an I/O error (a full disk), SQLite has
            // already rolled the transaction back, sqlx's ROLLBACK then fails too, and
            // the connection kept a transaction depth of 1 for good; every later
            // `BEGIN IMMEDIATE` on it failed ("begin_with at non-zero transaction
            // depth"), which stopped claims and takeovers after the disk had room again.
            // (A connection whose rollback is still on its way is closed too: rare.)
            .before_acquire(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == Kind::Sqlite {
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(url).await?;
        let db = Db {
            pool,
            kind,
            url: url.to_owned(),
        };
        db.migrate().await?;
        db.sync_clock().await?;
        Ok(db)
    }

    /// Reads the database's clock into [`now_ms`]. SQLite's clock is this host's, read
    /// once: afterwards the monotonic clock carries it, so a jump of the wall clock
    /// moves no lease.
    ///
    /// # Errors
    ///
    /// When the database does not answer.
    pub(crate) async fn sync_clock(&self) -> DbResult<()> {
        let asked = std::time::Instant::now();
        let db_ms = match self.kind {
            Kind::Postgres => sqlx::query(
                "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT) AS ms",
            )
            .fetch_one(&self.pool)
            .await?
            .try_get::<i64, _>("ms")?,
            Kind::Sqlite => {
                if CLOCK
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_some()
                {
                    return Ok(());
                }
                chrono::Utc::now().timestamp_millis()
            }
        };
        // Read about half way through the round trip.
        let half = asked.elapsed() / 2;
        *CLOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((db_ms, asked + half));
        Ok(())
    }

    /// A transaction that writes: on SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so it waits its turn under the busy timeout instead of failing
    /// with `SQLITE_BUSY` when another writer commits between its read and its write.
    async fn begin_write(&self) -> DbResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.kind {
            Kind::Postgres => self.pool.begin().await?,
            Kind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        })
    }

    /// Runs `batch` in `tx`; returns how many rows its statements changed, summed.
    ///
    /// On PostgreSQL each statement is its own round trip, as it would be anyway. On
    /// SQLite the statements go to sqlx's connection thread as one multi-statement
    /// query: one hand-off instead of one per statement, each of which costs two
    /// thread wake-ups (about 70 µs of CPU on the bench machine, BENCHMARKS.md). sqlx
    /// runs a multi-statement query with arguments on SQLite only and calls that
    /// deprecated (launchbadge/sqlx#3108): an upgrade that drops it fails every run's
    /// end in the tests at once.
    ///
    /// # Cancel safety
    ///
    /// Dropped part way, some statements may have run: the transaction is still open,
    /// and dropping it rolls them back (sqlx sends the `ROLLBACK` before the
    /// connection's next use).
    async fn run_batch(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        batch: Batch,
    ) -> DbResult<u64> {
        match self.kind {
            Kind::Postgres => {
                let mut changed = 0;
                for (sql, args) in batch.statements {
                    let query = args
                        .into_iter()
                        .fold(sqlx::query(AssertSqlSafe(sql)), Arg::bind_to);
                    changed += query.execute(&mut **tx).await?.rows_affected();
                }
                Ok(changed)
            }
            Kind::Sqlite => {
                if batch.statements.is_empty() {
                    return Ok(0);
                }
                let mut sql = String::new();
                let mut all = Vec::new();
                for (statement, args) in &batch.statements {
                    if !sql.is_empty() {
                        // On a line of its own: a statement's last line may be a comment.
                        sql.push_str("\n;\n");
                    }
                    sql.push_str(&positional(statement, args, &mut all)?);
                }
                let query = all
                    .into_iter()
                    .fold(sqlx::query(AssertSqlSafe(sql)), Arg::bind_to);
                Ok(query.execute(&mut **tx).await?.rows_affected())
            }
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The connection pool (for the audit log, which keeps its own table).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the database answers, within [`PING_TIMEOUT`].
    pub(crate) async fn ping(&self) -> bool {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    /// `sql` in this database's placeholder syntax. Every statement of this module is
    /// a constant or built from constants: values only ever travel as bound
    /// parameters.
    pub(crate) fn q(&self, sql: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(match self.kind {
            Kind::Postgres => sql.to_owned(),
            Kind::Sqlite => sql.replace('$', "?"),
        })
    }

    async fn migrate(&self) -> DbResult<()> {
        let float = match self.kind {
            Kind::Postgres => "DOUBLE PRECISION",
            Kind::Sqlite => "REAL",
        };
        let statements = [
            "CREATE TABLE IF NOT EXISTS ccs_replicas (
                id TEXT PRIMARY KEY,
                started_at BIGINT NOT NULL,
                heartbeat_at BIGINT NOT NULL,
                draining BIGINT NOT NULL DEFAULT 0,
                capacity BIGINT NOT NULL DEFAULT 0
            )"
            .to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS ccs_sessions (
                id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL,
                cwd TEXT NOT NULL,
                options TEXT NOT NULL,
                state TEXT NOT NULL,
                cli_session_id TEXT,
                home_replica TEXT,
                workspace TEXT,
                turns BIGINT NOT NULL DEFAULT 0,
                total_cost {float} NOT NULL DEFAULT 0,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            )"
            ),
            "CREATE INDEX IF NOT EXISTS ccs_sessions_tenant ON ccs_sessions (tenant_id, state)"
                .to_owned(),
            "CREATE TABLE IF NOT EXISTS ccs_runs (
                id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL,
                session_id TEXT,
                request TEXT NOT NULL,
                state TEXT NOT NULL,
                replica TEXT,
                epoch BIGINT NOT NULL DEFAULT 0,
                lease_until BIGINT,
                cancel TEXT,
                next_seq BIGINT NOT NULL DEFAULT 1,
                stream BIGINT NOT NULL DEFAULT 0,
                reader_seen_at BIGINT,
                side_effects BIGINT NOT NULL DEFAULT 0,
                outcome TEXT,
                created_at BIGINT NOT NULL,
                started_at BIGINT,
                ended_at BIGINT
            )"
            .to_owned(),
            "CREATE INDEX IF NOT EXISTS ccs_runs_state ON ccs_runs (state, created_at)".to_owned(),
            "CREATE INDEX IF NOT EXISTS ccs_runs_tenant ON ccs_runs (tenant_id, state)".to_owned(),
            // One turn at a time per session, whatever the isolation level: two
            // replicas (or two requests) queueing a turn of one session at once cannot
            // both pass `queue_run`'s NOT EXISTS on PostgreSQL's READ COMMITTED.
            "CREATE UNIQUE INDEX IF NOT EXISTS ccs_runs_one_turn ON ccs_runs (session_id)
                WHERE session_id IS NOT NULL AND state IN ('queued', 'claimed', 'running')"
                .to_owned(),
            "CREATE TABLE IF NOT EXISTS ccs_events (
                run_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                kind TEXT NOT NULL,
                data TEXT NOT NULL,
                at BIGINT NOT NULL,
                PRIMARY KEY (run_id, seq)
            )"
            .to_owned(),
            "CREATE TABLE IF NOT EXISTS ccs_approvals (
                id TEXT PRIMARY KEY,
                run_id TEXT NOT NULL,
                tenant_id TEXT NOT NULL,
                request TEXT NOT NULL,
                state TEXT NOT NULL,
                answer TEXT,
                expires_at BIGINT NOT NULL,
                created_at BIGINT NOT NULL
            )"
            .to_owned(),
            // A run that ends expires its waiting approvals.
            "CREATE INDEX IF NOT EXISTS ccs_approvals_run ON ccs_approvals (run_id, state)"
                .to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS ccs_conversations (
                cli_session_id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL,
                total_cost {float} NOT NULL DEFAULT 0,
                updated_at BIGINT NOT NULL
            )"
            ),
        ];
        if self.kind == Kind::Sqlite {
            // Persistent in the file: readers never block the writer.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&self.pool)
                .await?;
        }
        // Replicas starting together must not race to create tables.
        let mut tx = self.begin_write().await?;
        if self.kind == Kind::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(74927110)")
                .execute(&mut *tx)
                .await?;
        }
        for sql in statements {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        if self.kind == Kind::Sqlite {
            sqlx::query(NEXT_SEQ_TRIGGER_SQLITE)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if self.kind == Kind::Postgres {
            // In a transaction of its own, once: this one locks only `ccs_events`, so
            // it cannot deadlock with appends, which lock `ccs_events` and then (the
            // trigger) `ccs_runs`, whereas the statements above lock `ccs_runs` first.
            let mut tx = self.begin_write().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(74927110)")
                .execute(&mut *tx)
                .await?;
            let present = sqlx::query(
                "SELECT 1 FROM pg_trigger
                 WHERE tgrelid = 'ccs_events'::regclass AND tgname = 'ccs_events_next_seq'",
            )
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if !present {
                for sql in NEXT_SEQ_TRIGGER_POSTGRES {
                    sqlx::query(sql).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }

    // --- replicas ---------------------------------------------------------------------

    /// Records that replica `id` is alive now.
    pub(crate) async fn heartbeat_replica(
        &self,
        id: &str,
        draining: bool,
        capacity: i64,
    ) -> DbResult<()> {
        let now = now_ms();
        sqlx::query(self.q(
            "INSERT INTO ccs_replicas (id, started_at, heartbeat_at, draining, capacity)
             VALUES ($1, $2, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = $2, draining = $3, capacity = $4",
        ))
        .bind(id)
        .bind(now)
        .bind(i64::from(draining))
        .bind(capacity)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets replica `id` (a clean stop).
    pub(crate) async fn remove_replica(&self, id: &str) -> DbResult<()> {
        sqlx::query(self.q("DELETE FROM ccs_replicas WHERE id = $1"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The fleet's load: the run slots of the replicas alive since `live_since` (and
    /// not draining), and the runs running and queued now.
    pub(crate) async fn fleet_load(&self, live_since: i64) -> DbResult<(i64, i64, i64)> {
        let row = sqlx::query(self.q("SELECT
                (SELECT CAST(COALESCE(SUM(capacity), 0) AS BIGINT) FROM ccs_replicas
                  WHERE heartbeat_at >= $1 AND draining = 0) AS slots,
                (SELECT COUNT(*) FROM ccs_runs WHERE state IN ('claimed', 'running')) AS running,
                (SELECT COUNT(*) FROM ccs_runs WHERE state = 'queued') AS queued"))
        .bind(live_since)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            row.try_get("slots")?,
            row.try_get("running")?,
            row.try_get("queued")?,
        ))
    }

    /// Queued runs older than `before` (they waited longer than the queue allows).
    pub(crate) async fn stale_queued_runs(&self, before: i64) -> DbResult<Vec<String>> {
        let rows = sqlx::query(
            self.q("SELECT id FROM ccs_runs WHERE state = 'queued' AND created_at < $1"),
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    // --- runs -------------------------------------------------------------------------

    /// Queues a run with its audit row, in one transaction. A session's run is queued
    /// only while no other run of the session is queued or running (one turn at a
    /// time): `false` then, and nothing is written.
    pub(crate) async fn queue_run(&self, run: &NewRun<'_>) -> DbResult<bool> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(self.q(
            "INSERT INTO ccs_runs (id, tenant_id, session_id, request, state, stream, reader_seen_at, created_at)
             SELECT $1, $2, $3, $4, 'queued', $5, $6, $6
             WHERE $3 IS NULL OR NOT EXISTS (SELECT 1 FROM ccs_runs WHERE session_id = $3
                               AND state IN ('queued', 'claimed', 'running'))",
        ))
        .bind(run.id)
        .bind(run.tenant)
        .bind(run.session)
        .bind(serde_json::to_string(run.request).map_err(|e| DbError(sqlx::Error::Encode(Box::new(e))))?)
        .bind(i64::from(run.stream))
        .bind(now)
        .execute(&mut *tx)
        .await;
        let done = match done {
            // Another turn of the session was queued at the same time (the index
            // `ccs_runs_one_turn`): refused like one queued before.
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => return Ok(false),
            other => other?,
        };
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        crate::audit::submitted(self, &mut tx, run).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A run, if `tenant` owns it (any tenant's when `tenant` is `None`).
    pub(crate) async fn run(&self, id: &str, tenant: Option<&str>) -> DbResult<Option<RunRow>> {
        let row = sqlx::query(
            self.q("SELECT * FROM ccs_runs WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)"),
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(RunRow::from_row).transpose()
    }

    /// Claims up to `limit` queued runs for `replica`: a run of a session whose home is
    /// another live replica waits `home_grace_ms` for it. Each claim raises the run's
    /// epoch: every later write about the run carries it (fencing).
    ///
    /// A run is claimed only while its tenant has fewer runs claimed or running,
    /// fleet-wide, than `tenant_max_active` gives for the tenant (`None`: no limit).
    /// Claims are made under a lock every replica takes (on PostgreSQL an advisory
    /// lock; SQLite has one writer), so two replicas cannot both take a tenant's last
    /// slot. The oldest [`CLAIM_WINDOW`] claimable runs are considered at a time.
    pub(crate) async fn claim_runs(
        &self,
        replica: &str,
        limit: i64,
        lease_ms: i64,
        home_grace_ms: i64,
        live_since: i64,
        tenant_max_active: &TenantLimit,
    ) -> DbResult<Vec<RunRow>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let lock = match self.kind {
            Kind::Postgres => "FOR UPDATE OF r SKIP LOCKED",
            Kind::Sqlite => "",
        };
        let candidates = format!(
            "SELECT r.id, r.tenant_id FROM ccs_runs r
             LEFT JOIN ccs_sessions s ON s.id = r.session_id
             WHERE r.state = '{queued}' AND r.cancel IS NULL
               AND (s.home_replica IS NULL OR s.home_replica = $1 OR r.created_at <= $2
                    OR NOT EXISTS (SELECT 1 FROM ccs_replicas p
                                   WHERE p.id = s.home_replica AND p.heartbeat_at >= $3
                                     AND p.draining = 0))
             ORDER BY r.created_at
             LIMIT {CLAIM_WINDOW} {lock}",
            queued = state::QUEUED,
        );
        // Serializes the claims of every replica: the counts below then include the
        // claims committed before. On SQLite the write lock is taken at once: a read
        // transaction that writes later could find its snapshot stale (SQLITE_BUSY).
        let mut tx = match self.kind {
            Kind::Postgres => {
                let mut tx = self.begin_write().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(74927111)")
                    .execute(&mut *tx)
                    .await?;
                tx
            }
            Kind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        };
        let rows = sqlx::query(self.q(&candidates))
            .bind(replica)
            .bind(now - home_grace_ms)
            .bind(live_since)
            .fetch_all(&mut *tx)
            .await?;
        let mut active: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        let mut chosen = Vec::new();
        for row in &rows {
            if i64::try_from(chosen.len()).unwrap_or(i64::MAX) >= limit {
                break;
            }
            let id: String = row.try_get("id")?;
            let tenant: String = row.try_get("tenant_id")?;
            if let Some(max) = tenant_max_active(&tenant) {
                let count = match active.get(&tenant) {
                    Some(n) => *n,
                    None => {
                        let n: i64 = sqlx::query(self.q("SELECT COUNT(*) AS n FROM ccs_runs
                             WHERE tenant_id = $1 AND state IN ('claimed', 'running')"))
                        .bind(&tenant)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("n")?;
                        n
                    }
                };
                if count >= i64::from(max) {
                    active.insert(tenant, count);
                    continue;
                }
                active.insert(tenant, count + 1);
            }
            chosen.push(id);
        }
        let mut claimed = Vec::with_capacity(chosen.len());
        for id in chosen {
            let row = sqlx::query(self.q(&format!(
                "UPDATE ccs_runs SET state = '{claimed}', replica = $2, epoch = epoch + 1,
                    lease_until = $3, started_at = $4
                 WHERE id = $1 AND state = '{queued}' AND cancel IS NULL
                 RETURNING *",
                claimed = state::CLAIMED,
                queued = state::QUEUED,
            )))
            .bind(&id)
            .bind(replica)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                claimed.push(RunRow::from_row(&row)?);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Renews a run's lease; `false` when the lease is lost (another replica took the
    /// run over, or it ended).
    pub(crate) async fn renew_lease(
        &self,
        run: &str,
        replica: &str,
        epoch: i64,
        lease_ms: i64,
    ) -> DbResult<bool> {
        let done = sqlx::query(self.q("UPDATE ccs_runs SET lease_until = $4
             WHERE id = $1 AND replica = $2 AND epoch = $3 AND state IN ('claimed', 'running')"))
        .bind(run)
        .bind(replica)
        .bind(epoch)
        .bind(now_ms() + lease_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a claimed run running (fenced).
    pub(crate) async fn start_run(&self, run: &str, replica: &str, epoch: i64) -> DbResult<bool> {
        let done = sqlx::query(self.q("UPDATE ccs_runs SET state = 'running'
             WHERE id = $1 AND replica = $2 AND epoch = $3 AND state = 'claimed'"))
        .bind(run)
        .bind(replica)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Appends an event to a run's log, fenced by the lease's epoch: `None` when the
    /// writer no longer holds the run.
    pub(crate) async fn append_event(
        &self,
        run: &str,
        replica: &str,
        epoch: i64,
        kind: &str,
        data: &Value,
    ) -> DbResult<Option<i64>> {
        // One statement, one round trip (it was four: BEGIN, UPDATE, INSERT, COMMIT).
        // The fence and the number are read from the run's row: locked on PostgreSQL
        // (`FOR UPDATE`, so a takeover committed first is seen, its epoch and its
        // event); on SQLite a writing statement holds the one write lock from its
        // start. The trigger `ccs_events_next_seq` moves `next_seq` on.
        let lock = self.kind.row_lock();
        let rows = sqlx::query(self.q(&format!(
            "INSERT INTO ccs_events (run_id, seq, kind, data, at)
             SELECT id, next_seq, $4, $5, $6 FROM ccs_runs
             WHERE id = $1 AND replica = $2 AND epoch = $3 AND state IN ('claimed', 'running')
             {lock}
             RETURNING seq"
        )))
        .bind(run)
        .bind(replica)
        .bind(epoch)
        .bind(kind)
        .bind(data.to_string())
        .bind(now_ms())
        // To the statement's end, not its first row: SQLite commits an autocommit
        // statement when it finishes, and sqlx drops the error of a statement reset
        // after its first row (a full disk at the commit would go unseen).
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.first().map(|row| row.try_get("seq")).transpose()?)
    }

    /// Ends a run as `end` says, in one fenced transaction: its state and final event,
    /// its approvals still waiting expired, and what the run leaves behind (the
    /// conversation's owner, the session's turn, the audit row, a session to forget).
    /// `false` when the writer no longer holds the run: then nothing is written.
    ///
    /// One transaction, not one per record: a client that reads the final event finds
    /// the session ready for its next turn, and a crash leaves all or nothing.
    pub(crate) async fn finish_run(
        &self,
        run: &str,
        replica: &str,
        epoch: i64,
        end: &RunEnd<'_>,
    ) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let events = 1 + i64::from(end.last_message.is_some());
        let row = sqlx::query(self.q(
            "UPDATE ccs_runs SET next_seq = next_seq + $8, state = $4, ended_at = $5,
                lease_until = NULL, side_effects = $6, outcome = $7
             WHERE id = $1 AND replica = $2 AND epoch = $3 AND state IN ('claimed', 'running')
             RETURNING next_seq, tenant_id",
        ))
        .bind(run)
        .bind(replica)
        .bind(epoch)
        .bind(end.state)
        .bind(now_ms())
        .bind(i64::from(end.side_effects))
        .bind(end.event.1.to_string())
        .bind(events)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let tenant: String = row.try_get("tenant_id")?;
        let next: i64 = row.try_get("next_seq")?;
        // The run is this writer's to end (its row is locked on PostgreSQL; SQLite
        // has one writer): the rest is written without reading back.
        let mut batch = Batch::default();
        if let Some(message) = end.last_message {
            push_event(&mut batch, run, next - 2, "message", message);
        }
        push_event(&mut batch, run, next - 1, end.event.0, end.event.1);
        push_expire_approvals(&mut batch, run);
        if let Some((conversation, cost)) = end.conversation {
            push_conversation(&mut batch, conversation, &tenant, cost);
            if let Some(session) = end.session {
                batch.push(
                    "UPDATE ccs_sessions SET cli_session_id = $2, turns = turns + 1,
                        total_cost = total_cost + $3, home_replica = $4, updated_at = $5,
                        state = 'active'
                     WHERE id = $1 AND state <> 'ended'",
                    vec![
                        session.into(),
                        conversation.into(),
                        cost.into(),
                        replica.into(),
                        now_ms().into(),
                    ],
                );
            }
        }
        if let Some((cost, tools)) = end.audit {
            crate::audit::ended(&mut batch, self.kind, run, &tenant, end.state, cost, tools);
        }
        if let Some(session) = end.forget_session {
            batch.push(
                "DELETE FROM ccs_sessions WHERE id = $1",
                vec![session.into()],
            );
        }
        self.run_batch(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends a run nobody holds (still queued, or whose lease ran out) with a final
    /// event, and expires its approvals still waiting: the run's epoch is raised, so a
    /// late writer is fenced off. Returns whether this call ended it.
    pub(crate) async fn end_unheld_run(
        &self,
        run: &str,
        from_states: &[&str],
        expired_before: Option<i64>,
        final_state: &str,
        event: (&str, &Value),
    ) -> DbResult<bool> {
        let states = from_states
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE ccs_runs SET next_seq = next_seq + 1, state = $2, ended_at = $3,
                epoch = epoch + 1, lease_until = NULL, outcome = $4
             WHERE id = $1 AND state IN ({states}) AND ($5 IS NULL OR lease_until < $5)
             RETURNING next_seq"
        );
        let row = sqlx::query(self.q(&sql))
            .bind(run)
            .bind(final_state)
            .bind(now_ms())
            .bind(event.1.to_string())
            .bind(expired_before)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let seq: i64 = row.try_get::<i64, _>("next_seq")? - 1;
        let mut batch = Batch::default();
        push_event(&mut batch, run, seq, event.0, event.1);
        push_expire_approvals(&mut batch, run);
        self.run_batch(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Runs whose lease ran out before `now`.
    pub(crate) async fn expired_runs(&self, now: i64) -> DbResult<Vec<RunRow>> {
        let rows = sqlx::query(self.q(
            "SELECT * FROM ccs_runs WHERE state IN ('claimed', 'running') AND lease_until < $1",
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RunRow::from_row).collect()
    }

    /// Runs `replica` holds now (for a clean stop or a restart after a crash).
    pub(crate) async fn runs_held_by(&self, replica: &str) -> DbResult<Vec<RunRow>> {
        let rows = sqlx::query(
            self.q("SELECT * FROM ccs_runs WHERE replica = $1 AND state IN ('claimed', 'running')"),
        )
        .bind(replica)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RunRow::from_row).collect()
    }

    /// Asks for a run to be cancelled (it is, by whoever holds it, or at once when
    /// queued). `false` when the run is not `tenant`'s or is over.
    pub(crate) async fn request_cancel(
        &self,
        run: &str,
        tenant: Option<&str>,
        reason: &str,
    ) -> DbResult<bool> {
        let done = sqlx::query(self.q("UPDATE ccs_runs SET cancel = $3
             WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2) AND cancel IS NULL
               AND state IN ('queued', 'claimed', 'running')"))
        .bind(run)
        .bind(tenant)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The cancellation asked for a run, if any.
    pub(crate) async fn cancel_reason(&self, run: &str) -> DbResult<Option<String>> {
        let row = sqlx::query(self.q("SELECT cancel FROM ccs_runs WHERE id = $1"))
            .bind(run)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get("cancel")?,
            None => None,
        })
    }

    /// Notes that a client reads the run's stream now.
    pub(crate) async fn touch_reader(&self, run: &str) -> DbResult<()> {
        sqlx::query(self.q("UPDATE ccs_runs SET reader_seen_at = $2 WHERE id = $1"))
            .bind(run)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// When a client last read the run's stream.
    pub(crate) async fn reader_seen_at(&self, run: &str) -> DbResult<Option<i64>> {
        let row = sqlx::query(self.q("SELECT reader_seen_at FROM ccs_runs WHERE id = $1"))
            .bind(run)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get("reader_seen_at")?,
            None => None,
        })
    }

    /// The events of a run after `after`, in order, at most [`EVENT_PAGE`].
    pub(crate) async fn events_after(&self, run: &str, after: i64) -> DbResult<Vec<EventRow>> {
        let rows = sqlx::query(self.q(&format!(
            "SELECT seq, kind, data, at FROM ccs_events WHERE run_id = $1 AND seq > $2
             ORDER BY seq LIMIT {EVENT_PAGE}",
        )))
        .bind(run)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EventRow {
                    seq: row.try_get("seq")?,
                    kind: row.try_get("kind")?,
                    data: json_col(row, "data")?,
                    at: row.try_get("at")?,
                })
            })
            .collect()
    }

    /// Counts of `tenant`'s runs by state group: (running, queued), and how many it
    /// started since `since`.
    pub(crate) async fn tenant_load(&self, tenant: &str, since: i64) -> DbResult<(i64, i64, i64)> {
        let row = sqlx::query(self.q(
            "SELECT
                CAST(SUM(CASE WHEN state IN ('claimed', 'running') THEN 1 ELSE 0 END) AS BIGINT) AS active,
                CAST(SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END) AS BIGINT) AS queued,
                CAST(SUM(CASE WHEN created_at >= $2 THEN 1 ELSE 0 END) AS BIGINT) AS recent
             FROM ccs_runs WHERE tenant_id = $1 AND (state IN ('queued', 'claimed', 'running') OR created_at >= $2)",
        ))
        .bind(tenant)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        let get = |c: &str| -> DbResult<i64> { Ok(row.try_get::<Option<i64>, _>(c)?.unwrap_or(0)) };
        Ok((get("active")?, get("queued")?, get("recent")?))
    }

    /// Inserts a session.
    pub(crate) async fn insert_session(&self, row: &SessionRow) -> DbResult<()> {
        sqlx::query(self.q(
            "INSERT INTO ccs_sessions (id, tenant_id, cwd, options, state, workspace, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        ))
        .bind(&row.id)
        .bind(&row.tenant)
        .bind(&row.cwd)
        .bind(row.options.to_string())
        .bind(&row.state)
        .bind(&row.workspace)
        .bind(row.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A session of `tenant` (any tenant's when `None`).
    pub(crate) async fn session(
        &self,
        id: &str,
        tenant: Option<&str>,
    ) -> DbResult<Option<SessionRow>> {
        let row = sqlx::query(
            self.q("SELECT * FROM ccs_sessions WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)"),
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(SessionRow::from_row).transpose()
    }

    /// Ends a session.
    pub(crate) async fn end_session(&self, id: &str, tenant: &str) -> DbResult<bool> {
        let done = sqlx::query(self.q(
            "UPDATE ccs_sessions SET state = 'ended', updated_at = $3, home_replica = NULL
             WHERE id = $1 AND tenant_id = $2 AND state <> 'ended'",
        ))
        .bind(id)
        .bind(tenant)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sessions of `tenant` not ended (all tenants' for `None`).
    pub(crate) async fn open_sessions(&self, tenant: Option<&str>) -> DbResult<i64> {
        let row = sqlx::query(self.q(
            "SELECT COUNT(*) AS n FROM ccs_sessions WHERE state <> 'ended' AND ($1 IS NULL OR tenant_id = $1)",
        ))
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Ends sessions unused since `before`; returns their ids and CLI session ids.
    pub(crate) async fn end_idle_sessions(
        &self,
        before: i64,
    ) -> DbResult<Vec<(String, Option<String>)>> {
        let rows = sqlx::query(self.q(
            "UPDATE ccs_sessions SET state = 'ended', home_replica = NULL
             WHERE state <> 'ended' AND updated_at < $1
               AND NOT EXISTS (SELECT 1 FROM ccs_runs r WHERE r.session_id = ccs_sessions.id
                               AND r.state IN ('queued', 'claimed', 'running'))
             RETURNING id, cli_session_id",
        ))
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("cli_session_id")?)))
            .collect()
    }

    /// The session's turn history: its finished runs, oldest first.
    pub(crate) async fn session_runs(
        &self,
        session: &str,
    ) -> DbResult<Vec<(String, String, Option<Value>)>> {
        let rows = sqlx::query(self.q(
            "SELECT id, state, outcome FROM ccs_runs WHERE session_id = $1 ORDER BY created_at",
        ))
        .bind(session)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let outcome: Option<String> = r.try_get("outcome")?;
                Ok((
                    r.try_get("id")?,
                    r.try_get("state")?,
                    outcome.and_then(|o| serde_json::from_str(&o).ok()),
                ))
            })
            .collect()
    }

    // --- approvals --------------------------------------------------------------------

    /// Inserts an approval a run waits for.
    pub(crate) async fn insert_approval(
        &self,
        id: &str,
        run: &str,
        tenant: &str,
        request: &Value,
        expires_at: i64,
    ) -> DbResult<()> {
        sqlx::query(self.q(
            "INSERT INTO ccs_approvals (id, run_id, tenant_id, request, state, expires_at, created_at)
             VALUES ($1, $2, $3, $4, 'waiting', $5, $6)",
        ))
        .bind(id)
        .bind(run)
        .bind(tenant)
        .bind(request.to_string())
        .bind(expires_at)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Answers a waiting approval of `tenant`: `false` when there is none (answered,
    /// expired, unknown, or another tenant's).
    pub(crate) async fn answer_approval(
        &self,
        id: &str,
        tenant: &str,
        allow: bool,
        answer: &Value,
    ) -> DbResult<bool> {
        let done = sqlx::query(self.q("UPDATE ccs_approvals SET state = $3, answer = $4
             WHERE id = $1 AND tenant_id = $2 AND state = 'waiting' AND expires_at > $5"))
        .bind(id)
        .bind(tenant)
        .bind(if allow { "allowed" } else { "denied" })
        .bind(answer.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// An approval's state now.
    pub(crate) async fn approval(&self, id: &str) -> DbResult<Option<ApprovalRow>> {
        let row = sqlx::query(self.q("SELECT * FROM ccs_approvals WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let answer: Option<String> = row.try_get("answer")?;
            Ok(ApprovalRow {
                state: row.try_get("state")?,
                answer: answer.and_then(|a| serde_json::from_str(&a).ok()),
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Expires a waiting approval (the run's side gave up): `true` when it was still
    /// waiting.
    pub(crate) async fn expire_approval(&self, id: &str) -> DbResult<bool> {
        let done =
            sqlx::query(self.q(
                "UPDATE ccs_approvals SET state = 'expired' WHERE id = $1 AND state = 'waiting'",
            ))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Approvals waiting now, for `tenant` (all for `None`).
    pub(crate) async fn approvals_waiting(&self, tenant: Option<&str>) -> DbResult<i64> {
        let row = sqlx::query(self.q(
            "SELECT COUNT(*) AS n FROM ccs_approvals WHERE state = 'waiting' AND expires_at > $2
               AND ($1 IS NULL OR tenant_id = $1)",
        ))
        .bind(tenant)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    // --- conversations (CLI session ids and who owns them) ----------------------------

    /// Records that `tenant`'s run continued (or started) CLI conversation `id`, which
    /// cost `cost` more. A conversation another tenant owns is left alone (`false`).
    /// (A run that ends normally records it in [`Db::finish_run`].)
    pub(crate) async fn record_conversation(
        &self,
        id: &str,
        tenant: &str,
        cost: f64,
    ) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let mut batch = Batch::default();
        push_conversation(&mut batch, id, tenant, cost);
        let recorded = self.run_batch(&mut tx, batch).await? == 1;
        tx.commit().await?;
        Ok(recorded)
    }

    /// What a run that another writer ended (a shutdown, a takeover) leaves behind,
    /// in one transaction: the conversation it continued belongs to `tenant`, and its
    /// audit row gets the state the run ended in, its cost and its tools, unless it
    /// was completed already.
    pub(crate) async fn record_leftovers(
        &self,
        run: &str,
        tenant: &str,
        conversation: Option<(&str, f64)>,
        cost: f64,
        tools: &[String],
    ) -> DbResult<()> {
        let mut tx = self.begin_write().await?;
        let ended: Option<String> = sqlx::query(self.q("SELECT state FROM ccs_runs WHERE id = $1"))
            .bind(run)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get("state"))
            .transpose()?;
        let mut batch = Batch::default();
        if let Some((id, turn_cost)) = conversation {
            push_conversation(&mut batch, id, tenant, turn_cost);
        }
        if let Some(outcome) = ended.filter(|s| state::is_final(s)) {
            crate::audit::ended(&mut batch, self.kind, run, tenant, &outcome, cost, tools);
        }
        self.run_batch(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The owner and the total cost of CLI conversation `id`.
    pub(crate) async fn conversation(&self, id: &str) -> DbResult<Option<(String, f64)>> {
        let row = sqlx::query(
            self.q("SELECT tenant_id, total_cost FROM ccs_conversations WHERE cli_session_id = $1"),
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("tenant_id")?, r.try_get("total_cost")?)))
            .transpose()
    }

    /// Whether a run of session `session` is queued or running.
    pub(crate) async fn session_busy(&self, session: &str) -> DbResult<bool> {
        let row = sqlx::query(
            self.q("SELECT COUNT(*) AS n FROM ccs_runs WHERE session_id = $1
               AND state IN ('queued', 'claimed', 'running')"),
        )
        .bind(session)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Deletes a session that never got past its first turn.
    pub(crate) async fn delete_session(&self, id: &str) -> DbResult<()> {
        sqlx::query(self.q("DELETE FROM ccs_sessions WHERE id = $1"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Session turns of `tenant` (all tenants' for `None`).
    pub(crate) async fn session_turns(&self, tenant: Option<&str>) -> DbResult<i64> {
        let row = sqlx::query(self.q(
            "SELECT CAST(COALESCE(SUM(turns), 0) AS BIGINT) AS n FROM ccs_sessions WHERE ($1 IS NULL OR tenant_id = $1)",
        ))
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// `tenant`'s runs by final state (all tenants' for `None`).
    pub(crate) async fn run_counts(&self, tenant: Option<&str>) -> DbResult<Vec<(String, i64)>> {
        let rows = sqlx::query(self.q(
            "SELECT state, COUNT(*) AS n FROM ccs_runs WHERE ($1 IS NULL OR tenant_id = $1) GROUP BY state",
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// An approval with its request, if `tenant` owns it.
    pub(crate) async fn approval_of(
        &self,
        id: &str,
        tenant: &str,
    ) -> DbResult<Option<(ApprovalRow, Value)>> {
        let row =
            sqlx::query(self.q("SELECT * FROM ccs_approvals WHERE id = $1 AND tenant_id = $2"))
                .bind(id)
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            let answer: Option<String> = row.try_get("answer")?;
            Ok((
                ApprovalRow {
                    state: row.try_get("state")?,
                    answer: answer.and_then(|a| serde_json::from_str(&a).ok()),
                    expires_at: row.try_get("expires_at")?,
                },
                json_col(&row, "request")?,
            ))
        })
        .transpose()
    }

    /// Raw access for `NOTIFY` on PostgreSQL.
    pub(crate) async fn notify(&self, channel: &str, payload: &str) -> DbResult<()> {
        if self.kind == Kind::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

/// Writes event `seq` of `run` (a number its `next_seq` reserved).
fn push_event(batch: &mut Batch, run: &str, seq: i64, kind: &str, data: &Value) {
    batch.push(
        "INSERT INTO ccs_events (run_id, seq, kind, data, at) VALUES ($1, $2, $3, $4, $5)",
        vec![
            run.into(),
            seq.into(),
            kind.into(),
            data.to_string().into(),
            now_ms().into(),
        ],
    );
}

/// Expires the approvals still waiting for `run`, which is ending: nobody will act on
/// an answer any more, so none may be taken as delivered.
fn push_expire_approvals(batch: &mut Batch, run: &str) {
    batch.push(
        "UPDATE ccs_approvals SET state = 'expired' WHERE run_id = $1 AND state = 'waiting'",
        vec![run.into()],
    );
}

/// Records `tenant` as the owner of CLI conversation `id` (one row changed), or adds
/// `cost` to it when it already is; a conversation another tenant owns is left alone
/// (no row changed).
fn push_conversation(batch: &mut Batch, id: &str, tenant: &str, cost: f64) {
    batch.push(
        "INSERT INTO ccs_conversations (cli_session_id, tenant_id, total_cost, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (cli_session_id) DO UPDATE
           SET total_cost = ccs_conversations.total_cost + $3, updated_at = $4
           WHERE ccs_conversations.tenant_id = $2",
        vec![id.into(), tenant.into(), cost.into(), now_ms().into()],
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The database as the server opens it (the fleet's tables and the audit log).
    async fn connect(url: &str) -> Db {
        let db = Db::connect(url, 4).await.unwrap();
        crate::audit::migrate(&db).await.unwrap();
        db
    }

    /// A running run held by replica `a` at epoch 1, written as a claim leaves it.
    async fn running(db: &Db, id: &str) {
        sqlx::query(db.q(
            "INSERT INTO ccs_runs (id, tenant_id, request, state, replica, epoch,
                lease_until, created_at)
             VALUES ($1, 't', '{}', 'running', 'a', 1, $2, 0)",
        ))
        .bind(id)
        .bind(now_ms() + 60_000)
        .execute(db.pool())
        .await
        .unwrap();
    }

    async fn log(db: &Db, run: &str) -> Vec<(i64, String)> {
        db.events_after(run, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.kind))
            .collect()
    }

    /// The event log of a run as its holder, a finish and a takeover write it: numbers
    /// in order without gaps, and nothing written by a writer that no longer holds the
    /// run (another replica, an older epoch, a run already over).
    async fn event_log_is_fenced_and_numbered(db: &Db) {
        running(db, "r1").await;
        let m = json!({"n": 1});
        assert_eq!(
            db.append_event("r1", "a", 1, "message", &m).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            db.append_event("r1", "a", 1, "message", &m).await.unwrap(),
            Some(2)
        );
        assert_eq!(
            db.append_event("r1", "b", 1, "message", &m).await.unwrap(),
            None,
            "another replica"
        );
        assert_eq!(
            db.append_event("r1", "a", 2, "message", &m).await.unwrap(),
            None,
            "another epoch"
        );
        let done = json!({"result": "ok"});
        let end = RunEnd {
            last_message: Some(&m),
            ..RunEnd::new(state::SUCCEEDED, "done", &done)
        };
        assert!(db.finish_run("r1", "a", 1, &end).await.unwrap());
        assert_eq!(
            db.append_event("r1", "a", 1, "message", &m).await.unwrap(),
            None,
            "ended"
        );
        assert_eq!(
            log(db, "r1").await,
            [
                (1, "message".into()),
                (2, "message".into()),
                (3, "message".into()),
                (4, "done".into())
            ]
        );

        // Taken over (its lease ran out): the holder's next append is refused, and the
        // takeover's event follows the holder's last.
        running(db, "r2").await;
        assert_eq!(
            db.append_event("r2", "a", 1, "message", &m).await.unwrap(),
            Some(1)
        );
        let error = json!({"error": {"kind": "interrupted"}});
        assert!(
            db.end_unheld_run(
                "r2",
                &[state::CLAIMED, state::RUNNING],
                None,
                state::INTERRUPTED,
                ("error", &error)
            )
            .await
            .unwrap()
        );
        assert_eq!(
            db.append_event("r2", "a", 1, "message", &m).await.unwrap(),
            None,
            "taken over"
        );
        assert_eq!(
            log(db, "r2").await,
            [(1, "message".into()), (2, "error".into())]
        );

        // Appends of many runs at once each get their own numbers.
        let runs: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        for run in &runs {
            running(db, run).await;
        }
        let appends = runs
            .iter()
            .flat_map(|run| (0..5).map(move |_| run))
            .map(|run| {
                let m = m.clone();
                async move { db.append_event(run, "a", 1, "message", &m).await.unwrap() }
            });
        let numbers = futures::future::join_all(appends).await;
        assert!(numbers.iter().all(Option::is_some));
        for run in &runs {
            let seqs: Vec<i64> = log(db, run).await.into_iter().map(|(seq, _)| seq).collect();
            assert_eq!(seqs, [1, 2, 3, 4, 5], "{run}");
        }
    }

    /// A run's end writes everything it leaves behind in one transaction (one batch):
    /// its events, its approvals expired, its conversation and session turn, its audit
    /// row and its tenant's total, each once.
    async fn a_run_ends_with_all_it_leaves(db: &Db) {
        running(db, "e1").await;
        let now = now_ms();
        for sql in [
            "INSERT INTO ccs_sessions (id, tenant_id, cwd, options, state, created_at, updated_at)
             VALUES ('s1', 't', '/w', '{}', 'active', 0, 0)",
            "INSERT INTO ccs_approvals (id, run_id, tenant_id, request, state, expires_at, created_at)
             VALUES ('p1', 'e1', 't', '{}', 'waiting', 9999999999999, 0)",
            "INSERT INTO ccs_audit_log (run_id, at, tenant_id, endpoint, prompt_sha256, prompt_chars, cwd, mode)
             VALUES ('e1', 0, 't', 'session', 'h', 1, '/w', 'readOnly')",
        ] {
            sqlx::query(sql).execute(db.pool()).await.unwrap();
        }
        let (result, done) = (json!({"type": "result"}), json!({"cost_usd": 0.25}));
        let tools = vec!["Read".to_owned()];
        let end = RunEnd {
            last_message: Some(&result),
            conversation: Some(("cli-1", 0.25)),
            session: Some("s1"),
            audit: Some((0.25, &tools)),
            ..RunEnd::new(state::SUCCEEDED, "done", &done)
        };
        assert!(db.finish_run("e1", "a", 1, &end).await.unwrap());
        assert!(
            !db.finish_run("e1", "a", 1, &end).await.unwrap(),
            "ended once"
        );
        assert_eq!(
            log(db, "e1").await,
            [(1, "message".into()), (2, "done".into())]
        );
        assert_eq!(db.approval("p1").await.unwrap().unwrap().state, "expired");
        assert_eq!(
            db.conversation("cli-1").await.unwrap(),
            Some(("t".into(), 0.25))
        );
        let session = db.session("s1", Some("t")).await.unwrap().unwrap();
        assert_eq!(
            (session.turns, session.cli_session.as_deref()),
            (1, Some("cli-1"))
        );
        // A second writer's leftovers (a shutdown that ended the run first) count
        // nothing twice.
        db.record_leftovers("e1", "t", None, 0.25, &tools)
            .await
            .unwrap();
        let audit: (String, f64, String, i64) = {
            let row = sqlx::query("SELECT outcome, cost_usd, tools, ended_at FROM ccs_audit_log")
                .fetch_one(db.pool())
                .await
                .unwrap();
            (row.get(0), row.get(1), row.get(2), row.get(3))
        };
        assert_eq!(
            (audit.0.as_str(), audit.1, audit.2.as_str()),
            ("succeeded", 0.25, r#"["Read"]"#)
        );
        assert!(audit.3 >= now);
        let costs: Vec<(String, f64, i64)> =
            sqlx::query("SELECT tenant_id, cost_usd, runs FROM ccs_tenant_costs")
                .fetch_all(db.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
        assert_eq!(costs, [("t".to_owned(), 0.25, 1)]);
        // Another tenant's run that continued the conversation does not take it over.
        assert!(!db.record_conversation("cli-1", "u", 1.0).await.unwrap());
        assert!(db.record_conversation("cli-1", "t", 1.0).await.unwrap());
        assert_eq!(
            db.conversation("cli-1").await.unwrap(),
            Some(("t".into(), 1.25))
        );
    }

    #[test]
    fn placeholders_become_positional_with_their_arguments_in_order() {
        let mut out = vec![Arg::from("before")];
        let args = [Arg::from(1), Arg::from("two")];
        assert_eq!(
            positional("a = $2 AND b = $1 OR c = $2", &args, &mut out).unwrap(),
            "a = ? AND b = ? OR c = ?"
        );
        // A `$` that names no argument is refused, not bound to another's value.
        for bad in ["d = $3", "e = $", "f = '$0'"] {
            assert!(positional(bad, &args, &mut Vec::new()).is_err(), "{bad}");
        }
        let texts: Vec<String> = out.iter().map(|a| format!("{a:?}")).collect();
        assert_eq!(
            texts,
            [
                r#"Text("before")"#,
                r#"Text("two")"#,
                "Int(1)",
                r#"Text("two")"#
            ]
        );
    }

    /// A SQLite database in a folder of its own (removed with the folder).
    async fn sqlite() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("fleet.db").display()
        );
        let db = connect(&url).await;
        (dir, db)
    }

    #[tokio::test]
    async fn sqlite_a_run_ends_with_all_it_leaves() {
        let (_dir, db) = sqlite().await;
        a_run_ends_with_all_it_leaves(&db).await;
    }

    #[tokio::test]
    async fn postgres_a_run_ends_with_all_it_leaves() {
        let Some(pg) = claude_code_testkit::pg::TestDatabase::create().await else {
            return;
        };
        a_run_ends_with_all_it_leaves(&connect(pg.url()).await).await;
    }

    #[tokio::test]
    async fn sqlite_event_log_is_fenced_and_numbered() {
        let (_dir, db) = sqlite().await;
        event_log_is_fenced_and_numbered(&db).await;
    }

    #[tokio::test]
    async fn postgres_event_log_is_fenced_and_numbered() {
        let Some(pg) = claude_code_testkit::pg::TestDatabase::create().await else {
            return;
        };
        let db = connect(pg.url()).await;
        event_log_is_fenced_and_numbered(&db).await;
        event_log_is_fenced_and_numbered_again(&db, pg.url()).await;
    }

    /// Replicas starting (each migrates the schema) while another appends events: no
    /// append fails (a migration that locked the runs and then the events deadlocked
    /// with appends, which lock them the other way round).
    async fn event_log_is_fenced_and_numbered_again(db: &Db, url: &str) {
        running(db, "again").await;
        let m = json!({});
        let appends = async {
            for n in 1..=200 {
                let seq = db.append_event("again", "a", 1, "message", &m).await;
                assert_eq!(seq.unwrap(), Some(n));
            }
        };
        let starts = futures::future::join_all((0..6).map(|_| connect(url)));
        tokio::join!(appends, starts);
    }
}
