//! Serving one accepted connection: the TLS handshake (bounded, and the
//! end of an ACME TLS-ALPN-01 validation), HTTP/1.1 or HTTP/2 through
//! hyper-util, and per request its peer address, its id, its access log and
//! metrics, and a reply body that keeps the connection busy until written.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use tracing::Instrument;
use warp::http::HeaderValue;
use warp::reply::Response;

use super::guard::Guarded;
use super::watchdog::Activity;
use super::HANDSHAKE_TIMEOUT;
use crate::http::body::BodyTimeout;
use crate::http::{OverTls, PeerAddr};
use crate::metrics::{route_label, Metrics};
use crate::tls::ACME_TLS_ALPN;

/// One accepted connection and what it needs to be served.
pub(super) struct Connection<S> {
    pub(super) builder: Builder<TokioExecutor>,
    pub(super) service: S,
    pub(super) watcher: Watcher,
    pub(super) peer: SocketAddr,
    pub(super) tls: bool,
    /// `None` for the simulator: no metrics, access logs at debug only.
    pub(super) metrics: Option<Arc<Metrics>>,
}

impl<S> Connection<S>
where
    S: Service<hyper::Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    pub(super) async fn serve_tls(self, acceptor: TlsAcceptor, stream: TcpStream, activity: Arc<Activity>) {
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, peer = %self.peer, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                return;
            }
        };
        if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
            tracing::info!(peer = %self.peer, "answered a TLS-ALPN-01 validation");
            return;
        }
        self.serve(tls, activity).await
    }

    pub(super) async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        self,
        io: I,
        activity: Arc<Activity>,
    ) {
        let Connection { builder, service, watcher, peer, tls, metrics } = self;
        let body_timeout = activity.limits.body;
        let per_request = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let busy = activity.begin();
            req.extensions_mut().insert(PeerAddr(peer));
            req.extensions_mut().insert(BodyTimeout(body_timeout));
            if tls {
                req.extensions_mut().insert(OverTls);
            }
            // Every request gets an id: in its log lines, and back in X-Request-Id.
            let id = format!("{:016x}", rand::random::<u64>());
            let span = tracing::info_span!("request", id = %id);
            let (method, path) = (req.method().clone(), req.uri().path().to_owned());
            let mut service = service.clone();
            let metrics = metrics.clone();
            let declared_length =
                req.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            async move {
                let started = Instant::now();
                if let Some(m) = &metrics {
                    m.in_flight(1);
                }
                let mut response = service.call(req).instrument(span.clone()).await?;
                let status = response.status().as_u16();
                if let Ok(value) = HeaderValue::from_str(&id) {
                    response.headers_mut().insert("x-request-id", value);
                }
                let elapsed_ms = started.elapsed().as_millis() as u64;
                let _entered = span.enter();
                if status == 413 {
                    body_too_large(metrics.as_deref(), peer, &path, declared_length);
                }
                match &metrics {
                    Some(m) => {
                        m.in_flight(-1);
                        m.request(route_label(&path), status);
                        // The path only: query strings may carry login codes.
                        tracing::info!(target: "paybridge::access", %method, path, status, elapsed_ms, %peer);
                    }
                    None => tracing::debug!(target: "paybridge::access", %method, path, status, elapsed_ms, %peer),
                }
                // Busy until the reply's last byte is sent (a long CSV to a slow
                // phone is not an idle connection), but only for so long.
                let writing = busy.reply();
                Ok::<_, Infallible>(response.map(|body| Guarded { body, writing, _busy: busy }))
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), per_request);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    }
}

/// Counts and logs a body refused for its size: who sent how much, where.
fn body_too_large(metrics: Option<&Metrics>, peer: SocketAddr, path: &str, declared: Option<u64>) {
    static LOG: std::sync::OnceLock<crate::limit::Summary> = std::sync::OnceLock::new();
    if let Some(m) = metrics {
        m.refused("body_too_large");
    }
    if let Some(count) = LOG.get_or_init(|| crate::limit::Summary::new(Duration::from_secs(1))).event() {
        let size = declared.map_or_else(|| "more than the limit (chunked)".to_owned(), |n| format!("{n} bytes"));
        tracing::warn!(%peer, path, size, count, "request body too large (413)");
    }
}
