//! Routes for operators: `/metrics` in Prometheus format, served on its own
//! listener (`[metrics] listen`, default `127.0.0.1:9464`), never on the
//! public ones; and `/healthz`, on every listener.
//!
//! SECURITY: the metrics listener is loopback unless `[metrics] token` is
//! set (config validation refuses otherwise); with a token, every request
//! must present `Authorization: Bearer <token>`. Backups go over the control
//! socket ([`crate::control`]), not HTTP.

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Filter;

use super::error::json_error;
use super::with;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::{Store, WriterStats};
use crate::tls::StatusHandle;

/// What the operator routes need.
pub struct Ops {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// For the database size and order gauges.
    pub store: Store,
    /// For the certificate expiry gauge.
    pub tls_status: Option<Arc<StatusHandle>>,
    /// Bearer token every scrape must present, if set.
    pub token: Option<Secret>,
}

impl Ops {
    fn allowed(&self, authorization: Option<&str>) -> bool {
        match &self.token {
            Some(token) => authorization
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|given| given.as_bytes().ct_eq(token.expose().as_bytes()).into()),
            None => true,
        }
    }

    fn render(&self) -> Response {
        let sled = self.store.size_on_disk().unwrap_or(0);
        let counts = self.store.status_counts().unwrap_or_default();
        let orders: Vec<(&str, u64)> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        let expiry = self.tls_status.as_ref().and_then(|s| s.get().certificate).map(|c| c.not_after.unix_timestamp());
        let mut text = self.metrics.render(sled, &orders, expiry);
        let w = self.store.writer_stats();
        text.push_str(&crate::metrics::render_writer(&crate::metrics::WriterFigures {
            pending: w.pending() as u64,
            oldest_pending_secs: w.busy_for().map_or(0.0, |d| d.as_secs_f64()),
            syncs: w.syncs(),
            acknowledged: w.acknowledged(),
            refused_busy: w.refused_busy(),
            failed: w.failed(),
        }));
        let pending = self.store.pending_delivery_count().unwrap_or(0);
        text.push_str(&format!(
            "# HELP paybridge_webhooks_pending Webhook deliveries waiting for their next attempt.\n\
             # TYPE paybridge_webhooks_pending gauge\npaybridge_webhooks_pending {pending}\n"
        ));
        reply::with_header(text, "content-type", "text/plain; version=0.0.4; charset=utf-8").into_response()
    }
}

fn forbidden() -> Response {
    json_error(StatusCode::FORBIDDEN, "FORBIDDEN", "send `Authorization: Bearer <[metrics] token>`")
}

/// The metrics listener's routes: `GET /metrics` and `GET /healthz`.
pub fn routes(ops: Arc<Ops>, sandbox: bool) -> BoxedFilter<(Response,)> {
    let health = health(ops.store.clone(), sandbox);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with(ops))
        .then(|authorization: Option<String>, ops: Arc<Ops>| async move {
            if !ops.allowed(authorization.as_deref()) {
                return forbidden();
            }
            // The gauges read the store: off the async threads.
            tokio::task::spawn_blocking(move || ops.render()).await.unwrap_or_else(|_| {
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "see the server log")
            })
        });
    metrics.or(health).unify().recover(super::error::rejection).unify().boxed()
}

/// A write batch older than this makes `/healthz` report the storage as stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(5);

/// `GET /healthz`: 200 while the store's writer keeps up; 503 with the age
/// of the oldest pending write when it is stuck or the disk fails. Reads
/// only counters: it answers even while the writer hangs.
pub fn health(store: Store, sandbox: bool) -> BoxedFilter<(Response,)> {
    warp::path!("healthz")
        .and(warp::get())
        .map(move || {
            let (code, body) = health_of(store.writer_stats(), sandbox, STALLED_AFTER);
            reply::with_status(reply::json(&body), code).into_response()
        })
        .boxed()
}

/// The health answer for the writer's current `stats`.
fn health_of(stats: &WriterStats, sandbox: bool, stalled_after: Duration) -> (StatusCode, serde_json::Value) {
    let busy = stats.busy_for().unwrap_or_default();
    let (status, code) = if busy >= stalled_after {
        ("storage stalled", StatusCode::SERVICE_UNAVAILABLE)
    } else if stats.failing() {
        ("storage failing", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("ok", StatusCode::OK)
    };
    let body = serde_json::json!({
        "status": status,
        "sandbox": sandbox,
        "pending_writes": stats.pending(),
        "oldest_pending_write_ms": busy.as_millis() as u64,
    });
    (code, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    /// A writer stuck on the disk shows as 503 "storage stalled" with the
    /// age of the oldest write, and as "ok" again once it moves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_writer_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Mode::Live).unwrap();
        let stalled_after = Duration::from_millis(100);
        assert_eq!(health_of(store.writer_stats(), false, stalled_after).0, StatusCode::OK);
        let (release, blocker) = store.hold_writer().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (code, body) = health_of(store.writer_stats(), false, stalled_after);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "storage stalled");
        assert!(body["oldest_pending_write_ms"].as_u64().unwrap() >= 150, "{body}");
        assert_eq!(body["pending_writes"], 1);
        release.send(()).unwrap();
        blocker.await.unwrap();
        assert_eq!(health_of(store.writer_stats(), false, stalled_after).0, StatusCode::OK);
    }
}
