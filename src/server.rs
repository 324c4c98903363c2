//! The server loop: accept TCP (and TLS), serve HTTP/1.1 and HTTP/2 with
//! hyper-util, hand each request its peer address, and shut down gracefully.
//!
//! warp 0.4 has no TLS of its own, so PayBridge runs its own accept loop; the
//! TLS handshake happens in the connection's task, so a slow client never
//! holds up the loop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use tracing::Instrument;
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::reply::Response;

use crate::http::{OverTls, PeerAddr};
use crate::metrics::{route_label, Metrics};
use crate::tls::ACME_TLS_ALPN;

/// How long in-flight requests get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A client gets this long to send its request headers (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// A client gets this long to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `routes` over plain HTTP on `listener` until `shutdown` completes,
/// then stops accepting and waits (up to [`SHUTDOWN_GRACE`]) for open requests.
pub async fn run(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, None, routes, metrics, shutdown).await
}

/// Like [`run`], over TLS. Handshakes that negotiate `acme-tls/1` are
/// TLS-ALPN-01 validations: they end after the handshake.
pub async fn run_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    routes: BoxedFilter<(Response,)>,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, Some(acceptor), routes, metrics, shutdown).await
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: BoxedFilter<(Response,)>,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()>,
) {
    let service = warp::service(routes);
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Replies and TLS flights are small and complete: send them at once
        // instead of letting Nagle wait for the client's (delayed) ACK.
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            service: service.clone(),
            watcher: graceful.watcher(),
            peer,
            tls: tls.is_some(),
            metrics: metrics.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection.serve(stream).await,
                Some(acceptor) => connection.serve_tls(acceptor, stream).await,
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing open connections"),
    }
}

/// One accepted connection and what it needs to be served.
struct Connection<S> {
    builder: Builder<TokioExecutor>,
    service: S,
    watcher: Watcher,
    peer: SocketAddr,
    tls: bool,
    /// `None` for the simulator: no metrics, access logs at debug only.
    metrics: Option<Arc<Metrics>>,
}

impl<S> Connection<S>
where
    S: Service<hyper::Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    async fn serve_tls(self, acceptor: TlsAcceptor, stream: TcpStream) {
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
        self.serve(tls).await
    }

    async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: I) {
        let Connection { builder, service, watcher, peer, tls, metrics } = self;
        let per_request = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            if tls {
                req.extensions_mut().insert(OverTls);
            }
            // Every request gets an id: in its log lines, and back in X-Request-Id.
            let id = format!("{:016x}", rand::random::<u64>());
            let span = tracing::info_span!("request", id = %id);
            let (method, path) = (req.method().clone(), req.uri().path().to_owned());
            let mut service = service.clone();
            let metrics = metrics.clone();
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
                match &metrics {
                    Some(m) => {
                        m.in_flight(-1);
                        m.request(route_label(&path), status);
                        // The path only: query strings may carry login codes.
                        tracing::info!(target: "paybridge::access", %method, path, status, elapsed_ms, %peer);
                    }
                    None => tracing::debug!(target: "paybridge::access", %method, path, status, elapsed_ms, %peer),
                }
                Ok::<_, Infallible>(response)
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), per_request);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    }
}
