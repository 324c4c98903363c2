//! The simulator's knobs and control API (`/sandbox/...`, not WeChat's):
//! faults for the next calls, the user who pays (v2 and v3 orders alike,
//! with the signed notify delivered on WeChat's schedule), refunds ended
//! with their notifies, and reports of what the simulator knows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{notifier, parse_beijing, Delivery, Simulator, TradeState};
use crate::wechat::sign::{self, SignType};
use crate::wechat::{beijing_compact, nonce_str, xml};

/// A fault to inject into the next pay API call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer normally, but only after this many milliseconds.
    Delay {
        /// The delay.
        ms: u64,
    },
    /// Answer with this HTTP status and an HTML page (as a broken proxy would).
    Http {
        /// The status.
        status: u16,
    },
    /// Answer `return_code=FAIL` with this message.
    ReturnFail {
        /// `return_msg`
        message: String,
    },
    /// Answer `result_code=FAIL` with this error (e.g. `SYSTEMERROR`).
    Business {
        /// `err_code`
        code: String,
        /// `err_code_des`
        description: String,
    },
    /// Answer normally but with a wrong signature (v3: signed with a wrong key).
    BadSign,
    /// v3: sign under a serial the merchant has never heard of.
    UnknownSerial,
    /// v3: sign with a timestamp ten minutes old.
    StaleTimestamp,
    /// v3: WeChat's deliberate signature probe (`WECHATPAY/SIGNTEST/…`).
    Probe,
}

impl Fault {
    /// The v3 signing fault this stands for, if any.
    pub fn v3_sign_fault(&self) -> Option<super::super::v3::SignFault> {
        use super::super::v3::SignFault;
        match self {
            Fault::BadSign => Some(SignFault::WrongKey),
            Fault::UnknownSerial => Some(SignFault::UnknownSerial),
            Fault::StaleTimestamp => Some(SignFault::StaleTimestamp),
            Fault::Probe => Some(SignFault::Probe),
            _ => None,
        }
    }
}

/// What the control API reports about an order.
#[derive(Debug, Clone, Serialize)]
pub struct OrderReport {
    /// `trade_state`
    pub trade_state: TradeState,
    /// The amount in fen.
    pub total_fee: u64,
    /// The prepay id issued.
    pub prepay_id: String,
    /// The transaction id, once paid.
    pub transaction_id: Option<String>,
    /// The `time_expire` the order was placed with, as sent.
    pub time_expire: Option<String>,
    /// Notify delivery.
    pub notify: Delivery,
}

/// A request to the control API to pay an order.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PayRequest {
    /// Which order.
    pub out_trade_no: String,
    /// Fields to add to (or override in) the notify: coupons, `version`, anything.
    #[serde(default)]
    pub extra_fields: BTreeMap<String, String>,
    /// Concurrent copies of the first delivery (default 1).
    #[serde(default)]
    pub copies: Option<usize>,
    /// The notify is lost: WeChat never delivers it (PayBridge must query).
    #[serde(default)]
    pub lose_notify: bool,
    /// v3: a signing fault for the notify's first attempt (`bad_sign`,
    /// `unknown_serial`, `stale_timestamp`, `probe`); the retries are
    /// signed correctly, as WeChat resends after a refused probe.
    #[serde(default)]
    pub fault: Option<Fault>,
}

