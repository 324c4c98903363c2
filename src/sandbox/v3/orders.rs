//! The v3 simulator's orders, as WeChat keeps them: JSAPI orders
//! (idempotent, for openids a login issued), queries by `out_trade_no` and
//! by transaction id, close, the user paying, the `TRANSACTION.SUCCESS`
//! notify (encrypted with the APIv3 key, signed as WeChat), and a day's
//! payments and refunds as bill rows.

use serde_json::{json, Value};

use super::{error, KeyMode, SimulatorV3, V3Notify};
use crate::wechat::bill::{BillPayment, BillRefund};

#[derive(Debug, Clone)]
pub(super) struct V3Order {
    /// The order as first requested, to compare a re-submission with.
    pub(super) request: Value,
    pub(super) prepay_id: String,
    pub(super) state: &'static str,
    pub(super) transaction_id: Option<String>,
    pub(super) success_time: Option<String>,
}

impl SimulatorV3 {
    /// The trade state of an order (`NOTPAY`, `CLOSED`, `SUCCESS`).
    pub fn state(&self, out_trade_no: &str) -> Option<&'static str> {
        self.inner.orders.lock().expect("orders lock").get(out_trade_no).map(|o| o.state)
    }

    /// The payments and refunds of a Beijing day (`yyyy-MM-dd`), as bill rows.
    pub(in crate::sandbox) fn bill_rows(&self, day: &str) -> (Vec<BillPayment>, Vec<BillRefund>) {
        use super::super::bills::{bill_time_v3, fee};
        let orders = self.inner.orders.lock().expect("orders lock");
        let payments = orders
            .iter()
            .filter(|(_, o)| o.state == "SUCCESS" && o.success_time.as_deref().is_some_and(|t| t.starts_with(day)))
            .filter_map(|(no, o)| {
                let r = &o.request;
                let total_fee = r["amount"]["total"].as_u64()?;
                Some(BillPayment {
                    time: bill_time_v3(o.success_time.as_deref()?)?,
                    appid: r["appid"].as_str()?.to_owned(),
                    mch_id: self.inner.merchant.mchid.clone(),
                    transaction_id: o.transaction_id.clone()?,
                    out_trade_no: no.clone(),
                    openid: r["payer"]["openid"].as_str()?.to_owned(),
                    total_fee,
                    settlement_fee: total_fee,
                    fee: fee(total_fee),
                    body: r["description"].as_str().unwrap_or("").to_owned(),
                })
            })
            .collect();
        let refunds = self.inner.refunds.lock().expect("refunds lock");
        let refunds = refunds
            .iter()
            .filter(|(_, r)| r.create_time.starts_with(day))
            .filter_map(|(no, r)| {
                let out_trade_no = r.request["out_trade_no"].as_str()?.to_owned();
                Some(BillRefund {
                    time: bill_time_v3(&r.create_time)?,
                    transaction_id: orders
                        .get(&out_trade_no)
                        .and_then(|o| o.transaction_id.clone())
                        .unwrap_or_default(),
                    out_trade_no,
                    refund_id: r.refund_id.clone(),
                    out_refund_no: no.clone(),
                    amount: r.request["amount"]["refund"].as_u64()?,
                    status: r.status.to_owned(),
                    total_fee: r.request["amount"]["total"].as_u64()?,
                })
            })
            .collect();
        (payments, refunds)
    }

    pub(super) fn jsapi(&self, body: &[u8]) -> (u16, Option<Value>) {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return (400, Some(error("PARAM_ERROR", "输入源“/body”映射到值字段“请求体”字符串规则校验失败")));
        };
        let merchant = &self.inner.merchant;
        let text = |pointer: &str| request.pointer(pointer).and_then(Value::as_str).unwrap_or("");
        if text("/mchid") != merchant.mchid {
            return (400, Some(error("PARAM_ERROR", "http header中的mchid与post payload中的mchid不匹配")));
        }
        if text("/appid") != merchant.appid {
            return (400, Some(error("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")));
        }
        if text("/payer/openid").is_empty() {
            return (400, Some(error("PARAM_ERROR", "JSAPI支付必须传openid")));
        }
        let openids = self.inner.openids.lock().expect("openids lock");
        if !openids.contains("*") && !openids.contains(text("/payer/openid")) {
            return (400, Some(error("PARAM_ERROR", "appid和openid不匹配")));
        }
        drop(openids);
        if request.pointer("/amount/total").and_then(Value::as_u64).unwrap_or(0) == 0 {
            return (400, Some(error("PARAM_ERROR", "参数超出取值范围")));
        }
        if text("/description").is_empty() || text("/notify_url").is_empty() || text("/out_trade_no").is_empty() {
            return (400, Some(error("PARAM_ERROR", "参数非法")));
        }
        if request.get("time_expire").is_some() {
            let rfc3339 = &time::format_description::well_known::Rfc3339;
            match time::OffsetDateTime::parse(text("/time_expire"), rfc3339) {
                Err(_) => return (400, Some(error("PARAM_ERROR", "time_expire格式错误，应为RFC3339"))),
                Ok(at) if at < time::OffsetDateTime::now_utc() + time::Duration::minutes(1) => {
                    return (400, Some(error("PARAM_ERROR", "time_expire时间过短")))
                }
                Ok(_) => {}
            }
        }
        let no = text("/out_trade_no").to_owned();
        let mut orders = self.inner.orders.lock().expect("orders lock");
        if let Some(existing) = orders.get(&no) {
            return match existing.state {
                "SUCCESS" => (400, Some(error("ORDERPAID", "订单已支付"))),
                "CLOSED" => (400, Some(error("ORDER_CLOSED", "该订单已失效"))),
                _ if existing.request != request => {
                    (400, Some(error("INVALID_REQUEST", "请求重入时,参数与首次请求时不一致")))
                }
                _ => (200, Some(json!({ "prepay_id": existing.prepay_id }))),
            };
        }
        let stamp = crate::wechat::beijing_compact(time::OffsetDateTime::now_utc());
        let prepay_id = format!("wx{stamp}{}", &hex::encode(crate::wechat::nonce_str())[..20]);
        orders.insert(
            no,
            V3Order {
                request,
                prepay_id: prepay_id.clone(),
                state: "NOTPAY",
                transaction_id: None,
                success_time: None,
            },
        );
        (200, Some(json!({ "prepay_id": prepay_id })))
    }

    pub(super) fn query(&self, no: &str, query: &str) -> (u16, Option<Value>) {
        if query != format!("mchid={}", self.inner.merchant.mchid) {
            return (400, Some(error("PARAM_ERROR", "mchid不匹配")));
        }
        let orders = self.inner.orders.lock().expect("orders lock");
        let Some(order) = orders.get(no) else { return (404, Some(error("ORDER_NOT_EXIST", "订单不存在"))) };
        let r = &order.request;
        let mut reply = json!({
            "appid": r["appid"], "mchid": r["mchid"], "out_trade_no": no, "trade_state": order.state,
            "trade_state_desc": match order.state { "SUCCESS" => "支付成功", "CLOSED" => "已关闭", _ => "订单未支付" },
            "amount": { "total": r["amount"]["total"], "currency": "CNY" },
            "payer": { "openid": r["payer"]["openid"] },
        });
        if let (Some(tx), Some(at)) = (&order.transaction_id, &order.success_time) {
            reply["transaction_id"] = json!(tx);
            reply["success_time"] = json!(at);
            reply["trade_type"] = json!("JSAPI");
        }
        (200, Some(reply))
    }

    pub(super) fn close(&self, no: &str, body: &[u8]) -> (u16, Option<Value>) {
        let mchid = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["mchid"].as_str().map(str::to_owned));
        if mchid.as_deref() != Some(self.inner.merchant.mchid.as_str()) {
            return (400, Some(error("PARAM_ERROR", "mchid不匹配")));
        }
        let mut orders = self.inner.orders.lock().expect("orders lock");
        let Some(order) = orders.get_mut(no) else { return (404, Some(error("ORDER_NOT_EXIST", "订单不存在"))) };
        match order.state {
            "SUCCESS" => (400, Some(error("ORDER_PAID", "订单已支付"))),
            "CLOSED" => (400, Some(error("ORDER_CLOSED", "订单已关闭"))),
            _ => {
                order.state = "CLOSED";
                (204, None)
            }
        }
    }
}

