//! The audit log: one row per run, in the fleet's database (`ccs_audit_log`, on
//! PostgreSQL and SQLite alike), written when the run is submitted and completed when
//! it ends.
//!
//! | column | what |
//! |---|---|
//! | `run_id`, `at` | the run, and when it was submitted (Unix ms) |
//! | `tenant_id` | who: the tenant's name, or the hex SHA-256 of a `--token` token |
//! | `request_id` | the `x-request-id` of the request that submitted it |
//! | `endpoint` | `query`, `stream`, `session`, `compat_query`, `compat_stream` |
//! | `session_id` | its session, if any |
//! | `prompt_sha256`, `prompt_chars` | what, without the text |
//! | `prompt` | the text, only when the operator opts in (`--audit-prompts`) |
//! | `cwd`, `mode`, `model` | where, with which permission mode and model |
//! | `outcome`, `cost_usd`, `tools`, `ended_at` | written by the replica that ran it; a run ended elsewhere (cancelled while queued, taken over after its replica died, shut down) reads its state from the run |
//!
//! Operators read it with `GET /v1/audit` (see the crate docs).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::fleet::db::{Batch, Db, DbResult, Kind, NewRun, now_ms};

/// Creates the table.
///
/// # Errors
///
/// Database errors.
pub(crate) async fn migrate(db: &Db) -> DbResult<()> {
    let float = match db.kind() {
        Kind::Postgres => "DOUBLE PRECISION",
        Kind::Sqlite => "REAL",
    };
    let mut tx = db.pool().begin().await?;
    if db.kind() == Kind::Postgres {
        // Replicas starting together must not race to create it.
        sqlx::query("SELECT pg_advisory_xact_lock(74927111)")
            .execute(&mut *tx)
            .await?;
    }
    for sql in [
        format!(
            "CREATE TABLE IF NOT EXISTS ccs_audit_log (
                run_id TEXT PRIMARY KEY,
                at BIGINT NOT NULL,
                tenant_id TEXT NOT NULL,
                request_id TEXT,
                endpoint TEXT NOT NULL,
                session_id TEXT,
                prompt_sha256 TEXT NOT NULL,
                prompt_chars BIGINT NOT NULL,
                prompt TEXT,
                cwd TEXT NOT NULL,
                mode TEXT NOT NULL,
                model TEXT,
                outcome TEXT,
                cost_usd {float},
                tools TEXT,
                ended_at BIGINT
            )"
        ),
        "CREATE INDEX IF NOT EXISTS ccs_audit_log_tenant ON ccs_audit_log (tenant_id, at)"
            .to_owned(),
        "CREATE INDEX IF NOT EXISTS ccs_audit_log_at ON ccs_audit_log (at)".to_owned(),
        // Each tenant's total, kept as runs end: a scrape of /metrics reads one row a
        // tenant, not the whole log.
        format!(
            "CREATE TABLE IF NOT EXISTS ccs_tenant_costs (
                tenant_id TEXT PRIMARY KEY,
                cost_usd {float} NOT NULL DEFAULT 0,
                runs BIGINT NOT NULL DEFAULT 0
            )"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records a run as it is queued, in the transaction that queues it
/// ([`Db::queue_run`]).
///
/// # Errors
///
/// Database errors.
pub(crate) async fn submitted(
    db: &Db,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    run: &NewRun<'_>,
) -> DbResult<()> {
    let request = run.request;
    let hash = crate::tenants::hex(&Sha256::digest(request.prompt.as_bytes()));
    sqlx::query(db.q(
        "INSERT INTO ccs_audit_log (run_id, at, tenant_id, request_id, endpoint, session_id,
            prompt_sha256, prompt_chars, prompt, cwd, mode, model)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    ))
    .bind(run.id)
    .bind(now_ms())
    .bind(run.tenant)
    .bind(request.request_id.as_deref())
    .bind(run.endpoint)
    .bind(run.session)
    .bind(hash)
    .bind(i64::try_from(request.prompt.chars().count()).unwrap_or(i64::MAX))
    .bind(run.audit_prompt.then_some(request.prompt.as_str()))
    .bind(request.cwd.to_string_lossy().into_owned())
    .bind(request.mode.as_str())
    .bind(request.model.as_deref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records how a run of `tenant` ended, on the replica that ran it, and adds its cost
/// to the tenant's total (once: a run already recorded as ended is left as it is), in
/// the transaction that ends the run ([`Db::finish_run`]): two statements added to its
/// `batch`.
pub(crate) fn ended(
    batch: &mut Batch,
    kind: Kind,
    run: &str,
    tenant: &str,
    outcome: &str,
    cost_usd: f64,
    tools: &[String],
) {
    // The tenant's total first, while the row is still open: it counts the run once,
    // the row is completed once. The row is locked on PostgreSQL (a concurrent
    // completion waits, then finds it completed); SQLite has one writer.
    let lock = kind.row_lock();
    batch.push(
        format!(
            "INSERT INTO ccs_tenant_costs (tenant_id, cost_usd, runs)
             SELECT $1, $2, 1 FROM ccs_audit_log WHERE run_id = $3 AND outcome IS NULL {lock}
             ON CONFLICT (tenant_id) DO UPDATE
             SET cost_usd = ccs_tenant_costs.cost_usd + excluded.cost_usd,
                 runs = ccs_tenant_costs.runs + 1"
        ),
        vec![tenant.into(), cost_usd.into(), run.into()],
    );
    batch.push(
        "UPDATE ccs_audit_log SET outcome = $2, cost_usd = $3, tools = $4, ended_at = $5
         WHERE run_id = $1 AND outcome IS NULL",
        vec![
            run.into(),
            outcome.into(),
            cost_usd.into(),
            Value::from(tools.to_vec()).to_string().into(),
            now_ms().into(),
        ],
    );
}

/// The newest `limit` rows (of `tenant`, when given) submitted before `before` (Unix
/// ms), newest first.
///
/// # Errors
///
/// Database errors.
pub(crate) async fn list(
    db: &Db,
    tenant: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> DbResult<Vec<Value>> {
    let rows = sqlx::query(db.q(
        "SELECT a.run_id, a.at, a.tenant_id, a.request_id, a.endpoint, a.session_id,
            a.prompt_sha256, a.prompt_chars, a.prompt, a.cwd, a.mode, a.model,
            COALESCE(a.outcome, r.state, 'not_started') AS outcome, a.cost_usd, a.tools, a.ended_at
         FROM ccs_audit_log a LEFT JOIN ccs_runs r ON r.id = a.run_id
         WHERE ($1 IS NULL OR a.tenant_id = $1) AND ($2 IS NULL OR a.at < $2)
         ORDER BY a.at DESC LIMIT $3",
    ))
    .bind(tenant)
    .bind(before)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let at: i64 = row.try_get("at")?;
            let ended: Option<i64> = row.try_get("ended_at")?;
            let tools: Option<String> = row.try_get("tools")?;
            Ok(json!({
                "run": row.try_get::<String, _>("run_id")?,
                "at": chrono::DateTime::from_timestamp_millis(at),
                "at_ms": at,
                "tenant": row.try_get::<String, _>("tenant_id")?,
                "request_id": row.try_get::<Option<String>, _>("request_id")?,
                "endpoint": row.try_get::<String, _>("endpoint")?,
                "session": row.try_get::<Option<String>, _>("session_id")?,
                "prompt_sha256": row.try_get::<String, _>("prompt_sha256")?,
                "prompt_chars": row.try_get::<i64, _>("prompt_chars")?,
                "prompt": row.try_get::<Option<String>, _>("prompt")?,
                "cwd": row.try_get::<String, _>("cwd")?,
                "mode": row.try_get::<String, _>("mode")?,
                "model": row.try_get::<Option<String>, _>("model")?,
                "outcome": row.try_get::<Option<String>, _>("outcome")?,
                "cost_usd": row.try_get::<Option<f64>, _>("cost_usd")?,
                "tools": tools.and_then(|t| serde_json::from_str::<Value>(&t).ok()),
                "ended_at": ended.and_then(chrono::DateTime::from_timestamp_millis),
            }))
        })
        .collect()
}

/// The cost of each tenant's ended runs, in USD (those whose replica recorded
/// their end).
///
/// # Errors
///
/// Database errors.
pub(crate) async fn cost_by_tenant(db: &Db) -> DbResult<Vec<(String, f64)>> {
    let rows = sqlx::query("SELECT tenant_id, cost_usd FROM ccs_tenant_costs")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("tenant_id")?, row.try_get("cost_usd")?)))
        .collect()
}
