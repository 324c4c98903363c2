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

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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

use crate::http::body::BodyTimeout;
use crate::http::{OverTls, PeerAddr};
use crate::limit::PeerKey;
use crate::metrics::{route_label, Metrics};
use crate::tls::ACME_TLS_ALPN;

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
            // Dropping the connection closes its socket, whatever hyper was
            // waiting for (a window that never opens, a client that never reads).
            tokio::select! {
                () = served => {}
                closed = activity.watch() => closes.record(closed, peer, metrics.as_deref()),
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
    async fn serve_tls(self, acceptor: TlsAcceptor, stream: TcpStream, activity: Arc<Activity>) {
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

    async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: I, activity: Arc<Activity>) {
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

/// Open connections, in total and per peer.
struct Admission {
    limits: ConnectionLimits,
    open: std::sync::Mutex<(usize, HashMap<PeerKey, usize>)>,
    /// Where the open-connections gauge is kept (`None` for the simulator).
    metrics: Option<Arc<Metrics>>,
}

/// One admitted connection; leaving gives its place back.
struct Permit {
    admission: Arc<Admission>,
    key: PeerKey,
}

impl Admission {
    fn new(limits: ConnectionLimits, metrics: Option<Arc<Metrics>>) -> Admission {
        Admission { limits, open: std::sync::Mutex::new((0, HashMap::new())), metrics }
    }

    /// A place for a connection from `ip`, or the `paybridge_refused_total`
    /// reason it gets none.
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Result<Permit, &'static str> {
        let key = PeerKey::of(ip);
        let mut open = self.open.lock().expect("admission lock");
        let (total, peers) = &mut *open;
        let mine = peers.get(&key).copied().unwrap_or(0);
        let limits = &self.limits;
        if *total >= limits.total {
            return Err("connection_limit");
        }
        if mine >= limits.per_ip {
            return Err("connection_limit_per_ip");
        }
        // Every open place taken outside the reserve was taken while fewer
        // than `total - reserved` were open, and an address holds at most
        // `reserved_per_ip` places taken inside it: what N addresses can
        // hold is bounded whatever order they connect in.
        if *total >= limits.total.saturating_sub(limits.reserved) && mine >= limits.reserved_per_ip {
            return Err("connection_limit_reserved");
        }
        *total += 1;
        peers.insert(key, mine + 1);
        if let Some(m) = &self.metrics {
            m.connections(1);
        }
        Ok(Permit { admission: self.clone(), key })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock().expect("admission lock");
        let (total, peers) = &mut *open;
        *total -= 1;
        if let Some(m) = &self.admission.metrics {
            m.connections(-1);
        }
        if let Some(n) = peers.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.key);
            }
        }
    }
}

/// A reply body that keeps its connection busy until it is dropped, and
/// tells it when the reply moves.
struct Guarded<B> {
    body: B,
    writing: Writing,
    _busy: Busy,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        // hyper asks for the next frame only once the last one found room
        // (an HTTP/2 window, a free write buffer): a frame taken is progress.
        if let std::task::Poll::Ready(Some(Ok(_))) = &polled {
            self.writing.0.moved();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a connection's watchdog closed it (the `reason` of
/// `paybridge_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// No whole first request within `first_request_timeout_secs`.
    FirstRequest,
    /// Nothing in progress for `idle_timeout_secs`.
    Idle,
    /// Replies pending and none moved for `idle_timeout_secs`.
    Stalled,
    /// A reply not written within `write_timeout_secs`.
    WriteTimeout,
}

impl Closed {
    fn reason(self) -> &'static str {
        match self {
            Closed::FirstRequest => "first_request_timeout",
            Closed::Idle => "idle_timeout",
            Closed::Stalled => "reply_stalled",
            Closed::WriteTimeout => "write_timeout",
        }
    }
}

/// Counts connections closed by a limit, with one log line a minute for the
/// limits a working client never reaches (a flood of them is one episode).
struct Closes {
    stalled: crate::limit::Summary,
    write: crate::limit::Summary,
}

impl Default for Closes {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Closes { stalled: crate::limit::Summary::new(minute), write: crate::limit::Summary::new(minute) }
    }
}