impl SimulatorV3 {
    /// The `time_expire` an order was placed with.
    pub fn time_expire(&self, out_trade_no: &str) -> Option<String> {
        let orders = self.inner.orders.lock().expect("orders lock");
        orders.get(out_trade_no).and_then(|o| o.request["time_expire"].as_str().map(str::to_owned))
    }

    /// Whether this side holds the order.
    pub fn has_order(&self, out_trade_no: &str) -> bool {
        self.inner.orders.lock().expect("orders lock").contains_key(out_trade_no)
    }

    /// The order's `notify_url`, amount and transaction id.
    pub fn order_facts(&self, out_trade_no: &str) -> Option<(String, u64, Option<String>)> {
        let orders = self.inner.orders.lock().expect("orders lock");
        orders.get(out_trade_no).map(|o| {
            let url = o.request["notify_url"].as_str().unwrap_or("").to_owned();
            (url, o.request["amount"]["total"].as_u64().unwrap_or(0), o.transaction_id.clone())
        })
    }

    /// The user pays an order at `now_secs`: it becomes `SUCCESS` and this
    /// is the notify WeChat sends (`TRANSACTION.SUCCESS`, resource encrypted
    /// with the APIv3 key, the whole body signed as WeChat).
    pub fn pay(&self, out_trade_no: &str, now_secs: i64) -> Result<V3Notify, String> {
        let transaction = {
            let mut orders = self.inner.orders.lock().expect("orders lock");
            let order = orders.get_mut(out_trade_no).ok_or_else(|| format!("no v3 order {out_trade_no:?}"))?;
            if order.state != "NOTPAY" {
                return Err(format!("the order is {}, it cannot be paid", order.state));
            }
            let expire = order.request["time_expire"].as_str().unwrap_or("");
            let rfc3339 = &time::format_description::well_known::Rfc3339;
            if time::OffsetDateTime::parse(expire, rfc3339).is_ok_and(|at| at.unix_timestamp() < now_secs) {
                return Err("the order expired at WeChat (time_expire): 该订单已失效".into());
            }
            order.state = "SUCCESS";
            let success_time = crate::wechat::beijing_rfc3339(now_secs);
            let transaction_id = format!("4200000{:021}", rand::Rng::random_range(&mut rand::rng(), 0..10u128.pow(21)));
            order.transaction_id = Some(transaction_id);
            order.success_time = Some(success_time);
            self.transaction(order, out_trade_no)
        };
        self.notify(&transaction, &format!("EV-{}", &crate::wechat::nonce_str()[..20]), now_secs)
    }

