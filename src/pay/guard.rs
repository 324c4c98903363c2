//! What strangers may make PayBridge do on their behalf: per-address
//! budgets for `/pay/unifiedOrder` and `/pay/openid`, one global budget of
//! calls to WeChat a second (prepay and `jscode2session`: they spend the
//! merchant's API quota), and a cap on failed prepays per order.
//!
//! Each limit is a config key (`[orders]`), counted in
//! `paybridge_refused_total{reason=...}` and logged once per minute while
//! it refuses (with the count), never once per request. WeChat's notifies
//! never pass through here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::PayError;
use crate::limit::{PeerBudget, Summary};
use crate::metrics::Metrics;

/// The window of [`Guard::max_failed_prepays`].
pub const FAILED_PREPAY_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The most orders whose failures are remembered; past it, the oldest
/// windows go first (memory stays fixed whatever strangers send).
const FAILURE_TABLE: usize = 65_536;

/// The most peers each per-address budget tracks.
const PEERS: usize = 16_384;

/// The limits of `[orders]` a stranger meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// `POST /pay/unifiedOrder` per address (IPv4, IPv6 /64) per minute.
    pub unified_orders_per_peer_per_minute: u32,
    /// `GET /pay/openid` per address per minute.
    pub openid_per_peer_per_minute: u32,
    /// Calls to WeChat a second made for strangers (prepay + login), all together.
    pub wechat_calls_per_second: u32,
    /// Failed prepays per order per [`FAILED_PREPAY_WINDOW`].
    pub max_failed_prepays: u32,
}

/// A token bucket for everyone together: `per_second` a second, in bursts
/// of up to `per_second`.
struct Bucket {
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(per_second: u32) -> Bucket {
        let per_second = f64::from(per_second.max(1));
        Bucket { per_second, state: Mutex::new((per_second, Instant::now())) }
    }

    fn take(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock().expect("bucket lock");
        let tokens = (state.0 + now.duration_since(state.1).as_secs_f64() * self.per_second).min(self.per_second);
        *state = (tokens, now);
        if tokens < 1.0 {
            return false;
        }
        state.0 -= 1.0;
        true
    }
}

/// One limit's refusals: counted, and logged once a minute while they last.
struct Refusals {
    reason: &'static str,
    summary: Summary,
}

impl Refusals {
    fn new(reason: &'static str) -> Refusals {
        Refusals { reason, summary: Summary::new(Duration::from_secs(60)) }
    }

    fn refused(&self, metrics: &Metrics, detail: &str) {
        metrics.refused(self.reason);
        if let Some(count) = self.summary.event() {
            tracing::warn!(limit = self.reason, refused = count, "{detail}");
        }
    }
}

/// The limits and what they have counted.
pub struct Guard {
    limits: GuardLimits,
    orders_per_peer: PeerBudget,
    openid_per_peer: PeerBudget,
    wechat: Bucket,
    /// out_trade_no → (window start, failures in it).
    failures: Mutex<HashMap<String, (Instant, u32)>>,
    order_refusals: Refusals,
    openid_refusals: Refusals,
    wechat_refusals: Refusals,
    failure_refusals: Refusals,
    /// Orders WeChat refused and that were not kept (a stranger can cause
    /// one per request: logged once a minute, with the count).
    not_kept: Refusals,
}

/// The endpoints a per-address budget applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /pay/unifiedOrder`.
    UnifiedOrder,
    /// `GET /pay/openid`.
    Openid,
}

impl Guard {
    /// Fresh budgets for `limits`.
    pub fn new(limits: GuardLimits) -> Guard {
        Guard {
            limits,
            orders_per_peer: PeerBudget::new(limits.unified_orders_per_peer_per_minute, PEERS),
            openid_per_peer: PeerBudget::new(limits.openid_per_peer_per_minute, PEERS),
            wechat: Bucket::new(limits.wechat_calls_per_second),
            failures: Mutex::new(HashMap::new()),
            order_refusals: Refusals::new("unified_order_per_peer"),
            openid_refusals: Refusals::new("openid_per_peer"),
            wechat_refusals: Refusals::new("wechat_calls_per_second"),
            failure_refusals: Refusals::new("failed_prepays_per_order"),
            not_kept: Refusals::new("order_refused_by_wechat"),
        }
    }

    /// Takes one request of `route` from `ip`'s budget; 429 when spent.
    pub fn admit(&self, route: Route, ip: IpAddr, metrics: &Metrics) -> Result<(), PayError> {
        let (budget, refusals, per_minute, key) = match route {
            Route::UnifiedOrder => (
                &self.orders_per_peer,
                &self.order_refusals,
                self.limits.unified_orders_per_peer_per_minute,
                "orders.unified_orders_per_peer_per_minute",
            ),
            Route::Openid => (
                &self.openid_per_peer,
                &self.openid_refusals,
                self.limits.openid_per_peer_per_minute,
                "orders.openid_per_peer_per_minute",
            ),
        };
        if budget.allow(ip) {
            return Ok(());
        }
        refusals.refused(metrics, "requests refused: an address is over its per-minute budget");
        Err(PayError::TooMany {
            message: format!("too many requests from this address (at most {per_minute} a minute, {key}); retry later"),
            retry_after: 60 / u64::from(per_minute.max(1)).clamp(1, 60),
        })
    }