impl Closes {
    fn record(&self, closed: Closed, peer: SocketAddr, metrics: Option<&Metrics>) {
        if let Some(m) = metrics {
            m.connection_closed(closed.reason());
        }
        // Idle keep-alives and slow first requests are everyday events: counted only.
        let (summary, key) = match closed {
            Closed::Stalled => (&self.stalled, "http.idle_timeout_secs"),
            Closed::WriteTimeout => (&self.write, "http.write_timeout_secs"),
            Closed::FirstRequest | Closed::Idle => return,
        };
        if let Some(count) = summary.event() {
            tracing::warn!(count, last_peer = %peer, reason = closed.reason(), "connections closed: a reply was not written in time ({key})");
        }
    }
}

/// What a connection is doing, for closing it when it does nothing useful:
/// no request in time, nothing in progress, or a reply that does not move.
struct Activity {
    limits: ConnectionLimits,
    opened: Instant,
    state: std::sync::Mutex<State>,
    /// When a reply last moved (ms since `opened`); an atomic because every
    /// frame of every reply sets it.
    moved: AtomicU64,
    /// Wakes the watchdog when a reply begins or a request ends, so it never
    /// sleeps past a deadline it has not seen yet.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Requests in progress, from their headers to their reply's last byte.
    busy: usize,
    /// Whether a request has arrived yet.
    served: bool,
    /// When the last request ended (since `opened`).
    last: Duration,
    /// Replies being written: when each began, by a number that grows, so
    /// the first entry is the oldest.
    writing: BTreeMap<u64, Instant>,
    /// The number of the next reply.
    next: u64,
}

/// A request in progress on a connection.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().expect("activity lock");
        state.last = self.0.opened.elapsed();
        state.busy -= 1;
        drop(state);
        self.0.changed.notify_one();
    }
}

impl Busy {
    /// The request has its reply: from now on it has `write` to be sent.
    fn reply(&self) -> Writing {
        let activity = &self.0;
        let mut state = activity.state.lock().expect("activity lock");
        let number = state.next;
        state.next += 1;
        state.writing.insert(number, Instant::now());
        drop(state);
        activity.moved();
        activity.changed.notify_one();
        Writing(activity.clone(), number)
    }
}

/// A reply being written; its deadline ends when it is dropped.
struct Writing(Arc<Activity>, u64);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.state.lock().expect("activity lock").writing.remove(&self.1);
    }
}

impl Activity {
    fn new(limits: ConnectionLimits) -> Arc<Activity> {
        Arc::new(Activity {
            limits,
            opened: Instant::now(),
            state: std::sync::Mutex::new(State::default()),
            moved: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        })
    }

    fn begin(self: &Arc<Self>) -> Busy {
        let mut state = self.state.lock().expect("activity lock");
        state.busy += 1;
        state.served = true;
        Busy(self.clone())
    }