    /// The transaction resource of a paid order (what its notify carries).
    pub fn paid_transaction(&self, out_trade_no: &str) -> Option<Value> {
        let orders = self.inner.orders.lock().expect("orders lock");
        orders.get(out_trade_no).filter(|o| o.state == "SUCCESS").map(|o| self.transaction(o, out_trade_no))
    }

    /// The `transaction` resource of a paid order.
    fn transaction(&self, order: &V3Order, out_trade_no: &str) -> Value {
        let r = &order.request;
        let success_time = order.success_time.clone().unwrap_or_default();
        let transaction_id = order.transaction_id.clone().unwrap_or_default();
        json!({
            "mchid": r["mchid"], "appid": r["appid"], "out_trade_no": out_trade_no,
            "transaction_id": transaction_id, "trade_type": "JSAPI", "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": r.get("attach").cloned().unwrap_or(json!("")),
            "success_time": success_time, "payer": { "openid": r["payer"]["openid"] },
            "amount": { "total": r["amount"]["total"], "payer_total": r["amount"]["total"], "currency": "CNY", "payer_currency": "CNY" },
        })
    }

    /// The notify for `transaction`, encrypted and signed at `now_secs`
    /// with the key the merchant's mode calls for (again for each attempt,
    /// as WeChat re-signs its retries).
    pub fn notify(&self, transaction: &Value, event_id: &str, now_secs: i64) -> Result<V3Notify, String> {
        let success_time = transaction["success_time"].as_str().unwrap_or("").to_owned();
        let nonce = &crate::wechat::nonce_str()[..12];
        let ciphertext = self
            .inner
            .api_v3_key
            .encrypt(nonce, "transaction", transaction.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let body = json!({
            "id": event_id,
            "create_time": success_time, "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
            "resource": {
                "original_type": "transaction", "algorithm": "AEAD_AES_256_GCM", "ciphertext": ciphertext,
                "associated_data": "transaction", "nonce": nonce,
            },
        })
        .to_string()
        .into_bytes();
        let use_public_key = match self.key_mode() {
            KeyMode::PublicKey => true,
            KeyMode::Certificates => false,
            KeyMode::Migrating => !self.inner.migrating_turn.fetch_xor(true, std::sync::atomic::Ordering::Relaxed),
        };
        let signed = self.signed(200, body, now_secs, use_public_key);
        let headers = signed.headers.into_iter().filter(|(name, _)| name.starts_with("wechatpay-")).collect();
        Ok(V3Notify { headers, body: signed.body })
    }
}
