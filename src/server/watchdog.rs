//! The per-connection watchdog: what a connection is doing ([`Activity`])
//! and its deadlines (first request, idle, a reply that stalls or takes too
//! long to write), and the count and log of the connections it closes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ConnectionLimits;
use crate::metrics::Metrics;

/// Why a connection's watchdog closed it (the `reason` of
/// `paybridge_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
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
pub(super) struct Closes {
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
    pub(super) fn record(&self, closed: Closed, peer: SocketAddr, metrics: Option<&Metrics>) {
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
pub(super) struct Activity {
    pub(super) limits: ConnectionLimits,
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
pub(super) struct Busy(Arc<Activity>);

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
    pub(super) fn reply(&self) -> Writing {
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
pub(super) struct Writing(pub(super) Arc<Activity>, u64);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.state.lock().expect("activity lock").writing.remove(&self.1);
    }
}

impl Activity {
    pub(super) fn new(limits: ConnectionLimits) -> Arc<Activity> {
        Arc::new(Activity {
            limits,
            opened: Instant::now(),
            state: std::sync::Mutex::new(State::default()),
            moved: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        let mut state = self.state.lock().expect("activity lock");
        state.busy += 1;
        state.served = true;
        Busy(self.clone())
    }

    pub(super) fn moved(&self) {
        self.moved.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once the connection must be closed, with why.
    pub(super) async fn watch(&self) -> Closed {
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
}
