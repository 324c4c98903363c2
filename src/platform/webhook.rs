//! Result webhooks: the outbox's deliveries POSTed to each platform's
//! `webhook_url`, at least once, on WeChat Pay's own retry schedule.
//!
//! One worker per platform drains that platform's queue in due order, so a
//! slow or dead receiver delays only its own events, never another
//! platform's, and never the payment path (which only writes the outbox).
//! Only a 2xx reply counts as delivered. Retries send the same event (same
//! `id`, same body); the signature covers a fresh timestamp.
//!
//! Headers: `PayBridge-Event-Id`, `PayBridge-Timestamp` (unix seconds) and
//! `PayBridge-Signature`: hex HMAC-SHA256, under the platform key, of the
//! timestamp, `\n`, and the body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use super::auth::hmac_hex;
use crate::clock::rfc3339;
use crate::metrics::Metrics;
use crate::pay::Payments;
use crate::secret::Secret;
use crate::store::{Delivery, DeliveryState, Store};

/// The waits after each failed attempt: WeChat Pay's notify schedule. After
/// the last one fails the delivery is `FAILED` (an admin may re-send it).
pub const RETRY_SCHEDULE_SECS: [i64; 15] =
    [15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600];

/// How long one attempt may take, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a worker looks at its queue without being woken.
const POLL: Duration = Duration::from_secs(1);

/// Deliveries one worker takes per look.
const BATCH: usize = 32;

/// When the attempt after `attempts` failed ones is due, or `None` when
/// the schedule is used up.
pub fn next_attempt(attempts: u32, failed_at: i64) -> Option<i64> {
    let wait = RETRY_SCHEDULE_SECS.get(usize::try_from(attempts).ok()?.checked_sub(1)?)?;
    Some(failed_at + wait * 1000)
}

/// The event's JSON, the same bytes on every attempt.
pub fn event_body(delivery: &Delivery, sandbox: bool) -> Vec<u8> {
    let status = match (delivery.kind, &delivery.refund) {
        (crate::store::EventKind::Paid, _) => "PAID",
        (crate::store::EventKind::Closed, _) => "CLOSED",
        (_, Some(r)) if r.refunded_total >= delivery.total_fee => "REFUNDED",
        (_, Some(r)) if r.refunded_total > 0 => "PARTIALLY_REFUNDED",
        // A failed refund of a paid order leaves it paid.
        (_, _) => "PAID",
    };
    let mut body = json!({
        "id": event_id(delivery.id),
        "type": delivery.kind.as_str(),
        "createdAt": rfc3339(delivery.created_at),
        "platform": delivery.platform,
        "sandbox": sandbox,
        "order": {
            "outTradeNo": delivery.out_trade_no,
            "orderId": delivery.order_id,
            "amount": delivery.total_fee,
            "status": status,
            "transactionId": delivery.transaction_id,
            "timeEnd": delivery.time_end,
        },
    });
    if let Some(r) = &delivery.refund {
        body["order"]["refundedAmount"] = json!(r.refunded_total);
        body["refund"] = json!({
            "outRefundNo": r.out_refund_no, "refundId": r.refund_id, "amount": r.amount, "status": r.status,
        });
    }
    serde_json::to_vec(&body).expect("plain data")
}

/// The id a receiver de-duplicates on.
pub fn event_id(id: u64) -> String {
    format!("evt_{id:016x}")
}

/// What a webhook's signature covers: the timestamp, `\n`, the body.
fn signed_message(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{timestamp}\n").into_bytes();
    message.extend_from_slice(body);
    message
}

/// The `PayBridge-Signature` of a webhook.
pub fn signature(key: &Secret, timestamp: i64, body: &[u8]) -> String {
    hmac_hex(key, &signed_message(timestamp, body))
}

/// A's side (the sandbox's demo platform): whether a webhook's headers
/// carry a fresh timestamp and the key's signature of it and the body.
pub fn verify(key: &Secret, timestamp: &str, signature: &str, body: &[u8], now_secs: i64) -> Result<(), &'static str> {
    let timestamp: i64 = timestamp.parse().map_err(|_| "no timestamp")?;
    if (timestamp - now_secs).abs() > super::auth::MAX_SKEW_SECS {
        return Err("the timestamp is not fresh");
    }
    match super::auth::hmac_matches(std::iter::once(key), &signed_message(timestamp, body), signature) {
        true => Ok(()),
        false => Err("the signature does not match"),
    }
}

pub use crate::clock::Clock;

