//! The server loop: accept TCP (and TLS), serve HTTP/1.1 and HTTP/2 with
//! hyper-util, hand each request its peer address, and shut down gracefully.
//!
//! warp 0.4 has no TLS of its own, so PayBridge runs its own accept loop; the
//! TLS handshake happens in the connection's task, so a slow client never
//! holds up the loop.
//!
//! A connection keeps its place only while it is used: each one has a
//! watchdog (`Activity`) that closes it when its first request is late,
//! when nothing is in progress, or when a reply is not written in time
//! (a client can hold an HTTP/2 reply forever with a window of 0).
//!
//! The parts: which connections get a place (`server/admission.rs`), serving
//! one connection and its requests (`server/connection.rs`), the watchdog
//! that closes a connection doing nothing useful (`server/watchdog.rs`), and
//! the reply body that keeps it busy while it is written (`server/guard.rs`).

mod admission;
mod connection;
mod guard;
mod watchdog;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::metrics::Metrics;
use admission::Admission;
use connection::Connection;
use watchdog::{Activity, Closes};

/// How long in-flight requests get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A client gets this long to send its request headers (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// A client gets this long to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections a listener holds open, and for how long (`[http]`).
///
/// SECURITY: a few addresses must not be able to take every place, yet one
/// address may rightly need many (WeChat Pay's notify servers, a platform's
/// backend, a carrier NAT). So the last `reserved` places go only to
/// addresses holding fewer than `reserved_per_ip` connections: however the
/// other places are taken, 64 addresses hold at most
/// `total - reserved + 64 × reserved_per_ip` (2,048 − 512 + 256 = 1,792 by
/// default), and `/healthz` or a new payer still gets one of the other 256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// All clients together (`max_connections`); past it a new connection
    /// is closed at once.
    pub total: usize,
    /// One address (an IPv6 /64 counts as one; `max_connections_per_ip`).
    pub per_ip: usize,
    /// The last places, kept for addresses that hold few connections
    /// (`reserved_connections`).
    pub reserved: usize,
    /// An address holding this many connections gets no reserved place
    /// (`reserved_connections_per_ip`).
    pub reserved_per_ip: usize,
    /// How long a new connection (TLS handshake included) gets until its
    /// first request has arrived whole, whatever the protocol: silent
    /// sockets, half an HTTP/2 preface and unfinished HEADERS are all closed
    /// after it (`first_request_timeout_secs`).
    pub first_request: Duration,
    /// How long a connection with no request in progress stays open,
    /// HTTP/1.1 keep-alive and idle HTTP/2 alike; also how long a reply may
    /// make no progress at all (an HTTP/2 window held at 0) before its
    /// connection is closed (`idle_timeout_secs`).
    pub idle: Duration,
    /// How long a request body may take to arrive (`body_timeout_secs`).
    pub body: Duration,
    /// How long a reply may take to be written, from the handler's answer
    /// to its last byte handed to the connection; past it the connection is
    /// closed, HTTP/2 streams that never get a window included
    /// (`write_timeout_secs`).
    pub write: Duration,
}

/// How many addresses the default reserve is sized for: that many addresses
/// take at most half of it, `64 × 4` of 512 places.
pub const STALLING_ADDRESSES: usize = 64;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            total: 2048,
            per_ip: 256,
            reserved: 512,
            reserved_per_ip: 4,
            first_request: Duration::from_secs(20),
            idle: Duration::from_secs(60),
            body: Duration::from_secs(20),
            write: Duration::from_secs(30),
        }
    }
}

/// What a listener is served with besides its routes.
#[derive(Clone, Default)]
pub struct Serving {
    /// `None` for the simulator: no metrics, access logs at debug only.
    pub metrics: Option<Arc<Metrics>>,
    /// Connection caps.
    pub limits: ConnectionLimits,
}

/// Serves `routes` over plain HTTP on `listener` until `shutdown` completes,
/// then stops accepting and waits (up to [`SHUTDOWN_GRACE`]) for open requests.
pub async fn run(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, None, routes, serving, shutdown).await
}

/// Like [`run`], over TLS. Handshakes that negotiate `acme-tls/1` are
/// TLS-ALPN-01 validations: they end after the handshake.
pub async fn run_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    routes: BoxedFilter<(Response,)>,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, Some(acceptor), routes, serving, shutdown).await
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: BoxedFilter<(Response,)>,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
) {
    let Serving { metrics, limits } = serving;
    let service = warp::service(routes);
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(64)
        // A reply in many chunks is pulled only this far ahead of what the
        // client accepts (hyper's default is 400 KiB per stream).
        .max_send_buf_size(64 * 1024)
        .max_header_list_size(64 * 1024);
    let admission = Arc::new(Admission::new(limits, metrics.clone()));
    let refusals = Arc::new(crate::limit::Summary::new(Duration::from_secs(60)));
    let closes = Arc::new(Closes::default());
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
        let permit = match admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(reason) => {
                // Closed before any work: a flood of sockets costs one accept each.
                drop(stream);
                if let Some(m) = &metrics {
                    m.refused(reason);
                }
                if let Some(count) = refusals.event() {
                    tracing::warn!(count, last_peer = %peer, reason, "connections refused (http.max_connections / max_connections_per_ip / reserved_connections)");
                }
                continue;
            }
        };
        // Replies and TLS flights are small and complete: send them at once
        // instead of letting Nagle wait for the client's (delayed) ACK.
        let _ = stream.set_nodelay(true);
        let peer = SocketAddr::new(crate::limit::canonical(peer.ip()), peer.port());
        let connection = Connection {
            builder: builder.clone(),
            service: service.clone(),
            watcher: graceful.watcher(),
            peer,
            tls: tls.is_some(),
            metrics: metrics.clone(),
        };
        let tls = tls.clone();
        let (closes, metrics) = (closes.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Activity::new(limits);
            let served = async {
                match tls {
                    None => connection.serve(stream, activity.clone()).await,
                    Some(acceptor) => connection.serve_tls(acceptor, stream, activity.clone()).await,
                }
            };
            // Counted before the socket closes, so the metrics already say
            // why when the client sees it closed.
            let watched = async {
                let closed = activity.watch().await;
                closes.record(closed, peer, metrics.as_deref());
            };
            // Dropping the connection closes its socket, whatever hyper was
            // waiting for (a window that never opens, a client that never reads).
            tokio::select! {
                () = served => {}
                () = watched => {}
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing open connections"),
    }
}