impl Simulator {
    /// Queues faults for the next pay API calls, one per call.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.faults.lock().expect("faults lock").extend(faults);
    }

    /// The next queued fault, if any.
    pub fn next_fault(&self) -> Option<Fault> {
        self.inner.faults.lock().expect("faults lock").pop_front()
    }

    /// Notes an order query (either version).
    pub fn count_query(&self) {
        self.inner.queries.lock().expect("queries lock").push(std::time::Instant::now());
    }

    /// Notes a call to one of WeChat's APIs: `jscode2session`,
    /// `pay/orderquery`, `secapi/pay/refund`, or v3's method and first four
    /// path segments (`GET /v3/pay/transactions/out-trade-no`).
    pub fn count_call(&self, api: &str) {
        // Bounded: paths are whatever a client sends; past 64 names, "other".
        let mut calls = self.inner.calls.lock().expect("calls lock");
        let name = match calls.contains_key(api) || calls.len() < 64 {
            true => crate::text::clip(api, 80).into_owned(),
            false => "other".to_owned(),
        };
        *calls.entry(name).or_default() += 1;
    }

    /// How many calls each API got, by [`Simulator::count_call`]'s names.
    pub fn calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.inner.calls.lock().expect("calls lock").clone()
    }

    /// When each order query arrived, oldest first.
    pub fn queries(&self) -> Vec<std::time::Instant> {
        self.inner.queries.lock().expect("queries lock").clone()
    }

    /// Control API: the user pays. Marks the order SUCCESS and starts
    /// delivering the signed notify. Returns the transaction id.
    pub fn pay(&self, request: &PayRequest) -> Result<String, String> {
        let is_v2 = self.inner.orders.lock().expect("orders lock").contains_key(&request.out_trade_no);
        if !is_v2 && self.inner.v3.has_order(&request.out_trade_no) {
            return self.pay_v3(request);
        }
        let cfg = &self.inner.config;
        let (notify, url, delivery) = {
            let mut orders = self.inner.orders.lock().expect("orders lock");
            let order = orders
                .get_mut(&request.out_trade_no)
                .ok_or_else(|| format!("no unified order {:?} in the simulator", request.out_trade_no))?;
            match order.state {
                TradeState::NotPay => {}
                TradeState::Success => return Err("the order is already paid".into()),
                TradeState::Closed => return Err("the order is closed and cannot be paid".into()),
            }
            let now = time::OffsetDateTime::now_utc();
            if parse_beijing(order.field("time_expire")).is_some_and(|at| at < now) {
                return Err("the order expired at WeChat (time_expire): it can no longer be paid".into());
            }
            let transaction_id = format!("4200000{:021}", rand::rng().random_range(0..10u128.pow(21)));
            order.state = TradeState::Success;
            order.transaction_id = Some(transaction_id.clone());
            order.time_end = Some(beijing_compact(now));

            let mut notify = sign::fields([
                ("return_code", "SUCCESS"),
                ("return_msg", "OK"),
                ("appid", cfg.appid.as_str()),
                ("mch_id", cfg.mch_id.as_str()),
                ("result_code", "SUCCESS"),
                ("openid", order.field("openid")),
                ("is_subscribe", "N"),
                ("trade_type", "JSAPI"),
                ("bank_type", "OTHERS"),
                ("total_fee", order.field("total_fee")),
                ("fee_type", "CNY"),
                ("cash_fee", order.field("total_fee")),
                ("transaction_id", transaction_id.as_str()),
                ("out_trade_no", request.out_trade_no.as_str()),
                ("attach", order.field("attach")),
                ("time_end", order.time_end.as_deref().unwrap_or_default()),
            ]);
            notify.insert("nonce_str".into(), nonce_str());
            if cfg.sign_type_in_notify && order.sign_type != SignType::Md5 {
                notify.insert("sign_type".into(), order.sign_type.as_str().into());
            }
            notify.extend(request.extra_fields.clone());
            notify.retain(|_, v| !v.is_empty());
            let signature = sign::sign(&notify, &cfg.mch_key, order.sign_type);
            notify.insert("sign".into(), signature);
            (notify, order.field("notify_url").to_owned(), order.delivery.clone())
        };
        tracing::info!(target: "sandbox", out_trade_no = %request.out_trade_no, "SANDBOX simulator: order paid, delivering notify");
        let outgoing = notifier::Outgoing { headers: Vec::new(), body: xml::write(&notify).into_bytes(), v3: false };
        if request.lose_notify {
            tracing::info!(target: "sandbox", out_trade_no = %request.out_trade_no, "SANDBOX simulator: notify lost, as asked");
            return Ok(notify["transaction_id"].clone());
        }
        tokio::spawn(notifier::deliver(
            self.inner.http.clone(),
            url,
            move || outgoing.clone(),
            request.copies.unwrap_or(1),
            cfg.notify_schedule.clone(),
            delivery,
        ));
        Ok(notify["transaction_id"].clone())
    }

    /// Ends the v3 refunds accepted since the last call and delivers their
    /// notifies (unless `lose` is set), as WeChat does after a refund.
    pub fn end_new_refunds(&self) {
        let v3 = self.inner.v3.clone();
        for no in v3.take_new_refunds() {
            let Some((url, resource, v2)) = v3.end_refund_of(&no) else { continue };
            if self.inner.lose_refund_notifies.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            let event_id = format!("EV-RF-{}", &nonce_str()[..16]);
            let (v3, sim) = (v3.clone(), self.clone());
            let make = move || match v2 {
                true => notifier::Outgoing { headers: Vec::new(), body: sim.refund_notify_v2(&resource), v3: false },
                false => {
                    let n = v3.refund_notify(&resource, &event_id, crate::clock::now_ms() / 1000).expect("encrypts");
                    notifier::Outgoing { headers: n.headers, body: n.body, v3: true }
                }
            };
            let delivery: Arc<Mutex<Delivery>> = Arc::default();
            self.inner.refund_deliveries.lock().expect("deliveries lock").insert(no, delivery.clone());
            tokio::spawn(notifier::deliver(
                self.inner.http.clone(),
                url,
                make,
                1,
                self.inner.config.notify_schedule.clone(),
                delivery,
            ));
        }
    }

    /// Whether refund notifies are lost from now on (PayBridge must query).
    pub fn lose_refund_notifies(&self, lose: bool) {
        self.inner.lose_refund_notifies.store(lose, std::sync::atomic::Ordering::Relaxed);
    }

    /// The delivery of a refund's notify.
    pub fn refund_delivery(&self, out_refund_no: &str) -> Option<Delivery> {
        let deliveries = self.inner.refund_deliveries.lock().expect("deliveries lock");
        deliveries.get(out_refund_no).map(|d| d.lock().expect("delivery lock").clone())
    }

    /// [`Simulator::pay`] for an order placed through API v3.
    fn pay_v3(&self, request: &PayRequest) -> Result<String, String> {
        let v3 = self.inner.v3.clone();
        let no = request.out_trade_no.clone();
        let now = || crate::clock::now_ms() / 1000;
        let first = v3.pay(&no, now())?;
        let event_id = serde_json::from_slice::<serde_json::Value>(&first.body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let (url, _, transaction_id) = v3.order_facts(&no).ok_or("the order vanished")?;
        let transaction = v3.paid_transaction(&no).ok_or("the order is not paid")?;
        if let Some(fault) = request.fault.as_ref().and_then(Fault::v3_sign_fault) {
            v3.inject([fault]);
        }
        if request.lose_notify {
            return Ok(transaction_id.unwrap_or_default());
        }
        let delivery: Arc<Mutex<Delivery>> = Arc::default();
        self.inner.v3_deliveries.lock().expect("deliveries lock").insert(no.clone(), delivery.clone());
        tracing::info!(target: "sandbox", out_trade_no = %no, "SANDBOX simulator: order paid (API v3), delivering notify");
        let make = move || {
            let notify = v3.notify(&transaction, &event_id, now()).expect("a paid order's notify encrypts");
            notifier::Outgoing { headers: notify.headers, body: notify.body, v3: true }
        };
        tokio::spawn(notifier::deliver(
            self.inner.http.clone(),
            url,
            make,
            request.copies.unwrap_or(1),
            self.inner.config.notify_schedule.clone(),
            delivery,
        ));
        Ok(transaction_id.unwrap_or_default())
    }

    /// Control API: what the simulator knows of an order.
    pub fn report(&self, out_trade_no: &str) -> Option<OrderReport> {
        if let Some((_, total_fee, transaction_id)) = self.inner.v3.order_facts(out_trade_no) {
            let delivery = self.inner.v3_deliveries.lock().expect("deliveries lock").get(out_trade_no).cloned();
            return Some(OrderReport {
                trade_state: match self.inner.v3.state(out_trade_no) {
                    Some("SUCCESS") => TradeState::Success,
                    Some("CLOSED") => TradeState::Closed,
                    _ => TradeState::NotPay,
                },
                total_fee,
                prepay_id: String::new(),
                transaction_id,
                time_expire: self.inner.v3.time_expire(out_trade_no),
                notify: delivery.map(|d| d.lock().expect("delivery lock").clone()).unwrap_or_default(),
            });
        }
        let orders = self.inner.orders.lock().expect("orders lock");
        orders.get(out_trade_no).map(|o| OrderReport {
            trade_state: o.state,
            total_fee: o.field("total_fee").parse().unwrap_or(0),
            prepay_id: o.prepay_id.clone(),
            transaction_id: o.transaction_id.clone(),
            time_expire: o.params.get("time_expire").cloned(),
            notify: o.delivery.lock().expect("delivery lock").clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::SimulatorConfig;
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn calls_are_counted_by_api_and_the_names_are_bounded() {
        let sim = Simulator::new(SimulatorConfig::new("wx1", &Secret::new("s"), "1", &Secret::new("k")));
        sim.count_call("jscode2session");
        sim.count_call("jscode2session");
        for i in 0..100 {
            sim.count_call(&format!("GET /v3/made-up/{i}"));
        }
        let calls = sim.calls();
        assert_eq!(calls["jscode2session"], 2);
        assert_eq!(calls.len(), 65, "64 names, then one for all the others");
        assert_eq!(calls["other"], 37);
        sim.count_call("jscode2session");
        assert_eq!(sim.calls()["jscode2session"], 3, "a known name still counts");
    }
}