    /// Takes one call to WeChat from the global budget; 503 when spent.
    pub fn wechat_call(&self, metrics: &Metrics) -> Result<(), PayError> {
        if self.wechat.take() {
            return Ok(());
        }
        self.wechat_refusals.refused(metrics, "calls to WeChat refused: over orders.wechat_calls_per_second");
        Err(PayError::Busy {
            message: format!(
                "PayBridge is making as many calls to WeChat as it may ({} a second, \
                 orders.wechat_calls_per_second); retry in a second",
                self.limits.wechat_calls_per_second
            ),
            retry_after: 1,
        })
    }

    /// Refuses another prepay for an order that failed
    /// [`GuardLimits::max_failed_prepays`] times in the window (429).
    pub fn may_prepay(&self, out_trade_no: &str, metrics: &Metrics) -> Result<(), PayError> {
        let failures = self.failures.lock().expect("failures lock");
        let Some((since, count)) = failures.get(out_trade_no) else { return Ok(()) };
        let left = FAILED_PREPAY_WINDOW.saturating_sub(since.elapsed());
        if *count < self.limits.max_failed_prepays || left.is_zero() {
            return Ok(());
        }
        drop(failures);
        self.failure_refusals
            .refused(metrics, "prepays refused: an order failed too often (orders.max_failed_prepays)");
        Err(PayError::TooMany {
            message: format!(
                "WeChat refused this order {} times in {} minutes (orders.max_failed_prepays); check the openid \
                 and the order, then retry later",
                self.limits.max_failed_prepays,
                FAILED_PREPAY_WINDOW.as_secs() / 60
            ),
            retry_after: left.as_secs().max(1),
        })
    }

    /// Counts a failed prepay of an order.
    pub fn prepay_failed(&self, out_trade_no: &str) {
        let mut failures = self.failures.lock().expect("failures lock");
        let now = Instant::now();
        if failures.len() >= FAILURE_TABLE && !failures.contains_key(out_trade_no) {
            failures.retain(|_, (since, _)| now.duration_since(*since) < FAILED_PREPAY_WINDOW);
            if failures.len() >= FAILURE_TABLE {
                // Still full of live windows: forget the oldest.
                if let Some(oldest) = failures.iter().min_by_key(|(_, (since, _))| *since).map(|(k, _)| k.clone()) {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(out_trade_no.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILED_PREPAY_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Counts and logs an order WeChat refused before any prepay, which
    /// was not kept.
    pub fn not_kept(&self, out_trade_no: &str, error: &crate::wechat::client::WechatError, metrics: &Metrics) {
        metrics.refused(self.not_kept.reason);
        if let Some(count) = self.not_kept.summary.event() {
            tracing::info!(
                refused = count, last = out_trade_no, error = %error,
                "unified orders refused by WeChat before any prepay: not kept"
            );
        }
    }

    /// A prepay succeeded: the order's failures are forgiven.
    pub fn prepay_succeeded(&self, out_trade_no: &str) {
        self.failures.lock().expect("failures lock").remove(out_trade_no);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(per_minute: u32, per_second: u32, failures: u32) -> Guard {
        Guard::new(GuardLimits {
            unified_orders_per_peer_per_minute: per_minute,
            openid_per_peer_per_minute: per_minute,
            wechat_calls_per_second: per_second,
            max_failed_prepays: failures,
        })
    }

    #[test]
    fn each_limit_refuses_past_its_budget_and_counts() {
        let metrics = Metrics::default();
        let g = guard(3, 2, 2);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            g.admit(Route::UnifiedOrder, a, &metrics).unwrap();
        }
        let e = g.admit(Route::UnifiedOrder, a, &metrics).unwrap_err();
        assert!(matches!(&e, PayError::TooMany { retry_after: 20, .. }), "{e:?}");
        g.admit(Route::UnifiedOrder, b, &metrics).unwrap();
        g.admit(Route::Openid, a, &metrics).unwrap();
        assert_eq!(metrics.refused_count("unified_order_per_peer"), 1);

        g.wechat_call(&metrics).unwrap();
        g.wechat_call(&metrics).unwrap();
        assert!(matches!(g.wechat_call(&metrics), Err(PayError::Busy { retry_after: 1, .. })));
        assert_eq!(metrics.refused_count("wechat_calls_per_second"), 1);

        g.may_prepay("ORDER1", &metrics).unwrap();
        g.prepay_failed("ORDER1");
        g.may_prepay("ORDER1", &metrics).unwrap();
        g.prepay_failed("ORDER1");
        let e = g.may_prepay("ORDER1", &metrics).unwrap_err();
        assert!(e.to_string().contains("2 times in 10 minutes"), "{e}");
        g.may_prepay("ORDER2", &metrics).unwrap();
        g.prepay_succeeded("ORDER1");
        g.may_prepay("ORDER1", &metrics).unwrap();
        assert_eq!(metrics.refused_count("failed_prepays_per_order"), 1);
    }

    #[test]
    fn the_failure_table_stays_bounded() {
        let g = guard(1, 1, 1);
        for i in 0..FAILURE_TABLE + 10 {
            g.prepay_failed(&format!("O{i}"));
        }
        assert_eq!(g.failures.lock().unwrap().len(), FAILURE_TABLE);
    }
}
