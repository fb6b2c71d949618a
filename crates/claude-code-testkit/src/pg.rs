//! A fresh PostgreSQL database per test.
//!
//! The server comes from `DATABASE_URL` when set, else
//! `postgres://postgres@127.0.0.1:5432/postgres` (`tools/with-postgres` sets
//! `DATABASE_URL`, starting a private server when none answers). Each
//! [`TestDatabase`] is a new database, `test_<uuid>`, dropped when the value drops,
//! panics included.
//!
//! When no server answers, [`TestDatabase::create`] returns `None` so the test can
//! skip, unless `CLAUDE_SDK_REQUIRE_PG=1` (as `make test` and CI set it): then it
//! panics, and the test fails.
//!
//! ```no_run
//! # async fn test() {
//! use claude_code_testkit::pg::TestDatabase;
//!
//! let Some(db) = TestDatabase::create().await else { return }; // skipped: no PostgreSQL
//! // connect to db.url() ...
//! # }
//! ```

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// Set to `1` to make a missing PostgreSQL a test failure instead of a skip.
pub const REQUIRE_PG_ENV: &str = "CLAUDE_SDK_REQUIRE_PG";

/// The server tests use when `DATABASE_URL` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A database of its own for one test, dropped (with its connections) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin: PgConnectOptions,
}

/// The server's URL: `DATABASE_URL`, or [`DEFAULT_URL`].
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// Whether `CLAUDE_SDK_REQUIRE_PG=1`.
pub fn required() -> bool {
    std::env::var(REQUIRE_PG_ENV).is_ok_and(|v| v == "1")
}

impl TestDatabase {
    /// Creates a new, empty database on the server ([`server_url`]).
    ///
    /// `None` when the server cannot be reached and PostgreSQL is not
    /// [`required`]; a note goes to stderr.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached and `CLAUDE_SDK_REQUIRE_PG=1`, or when it
    /// answers but refuses to create the database.
    pub async fn create() -> Option<TestDatabase> {
        let url = server_url();
        let admin = match PgConnectOptions::from_str(&url) {
            Ok(options) => options,
            Err(error) => panic!("DATABASE_URL is not a PostgreSQL URL ({url}): {error}"),
        };
        let mut connection = match connect(&admin).await {
            Ok(connection) => connection,
            Err(error) => {
                assert!(
                    !required(),
                    "no PostgreSQL at {url} ({error}), and {REQUIRE_PG_ENV}=1: run the tests \
                     through tools/with-postgres (make test does), or set DATABASE_URL"
                );
                eprintln!(
                    "skipped: no PostgreSQL at {url} ({error}); set {REQUIRE_PG_ENV}=1 to fail instead"
                );
                return None;
            }
        };
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("cannot create the test database {name}: {error}"));
        let _ = connection.close().await;
        let url = admin.clone().database(&name).to_url_lossy().to_string();
        Some(TestDatabase { name, url, admin })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (`test_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

async fn connect(options: &PgConnectOptions) -> Result<PgConnection, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer in {CONNECT_TIMEOUT:?}")),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // On a thread and runtime of its own: the test's runtime may be gone, or be
        // a current-thread runtime this would block.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let mut connection = connect(&admin).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
                let _ = connection.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error}", self.name),
            Err(_) => eprintln!(
                "could not drop test database {}: the thread panicked",
                self.name
            ),
        }
    }
}
