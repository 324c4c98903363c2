//! Routes for operators: `/metrics` in Prometheus format, and `/ops/backup`
//! (what `paybridge backup` fetches from a running server).
//!
//! SECURITY: without `[metrics] token`, both answer only loopback clients (a
//! scraper on the same host, an SSH tunnel, the CLI); with a token, any
//! client presenting `Authorization: Bearer <token>`.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Filter;

use super::error::json_error;
use super::{with, PeerAddr};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::Store;
use crate::tls::StatusHandle;

/// What the operator routes need.
pub struct Ops {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// For the database size and order gauges.
    pub store: Store,
    /// For the certificate expiry gauge.
    pub tls_status: Option<Arc<StatusHandle>>,
    /// Bearer token that opens `/metrics` to non-loopback clients.
    pub token: Option<Secret>,
}

impl Ops {
    fn allowed(&self, peer: Option<PeerAddr>, authorization: Option<&str>) -> bool {
        match &self.token {
            Some(token) => authorization
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|given| given.as_bytes().ct_eq(token.expose().as_bytes()).into()),
            None => peer.is_some_and(|p| p.0.ip().is_loopback()),
        }
    }

    fn render(&self) -> Response {
        let sled = self.store.size_on_disk().unwrap_or(0);
        let counts = self.store.status_counts().unwrap_or_default();
        let orders: Vec<(&str, u64)> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        let expiry = self.tls_status.as_ref().and_then(|s| s.get().certificate).map(|c| c.not_after.unix_timestamp());
        let text = self.metrics.render(sled, &orders, expiry);
        reply::with_header(text, "content-type", "text/plain; version=0.0.4; charset=utf-8").into_response()
    }
}

fn forbidden() -> Response {
    json_error(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "served to loopback clients, or with `Authorization: Bearer <[metrics] token>`",
    )
}

/// `GET /metrics` and `GET /ops/backup`.
pub fn routes(ops: Arc<Ops>) -> BoxedFilter<(Response,)> {
    let allowed = warp::ext::optional::<PeerAddr>()
        .and(warp::header::optional::<String>("authorization"))
        .and(with(ops))
        .map(|peer: Option<PeerAddr>, authorization: Option<String>, ops: Arc<Ops>| {
            let ok = ops.allowed(peer, authorization.as_deref());
            (ops, ok)
        })
        .untuple_one();
    let metrics =
        warp::path!("metrics").and(warp::get()).and(allowed.clone()).map(
            |ops: Arc<Ops>, ok: bool| {
                if ok {
                    ops.render()
                } else {
                    forbidden()
                }
            },
        );
    let backup =
        warp::path!("ops" / "backup").and(warp::get()).and(allowed).then(|ops: Arc<Ops>, ok: bool| async move {
            if !ok {
                return forbidden();
            }
            let store = ops.store.clone();
            // The copy holds writes back while it is taken; off the async threads.
            let result = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                store.backup(&mut out).map(|()| out)
            })
            .await;
            match result {
                Ok(Ok(bytes)) => {
                    tracing::info!(bytes = bytes.len(), "backup taken");
                    reply::with_header(bytes, "content-type", "application/octet-stream").into_response()
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "backup failed");
                    json_error(StatusCode::INTERNAL_SERVER_ERROR, "BACKUP_FAILED", "backup failed; see the server log")
                }
                Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "BACKUP_FAILED", "backup failed"),
            }
        });
    metrics.or(backup).unify().boxed()
}
