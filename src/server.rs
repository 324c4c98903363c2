//! The server loop: accept TCP, serve HTTP/1.1 and HTTP/2 with hyper-util,
//! hand each request its peer address, and shut down gracefully.
//!
//! warp 0.4 has no TLS of its own, so PayBridge runs its own accept loop
//! from the start; a TLS acceptor slots in between `accept` and `serve`.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::http::PeerAddr;

/// How long in-flight requests get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A client gets this long to send its request headers (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves `routes` on `listener` until `shutdown` completes, then stops
/// accepting and waits (up to [`SHUTDOWN_GRACE`]) for open requests.
pub async fn run(listener: TcpListener, routes: BoxedFilter<(Response,)>, shutdown: impl Future<Output = ()>) {
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
        let service = service.clone();
        let per_request = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            let mut service = service.clone();
            async move { Ok::<_, Infallible>(service.call(req).await.unwrap_or_else(|never| match never {})) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), per_request).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing open connections"),
    }
}
