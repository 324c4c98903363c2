//! Prometheus metrics: requests by route and status, unified orders and
//! notifies by outcome, WeChat latency, certificate expiry, database size.
//!
//! Counters live in one [`Metrics`] per running server (tests run several
//! servers in one process); `/metrics` renders them in the text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets (seconds) for calls to WeChat.
const BUCKETS: [f64; 9] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The counters of one server.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    unified_orders: Mutex<BTreeMap<&'static str, u64>>,
    notifies: Mutex<BTreeMap<&'static str, u64>>,
    webhooks: Mutex<BTreeMap<&'static str, u64>>,
    lifecycle: Mutex<BTreeMap<&'static str, u64>>,
    bills: Mutex<BTreeMap<&'static str, u64>>,
    wechat: Mutex<BTreeMap<&'static str, Histogram>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    closed: Mutex<BTreeMap<&'static str, u64>>,
    in_flight: AtomicU64,
    connections: AtomicU64,
}

/// The route template of a request path, so labels stay few.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/pay/openid" => "/pay/openid",
        "/pay/unifiedOrder" => "/pay/unifiedOrder",
        "/pay/notify" | "/pay/parseOrderNotifyResult" => "/pay/notify",
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        "/admin" => "/admin",
        p if p.starts_with("/pay/orders/") => "/pay/orders/{no}",
        p if p.starts_with("/admin/static/") => "/admin/static",
        p if p.starts_with("/admin/api/") => "/admin/api",
        "/platform/v1/orders" => "/platform/v1/orders",
        "/platform/v1/changes" => "/platform/v1/changes",
        p if p.starts_with("/platform/v1/orders/") && p.ends_with("/close") => "/platform/v1/orders/{no}/close",
        p if p.starts_with("/platform/v1/orders/") => "/platform/v1/orders/{no}",
        p if p.starts_with("/.well-known/acme-challenge/") => "/.well-known/acme-challenge",
        _ => "other",
    }
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, route: &'static str, status: u16) {
        *self.requests.lock().expect("metrics lock").entry((route, status)).or_default() += 1;
    }

    /// Counts a unified order by outcome (`prepaid`, `reused`, `wechat_error`, `refused`).
    pub fn unified_order(&self, outcome: &'static str) {
        *self.unified_orders.lock().expect("metrics lock").entry(outcome).or_default() += 1;
    }

    /// Counts a webhook attempt by result (`delivered`, `failed`).
    pub fn webhook(&self, result: &'static str) {
        *self.webhooks.lock().expect("metrics lock").entry(result).or_default() += 1;
    }

    /// Counts one day's reconciliation by its outcome (`MATCHED`, `DIFFERENCES`, ...).
    pub fn bill_reconciled(&self, state: &'static str) {
        *self.bills.lock().expect("metrics lock").entry(state).or_default() += 1;
    }

    /// Counts one step of the order lifecycle by what came of it.
    pub fn lifecycle(&self, result: &'static str) {
        *self.lifecycle.lock().expect("metrics lock").entry(result).or_default() += 1;
    }

    /// Webhook attempts with this result so far.
    pub fn webhook_count(&self, result: &'static str) -> u64 {
        self.webhooks.lock().expect("metrics lock").get(result).copied().unwrap_or(0)
    }

    /// Counts a notify by verdict.
    pub fn notify(&self, verdict: &'static str) {
        *self.notifies.lock().expect("metrics lock").entry(verdict).or_default() += 1;
    }

    /// Counts something refused to protect the server (`body_too_large`,
    /// `notify_not_recorded`, `connection_limit`, ...).
    pub fn refused(&self, reason: &'static str) {
        *self.refused.lock().expect("metrics lock").entry(reason).or_default() += 1;
    }

    /// How many times `reason` was refused.
    pub fn refused_count(&self, reason: &'static str) -> u64 {
        self.refused.lock().expect("metrics lock").get(reason).copied().unwrap_or(0)
    }

    /// Counts a connection the server closed by a limit (`write_timeout`,
    /// `reply_stalled`, `idle_timeout`, `first_request_timeout`).
    pub fn connection_closed(&self, reason: &'static str) {
        *self.closed.lock().expect("metrics lock").entry(reason).or_default() += 1;
    }

    /// How many connections were closed for `reason`.
    pub fn closed_count(&self, reason: &'static str) -> u64 {
        self.closed.lock().expect("metrics lock").get(reason).copied().unwrap_or(0)
    }

    /// Tracks open connections (all listeners that have metrics).
    pub fn connections(&self, delta: i64) {
        if delta >= 0 {
            self.connections.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.connections.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Records how long a call to WeChat took.
    pub fn wechat_call(&self, api: &'static str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut all = self.wechat.lock().expect("metrics lock");
        let h = all.entry(api).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Tracks requests in progress.
    pub fn in_flight(&self, delta: i64) {
        if delta >= 0 {
            self.in_flight.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.in_flight.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Requests being served now.
    pub fn requests_in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition, with gauges read now.
    pub fn render(&self, sled_bytes: u64, orders: &[(&str, u64)], cert_not_after: Option<i64>) -> String {
        let mut out = String::new();
        out.push_str("# HELP paybridge_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE paybridge_http_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "paybridge_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP paybridge_http_requests_in_flight Requests being served.\n");
        out.push_str("# TYPE paybridge_http_requests_in_flight gauge\n");
        let _ = writeln!(out, "paybridge_http_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        out.push_str("# HELP paybridge_connections_open Connections open now.\n");
        out.push_str("# TYPE paybridge_connections_open gauge\n");
        let _ = writeln!(out, "paybridge_connections_open {}", self.connections.load(Ordering::Relaxed));
        out.push_str("# HELP paybridge_connections_closed_total Connections the server closed by a limit.\n");
        out.push_str("# TYPE paybridge_connections_closed_total counter\n");
        for (reason, n) in self.closed.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "paybridge_connections_closed_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP paybridge_webhook_attempts_total Webhook attempts to platforms by result.\n");
        out.push_str("# TYPE paybridge_webhook_attempts_total counter\n");
        for (result, n) in self.webhooks.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "paybridge_webhook_attempts_total{{result=\"{result}\"}} {n}");
        }
        out.push_str("# HELP paybridge_bill_runs_total Daily bill reconciliations by outcome.\n");
        out.push_str("# TYPE paybridge_bill_runs_total counter\n");
        for (state, n) in self.bills.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "paybridge_bill_runs_total{{state=\"{state}\"}} {n}");
        }
        out.push_str("# HELP paybridge_lifecycle_total Queries and closes of open orders by result.\n");
        out.push_str("# TYPE paybridge_lifecycle_total counter\n");
        for (result, n) in self.lifecycle.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "paybridge_lifecycle_total{{result=\"{result}\"}} {n}");
        }
        out.push_str("# HELP paybridge_unified_orders_total Unified orders by outcome.\n");
        out.push_str("# TYPE paybridge_unified_orders_total counter\n");
        for (outcome, n) in self.unified_orders.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "paybridge_unified_orders_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str("# HELP paybridge_notifies_total Payment notifies by verdict.\n");
        out.push_str("# TYPE paybridge_notifies_total counter\n");
        for (verdict, n) in self.notifies.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "paybridge_notifies_total{{verdict=\"{verdict}\"}} {n}");
        }
        out.push_str("# HELP paybridge_refused_total Requests, connections and records refused by a limit.\n");
        out.push_str("# TYPE paybridge_refused_total counter\n");
        for (reason, n) in self.refused.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "paybridge_refused_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP paybridge_wechat_request_duration_seconds Calls to WeChat's API.\n");
        out.push_str("# TYPE paybridge_wechat_request_duration_seconds histogram\n");
        for (api, h) in self.wechat.lock().expect("metrics lock").iter() {
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "paybridge_wechat_request_duration_seconds_bucket{{api=\"{api}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "paybridge_wechat_request_duration_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "paybridge_wechat_request_duration_seconds_sum{{api=\"{api}\"}} {}", h.sum);
            let _ = writeln!(out, "paybridge_wechat_request_duration_seconds_count{{api=\"{api}\"}} {}", h.count);
        }
        out.push_str("# HELP paybridge_orders Orders stored, by status.\n# TYPE paybridge_orders gauge\n");
        for (status, n) in orders {
            let _ = writeln!(out, "paybridge_orders{{status=\"{status}\"}} {n}");
        }
        out.push_str(
            "# HELP paybridge_sled_size_bytes Database size on disk.\n# TYPE paybridge_sled_size_bytes gauge\n",
        );
        let _ = writeln!(out, "paybridge_sled_size_bytes {sled_bytes}");
        if let Some(t) = cert_not_after {
            out.push_str(
                "# HELP paybridge_certificate_expiry_timestamp_seconds When the served certificate expires.\n",
            );
            out.push_str("# TYPE paybridge_certificate_expiry_timestamp_seconds gauge\n");
            let _ = writeln!(out, "paybridge_certificate_expiry_timestamp_seconds {t}");
        }
        out
    }
}

