//! `GET /metrics`: the Prometheus text format (OpenMetrics), with `prometheus-client`.
//!
//! Auth: an operator's bearer token (an `operator_tokens` token, or a tenant of the
//! tenants file with `operator = true`; without any token, the local caller), like the
//! server-wide figures of `/v1/stats`. Give Prometheus one (`authorization` in its
//! scrape config). Everyone else gets `404`, as for a route that does not exist.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `ccs_runs` | gauge | `state` | the fleet's runs by state (from the database) |
//! | `ccs_queue_depth` | gauge | | runs queued fleet-wide |
//! | `ccs_leases_held` | gauge | `replica` | runs this replica holds a lease on |
//! | `ccs_takeovers_total` | counter | `replica` | expired leases this replica took over (runs ended `interrupted`) |
//! | `ccs_pool_processes` | gauge | `replica`, `state` (`busy`, `warm`, `spare`, `hot`, `alive`) | this replica's CLI processes |
//! | `ccs_approvals_waiting` | gauge | | approvals waiting for an answer, fleet-wide |
//! | `ccs_event_lag_seconds` | histogram | `replica` | from an event's append to the log to its delivery to a client by this replica (a client reading older events, after a reconnect, counts their age) |
//! | `ccs_cost_usd` | gauge | `tenant` | the cost of each tenant's ended runs (the audit log) |
//! | `ccs_draining` | gauge | `replica` | 1 while this replica drains |
//!
//! A `tenant` label is the tenant's name; for a `--token` tenant, `token-` and the
//! first 12 hex digits of its token's SHA-256 (never the token).
//! Fleet-wide figures are the same on every replica: aggregate them with `max`, not
//! `sum`. A scrape reads the database: `ccs_runs` counts every run kept (an index
//! scan), the costs come from a table of one row a tenant kept as runs end. Measured
//! on SQLite on a loaded 2-core machine: 6 to 13 ms a scrape with no run, 60 to 115 ms
//! with 200 000 runs and audit rows. Nothing purges old runs yet: scrape every 15 s or
//! more.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use sqlx::Row;

use crate::StateInner;
use crate::fleet::db::DbResult;

type Labels = Vec<(String, String)>;

/// What this replica counts itself (the rest is read when scraped).
#[derive(Clone)]
pub(crate) struct Metrics {
    event_lag: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            // 1 ms to ~33 s.
            event_lag: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl Metrics {
    /// An event appended at `at_ms` was delivered now.
    pub(crate) fn delivered(&self, at_ms: i64) {
        let lag = crate::fleet::db::now_ms().saturating_sub(at_ms).max(0);
        #[allow(clippy::cast_precision_loss)]
        self.event_lag.observe(lag as f64 / 1000.0);
    }
}

/// The label of a tenant id.
pub(crate) fn tenant_label(id: &str) -> String {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("token-{}", &id[..12])
    } else {
        id.to_owned()
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The metrics, in the text format.
///
/// # Errors
///
/// Database errors.
pub(crate) async fn render(inner: &StateInner) -> DbResult<String> {
    let db = inner.fleet.db();
    let mut registry = Registry::default();

    // Counted on the (state, created_at) index alone, never the rows.
    let by_state: Vec<(String, i64)> =
        sqlx::query("SELECT state, COUNT(*) AS n FROM ccs_runs GROUP BY state")
            .fetch_all(db.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get("state")?, row.try_get("n")?)))
            .collect::<DbResult<_>>()?;
    let runs = Family::<Labels, Gauge>::default();
    for name in [
        "queued",
        "claimed",
        "running",
        "succeeded",
        "failed",
        "interrupted",
        "cancelled",
    ] {
        let n = by_state
            .iter()
            .filter(|(s, _)| s == name)
            .map(|(_, n)| *n)
            .sum();
        runs.get_or_create(&vec![("state".to_owned(), name.to_owned())])
            .set(n);
    }
    registry.register("ccs_runs", "The fleet's runs by state", runs);
    let queued = by_state
        .iter()
        .filter(|(s, _)| s == "queued")
        .map(|(_, n)| *n)
        .sum();
    gauge(
        &mut registry,
        "ccs_queue_depth",
        "Runs queued fleet-wide",
        queued,
    );

    // This replica's own figures, labelled with its id.
    let ours = registry.sub_registry_with_label((
        std::borrow::Cow::Borrowed("replica"),
        std::borrow::Cow::Owned(inner.fleet.replica().to_owned()),
    ));
    gauge(
        ours,
        "ccs_leases_held",
        "Runs this replica holds a lease on",
        count(inner.fleet.running()),
    );
    let taken: Counter = Counter::default();
    taken.inc_by(inner.fleet.takeovers());
    ours.register(
        "ccs_takeovers",
        "Expired leases this replica took over",
        taken,
    );
    let pool = inner.pool.stats();
    let processes = Family::<Labels, Gauge>::default();
    for (state, n) in [
        ("busy", pool.active),
        ("warm", pool.warm),
        ("spare", pool.spares),
        ("hot", pool.hot),
        ("alive", pool.processes),
    ] {
        processes
            .get_or_create(&vec![("state".to_owned(), state.to_owned())])
            .set(count(n));
    }
    ours.register(
        "ccs_pool_processes",
        "This replica's CLI processes by state",
        processes,
    );
    ours.register(
        "ccs_event_lag_seconds",
        "From an event's append to the log to its delivery to a client by this replica",
        inner.metrics.event_lag.clone(),
    );
    gauge(
        ours,
        "ccs_draining",
        "1 while this replica drains",
        i64::from(inner.fleet.is_draining()),
    );

    gauge(
        &mut registry,
        "ccs_approvals_waiting",
        "Approvals waiting for an answer, fleet-wide",
        db.approvals_waiting(None).await?,
    );

    let cost = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (tenant, usd) in crate::audit::cost_by_tenant(db).await? {
        cost.get_or_create(&vec![("tenant".to_owned(), tenant_label(&tenant))])
            .set(usd);
    }
    registry.register("ccs_cost_usd", "The cost of each tenant's ended runs", cost);

    let mut text = String::new();
    // Writing to a String does not fail.
    let _ = encode(&mut text, &registry);
    Ok(text)
}