/// The delivery service: starts a worker per configured platform.
pub struct Webhooks {
    store: Store,
    pay: Arc<Payments>,
    http: reqwest::Client,
    clock: Arc<Clock>,
    metrics: Arc<Metrics>,
    /// Woken when a delivery was re-sent by hand.
    resent: Notify,
    workers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl Webhooks {
    /// The service; nothing runs before [`Webhooks::run`].
    pub fn new(store: Store, pay: Arc<Payments>, metrics: Arc<Metrics>) -> Arc<Webhooks> {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("PayBridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with these settings builds");
        Arc::new(Webhooks {
            store,
            pay,
            http,
            clock: Arc::new(Clock::default()),
            metrics,
            resent: Notify::new(),
            workers: Mutex::new(HashMap::new()),
        })
    }

    /// The clock the schedule runs on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The same clock, shared (the order lifecycle runs on it too).
    pub fn shared_clock(&self) -> Arc<Clock> {
        self.clock.clone()
    }

    /// Keeps one worker per configured platform (platforms added by a
    /// reload get theirs within a second). Runs until aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            let platforms = self.pay.platforms();
            {
                let mut workers = self.workers.lock().expect("workers lock");
                for platform in platforms.all() {
                    let running = workers.get(&platform.id).is_some_and(|w| !w.is_finished());
                    if !running {
                        let worker = tokio::spawn(self.clone().work(platform.id.clone()));
                        workers.insert(platform.id.clone(), worker);
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the workers (shutdown).
    pub fn stop(&self) {
        for (_, worker) in self.workers.lock().expect("workers lock").drain() {
            worker.abort();
        }
    }

    /// Makes a delivery due now (an admin's re-send); its schedule goes on
    /// from where it was, so a re-send of a failed one is one more attempt.
    pub async fn resend(&self, id: u64) -> Result<Option<Delivery>, crate::store::StoreError> {
        let now = self.clock.now_ms();
        let resent = self
            .store
            .update_delivery(id, move |d| {
                if d.state != DeliveryState::Delivered {
                    d.state = DeliveryState::Pending;
                    d.next_at = Some(now);
                }
            })
            .await?;
        self.resent.notify_waiters();
        Ok(resent)
    }

    /// One platform's queue, forever.
    async fn work(self: Arc<Self>, platform: String) {
        let mut failing = false;
        // A platform removed by a reload keeps its events, pending, until it returns.
        while self.pay.platforms().get(&platform).is_some() {
            let now = self.clock.now_ms();
            let (store, id) = (self.store.clone(), platform.clone());
            let wake_at = match store.read(move |s| s.due_deliveries(&id, now, BATCH)).await {
                Ok((due, next)) => {
                    failing = false;
                    let full = due.len() == BATCH;
                    for delivery in due {
                        self.attempt(delivery).await;
                    }
                    if full {
                        continue;
                    }
                    next
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, platform, "cannot read the webhook outbox; will retry");
                    }
                    failing = true;
                    None
                }
            };
            let wait =
                wake_at.map_or(POLL, |at| Duration::from_millis((at - self.clock.now_ms()).clamp(0, 1000) as u64));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.clock.moved() => {}
                _ = self.resent.notified() => {}
            }
        }
    }

    /// One attempt, and its outcome written back.
    async fn attempt(&self, delivery: Delivery) {
        let Some(platform) = self.pay.platforms().get(&delivery.platform).cloned() else { return };
        let body = event_body(&delivery, self.pay.is_sandbox());
        // The real time, not the schedule's (which tests move): A checks it is fresh.
        let timestamp = crate::clock::now_ms() / 1000;
        let sent = self
            .http
            .post(platform.webhook_url.clone())
            .header("content-type", "application/json")
            .header("paybridge-event-id", event_id(delivery.id))
            .header("paybridge-timestamp", timestamp.to_string())
            .header("paybridge-signature", signature(&platform.key, timestamp, &body))
            .body(body)
            .send()
            .await;
        let (delivered, result) = match sent {
            Ok(reply) if reply.status().is_success() => (true, format!("HTTP {}", reply.status().as_u16())),
            Ok(reply) => (false, format!("HTTP {}", reply.status().as_u16())),
            Err(e) if e.is_timeout() => (false, "timed out".to_owned()),
            Err(e) if e.is_connect() => (false, "could not connect".to_owned()),
            Err(_) => (false, "the connection failed".to_owned()),
        };
        self.metrics.webhook(if delivered { "delivered" } else { "failed" });
        let now = self.clock.now_ms();
        let outcome = result.clone();
        let stored = self
            .store
            .update_delivery(delivery.id, move |d| {
                d.attempts += 1;
                d.last_attempt_at = Some(now);
                d.last_result = Some(crate::text::clip(&outcome, 200).into_owned());
                if delivered {
                    d.state = DeliveryState::Delivered;
                    d.next_at = None;
                } else {
                    d.next_at = next_attempt(d.attempts, now);
                    if d.next_at.is_none() {
                        d.state = DeliveryState::Failed;
                    }
                }
            })
            .await;
        match stored {
            Ok(Some(d)) if d.state == DeliveryState::Failed => tracing::warn!(
                platform = %d.platform, event = %event_id(d.id), out_trade_no = %d.out_trade_no, attempts = d.attempts,
                result, "webhook failed on every scheduled attempt; re-send it from the admin page"
            ),
            Ok(Some(d)) if !delivered && d.attempts == 1 => tracing::warn!(
                platform = %d.platform, event = %event_id(d.id), result, "webhook not delivered; retrying on schedule"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, event = %event_id(delivery.id), "cannot record a webhook attempt"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechats_schedule_then_failed() {
        let mut at = 0;
        let mut waits = Vec::new();
        for attempts in 1.. {
            match next_attempt(attempts, at) {
                Some(next) => {
                    waits.push((next - at) / 1000);
                    at = next;
                }
                None => {
                    assert_eq!(attempts, 16, "one first attempt and fifteen retries");
                    break;
                }
            }
        }
        assert_eq!(waits, RETRY_SCHEDULE_SECS);
        assert_eq!(next_attempt(0, 5), None, "no attempt failed yet: nothing to schedule");
    }

    #[test]
    fn signature_covers_timestamp_and_body() {
        let key = Secret::new("k".repeat(40));
        let s = signature(&key, 1_764_226_800, b"{}");
        assert_eq!(s, hmac_hex(&key, b"1764226800\n{}"));
        assert_ne!(s, signature(&key, 1_764_226_801, b"{}"));
        assert_eq!(verify(&key, "1764226800", &s, b"{}", 1_764_226_900), Ok(()));
        assert!(verify(&key, "1764226800", &s, b"{ }", 1_764_226_900).is_err(), "another body");
        assert!(verify(&key, "1764226800", &s, b"{}", 1_764_227_101).is_err(), "stale");
        assert!(verify(&Secret::new("x".repeat(40)), "1764226800", &s, b"{}", 1_764_226_900).is_err());
    }
}