/// The store writer's figures, read by the caller: the metrics know the
/// numbers, not the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriterFigures {
    /// Writes waiting to be made durable.
    pub pending: u64,
    /// How long the batch being written has waited, seconds (0 when idle).
    pub oldest_pending_secs: f64,
    /// Batches made durable.
    pub syncs: u64,
    /// Writes acknowledged after their batch was synced.
    pub acknowledged: u64,
    /// Writes refused at once because the queue was full.
    pub refused_busy: u64,
    /// Writes failed by a storage error.
    pub failed: u64,
}

/// The store writer's figures, in Prometheus text.
pub fn render_writer(stats: &WriterFigures) -> String {
    let age = stats.oldest_pending_secs;
    let rows = [
        ("paybridge_store_pending_writes", "gauge", "Writes waiting to be made durable.", stats.pending.to_string()),
        (
            "paybridge_store_oldest_pending_write_seconds",
            "gauge",
            "How long the batch being written has waited (0 when idle).",
            format!("{age:.3}"),
        ),
        (
            "paybridge_store_syncs_total",
            "counter",
            "Batches made durable (one fdatasync each).",
            stats.syncs.to_string(),
        ),
        (
            "paybridge_store_writes_acknowledged_total",
            "counter",
            "Writes acknowledged after their batch was synced.",
            stats.acknowledged.to_string(),
        ),
        (
            "paybridge_store_writes_refused_total",
            "counter",
            "Writes refused at once because the queue was full.",
            stats.refused_busy.to_string(),
        ),
        (
            "paybridge_store_writes_failed_total",
            "counter",
            "Writes failed by a storage error (full disk, I/O).",
            stats.failed.to_string(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request(route_label("/pay/orders/ABC123456"), 200);
        m.request("/pay/notify", 200);
        m.unified_order("prepaid");
        m.notify("PAID");
        m.refused("body_too_large");
        m.connection_closed("write_timeout");
        m.connections(2);
        m.connections(-1);
        m.wechat_call("unifiedorder", Duration::from_millis(70));
        let text = m.render(4096, &[("PAID", 1)], Some(1_800_000_000));
        for line in [
            "paybridge_http_requests_total{route=\"/pay/orders/{no}\",status=\"200\"} 1",
            "paybridge_unified_orders_total{outcome=\"prepaid\"} 1",
            "paybridge_notifies_total{verdict=\"PAID\"} 1",
            "paybridge_refused_total{reason=\"body_too_large\"} 1",
            "paybridge_connections_closed_total{reason=\"write_timeout\"} 1",
            "paybridge_connections_open 1",
            "paybridge_wechat_request_duration_seconds_bucket{api=\"unifiedorder\",le=\"0.05\"} 0",
            "paybridge_wechat_request_duration_seconds_bucket{api=\"unifiedorder\",le=\"0.1\"} 1",
            "paybridge_wechat_request_duration_seconds_count{api=\"unifiedorder\"} 1",
            "paybridge_orders{status=\"PAID\"} 1",
            "paybridge_sled_size_bytes 4096",
            "paybridge_certificate_expiry_timestamp_seconds 1800000000",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn renders_the_writer_figures() {
        let text = render_writer(&WriterFigures::default());
        for line in [
            "# TYPE paybridge_store_pending_writes gauge",
            "paybridge_store_pending_writes 0",
            "paybridge_store_oldest_pending_write_seconds 0.000",
            "# TYPE paybridge_store_writes_failed_total counter",
            "paybridge_store_writes_failed_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