    fn moved(&self) {
        self.moved.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once the connection must be closed, with why.
    async fn watch(&self) -> Closed {
        loop {
            let changed = self.changed.notified();
            let wake = match self.check(Instant::now()) {
                Ok(wake) => wake,
                Err(closed) => return closed,
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = changed => {}
            }
        }
    }

    /// `Err` if the connection is past a deadline, else when to look again.
    fn check(&self, now: Instant) -> Result<Instant, Closed> {
        let state = self.state.lock().expect("activity lock");
        if let Some((_, &began)) = state.writing.first_key_value() {
            // SECURITY: a client can hold a reply forever (an HTTP/2 window
            // of 0, pings answered): the connection would count as busy and
            // no idle timeout would ever close it.
            let written_by = began + self.limits.write;
            let moved = self.opened + Duration::from_millis(self.moved.load(Ordering::Relaxed));
            let moving_by = moved + self.limits.idle;
            return if now >= written_by {
                Err(Closed::WriteTimeout)
            } else if now >= moving_by {
                Err(Closed::Stalled)
            } else {
                Ok(written_by.min(moving_by))
            };
        }
        let limit = if state.served { self.limits.idle } else { self.limits.first_request };
        if state.busy > 0 {
            // A handler at work has bounds of its own (body_timeout_secs, the
            // WeChat timeout); its reply or its end wakes the watchdog.
            return Ok(now + limit);
        }
        let deadline = self.opened + state.last + limit;
        match (now >= deadline, state.served) {
            (false, _) => Ok(deadline),
            (true, true) => Err(Closed::Idle),
            (true, false) => Err(Closed::FirstRequest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// Takes places for `addresses` in turn until none gets another: one
    /// address at a time to its cap, or one place per address per round.
    fn fill(admission: &Arc<Admission>, addresses: &[IpAddr], one_at_a_time: bool) -> Vec<Permit> {
        let mut held = Vec::new();
        loop {
            let before = held.len();
            for &ip in addresses {
                while let Ok(permit) = admission.admit(ip) {
                    held.push(permit);
                    if !one_at_a_time {
                        break;
                    }
                }
            }
            if held.len() == before {
                return held;
            }
        }
    }

    #[test]
    fn sixty_four_addresses_leave_reserved_places_in_any_order() {
        let limits = ConnectionLimits::default();
        let bound = limits.total - limits.reserved + STALLING_ADDRESSES * limits.reserved_per_ip;
        assert!(bound <= limits.total - limits.reserved / 2, "the defaults leave half the reserve");
        let attackers: Vec<IpAddr> = (0..STALLING_ADDRESSES).map(|i| IpAddr::from([10, 0, 0, i as u8])).collect();
        for one_at_a_time in [true, false] {
            let admission = Arc::new(Admission::new(limits, None));
            let held = fill(&admission, &attackers, one_at_a_time);
            assert!(held.len() >= limits.total - limits.reserved, "the open places are all taken: {}", held.len());
            assert!(held.len() <= bound, "{} held (one at a time: {one_at_a_time})", held.len());
            assert_eq!(admission.admit(attackers[STALLING_ADDRESSES - 1]).err(), Some("connection_limit_reserved"));
            // Newcomers get reserved places, a few each, until none is left.
            let newcomer = IpAddr::from([192, 0, 2, 1]);
            let mine: Vec<_> = (0..limits.reserved_per_ip).map(|_| admission.admit(newcomer).unwrap()).collect();
            assert_eq!(admission.admit(newcomer).err(), Some("connection_limit_reserved"));
            let others: Vec<IpAddr> = (0..=255u8).map(|i| IpAddr::from([192, 0, 3, i])).collect();
            let rest = fill(&admission, &others, true);
            assert_eq!(held.len() + mine.len() + rest.len(), limits.total);
            assert_eq!(admission.admit(IpAddr::from([192, 0, 4, 1])).err(), Some("connection_limit"));
            drop(rest);
            assert!(admission.admit(IpAddr::from([192, 0, 4, 1])).is_ok(), "places come back");
        }
    }

    /// A flood of closed connections is one log line a minute per limit,
    /// and every one of them is counted.
    #[test]
    fn closes_are_counted_each_and_logged_once_per_episode() {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let (closes, metrics) = (Closes::default(), Metrics::default());
        let peer: SocketAddr = "192.0.2.7:4242".parse().unwrap();
        tracing::subscriber::with_default(subscriber, || {
            for closed in [Closed::WriteTimeout, Closed::Stalled, Closed::Idle, Closed::FirstRequest] {
                for _ in 0..100 {
                    closes.record(closed, peer, Some(&metrics));
                }
            }
        });
        for reason in ["write_timeout", "reply_stalled", "idle_timeout", "first_request_timeout"] {
            assert_eq!(metrics.closed_count(reason), 100, "{reason}");
        }
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("http.write_timeout_secs") && text.contains("http.idle_timeout_secs"), "{text}");
        assert!(text.contains("last_peer=192.0.2.7:4242"), "{text}");
    }

    #[test]
    fn the_per_address_cap_holds_below_the_reserve() {
        let limits =
            ConnectionLimits { total: 100, per_ip: 10, reserved: 20, reserved_per_ip: 2, ..Default::default() };
        let admission = Arc::new(Admission::new(limits, None));
        let ip = IpAddr::from([10, 0, 0, 1]);
        let held: Vec<_> = (0..10).map(|_| admission.admit(ip).unwrap()).collect();
        assert_eq!(admission.admit(ip).err(), Some("connection_limit_per_ip"));
        drop(held);
        assert!(admission.admit(ip).is_ok());
    }
}
