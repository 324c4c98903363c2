//! The simulator's v2 pay API: `unifiedorder`, `orderquery`,
//! `closeorder` (and `downloadbill`, `refundquery`), each request's
//! signature verified and each reply signed with the request's algorithm.

use std::sync::Arc;
use std::time::Duration;

use super::{business_error, parse_beijing, return_fail, Fault, SimOrder, SimReply, Simulator, TradeState};
use crate::secret::Secret;
use crate::wechat::sign::{self, Fields, SignType};
use crate::wechat::{beijing_compact, is_valid_out_trade_no, nonce_str, xml};

impl Simulator {
    /// Handles one pay API call (`unifiedorder`, `orderquery`, `closeorder`).
    pub fn pay_api(&self, api: &str, method_is_post: bool, body: &[u8]) -> SimReply {
        if !method_is_post {
            return return_fail("请使用post方法");
        }
        if body.is_empty() {
            return return_fail("post数据为空");
        }
        let fault = self.inner.faults.lock().expect("faults lock").pop_front();
        match &fault {
            Some(Fault::Http { status }) => {
                let page = format!("<html><body><h1>{status}</h1>upstream error</body></html>");
                return SimReply { status: *status, body: page.into_bytes(), delay: None };
            }
            Some(Fault::ReturnFail { message }) => return return_fail(message),
            _ => {}
        }
        let request = match xml::parse(body) {
            Ok(f) => f,
            Err(_) => return return_fail("XML格式错误"),
        };
        let cfg = &self.inner.config;
        if request.get("mch_id").map(String::as_str) != Some(cfg.mch_id.as_str()) {
            return return_fail("mch_id参数错误");
        }
        let sign_type = match request.get("sign_type").map(String::as_str) {
            None | Some("") | Some("MD5") => SignType::Md5,
            Some("HMAC-SHA256") => SignType::HmacSha256,
            Some(_) => return return_fail("sign_type参数错误"),
        };
        if sign::verify(&request, &cfg.mch_key, &[sign_type]).is_err() {
            return return_fail("签名错误");
        }
        for required in ["appid", "nonce_str"] {
            if request.get(required).is_none_or(|v| v.is_empty()) {
                return return_fail(&format!("缺少参数{required}"));
            }
        }
        if api == "orderquery" {
            self.count_query();
        }
        if api == "downloadbill" {
            return match request["appid"] == cfg.appid {
                true => self.download_bill(&request),
                false => return_fail("appid和mch_id不匹配"),
            };
        }
        let mut reply = match (&fault, api) {
            // WeChat did not process the request: no order is created.
            (Some(Fault::Business { code, description }), _) => business_error(code, description),
            (_, "unifiedorder") => self.unified_order(&request, sign_type),
            (_, "orderquery") => self.order_query(&request),
            (_, "closeorder") => self.close_order(&request),
            (_, "refundquery") => self.refund_query_v2(&request),
            _ => return return_fail("不支持的接口"),
        };
        if request["appid"] != cfg.appid {
            reply = business_error("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配");
        }
        reply.insert("return_code".into(), "SUCCESS".into());
        reply.insert("return_msg".into(), "OK".into());
        reply.insert("appid".into(), request["appid"].clone());
        reply.insert("mch_id".into(), cfg.mch_id.clone());
        reply.insert("nonce_str".into(), nonce_str());
        let key = match fault {
            Some(Fault::BadSign) => Secret::new("not-the-merchant-key"),
            _ => cfg.mch_key.clone(),
        };
        let signature = sign::sign(&reply, &key, sign_type);
        reply.insert("sign".into(), signature);
        let delay = match fault {
            Some(Fault::Delay { ms }) => Some(Duration::from_millis(ms)),
            _ => None,
        };
        SimReply { status: 200, body: xml::write(&reply).into_bytes(), delay }
    }

    fn unified_order(&self, request: &Fields, sign_type: SignType) -> Fields {
        let get = |k: &str| request.get(k).map(String::as_str).unwrap_or("");
        for required in ["body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type"] {
            if get(required).is_empty() {
                return business_error("LACK_PARAMS", &format!("缺少参数{required}"));
            }
        }
        if get("trade_type") != "JSAPI" {
            return business_error("INVALID_REQUEST", "此模拟器只支持JSAPI");
        }
        if get("openid").is_empty() {
            return business_error("LACK_PARAMS", "JSAPI支付必须传openid");
        }
        // Like WeChat: an openid is only good for the appid whose login issued it.
        if !self.inner.openids.lock().expect("openids lock").contains(get("openid")) {
            return business_error("PARAM_ERROR", "appid和openid不匹配");
        }
        if !is_valid_out_trade_no(get("out_trade_no")) {
            return business_error("INVALID_REQUEST", "out_trade_no参数格式错误");
        }
        if !matches!(get("total_fee").parse::<u64>(), Ok(fee) if fee > 0) {
            return business_error("INVALID_REQUEST", "total_fee参数格式错误");
        }
        if get("body").chars().count() > 128 || get("attach").chars().count() > 127 {
            return business_error("INVALID_REQUEST", "body或attach超过长度限制");
        }
        match url::Url::parse(get("notify_url")) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {}
            _ => return business_error("INVALID_REQUEST", "notify_url参数错误"),
        }
        if !get("time_expire").is_empty() {
            match parse_beijing(get("time_expire")) {
                None => return business_error("INVALID_REQUEST", "time_expire参数格式错误"),
                // WeChat's current rule: at least a minute ahead.
                Some(at) if at < time::OffsetDateTime::now_utc() + time::Duration::minutes(1) => {
                    return business_error("INVALID_REQUEST", "time_expire时间过短，刷卡至少1分钟，其他5分钟")
                }
                Some(_) => {}
            }
        }
        let mut params = request.clone();
        params.remove("nonce_str");
        params.remove("sign");
        params.remove("sign_type");

        let mut orders = self.inner.orders.lock().expect("orders lock");
        let prepay_id = match orders.get(get("out_trade_no")) {
            Some(existing) if existing.state == TradeState::Success => {
                return business_error("ORDERPAID", "该订单已支付");
            }
            Some(existing) if existing.state == TradeState::Closed => {
                return business_error("ORDERCLOSED", "该订单已关");
            }
            Some(existing) if existing.params != params => {
                return business_error("INVALID_REQUEST", "201 商户订单号重复");
            }
            Some(existing) => existing.prepay_id.clone(),
            None => {
                let prepay_id = format!(
                    "wx{}{}",
                    beijing_compact(time::OffsetDateTime::now_utc()),
                    &hex::encode(rand::random::<[u8; 10]>())
                );
                orders.insert(
                    get("out_trade_no").to_owned(),
                    SimOrder {
                        params,
                        sign_type,
                        prepay_id: prepay_id.clone(),
                        state: TradeState::NotPay,
                        transaction_id: None,
                        time_end: None,
                        delivery: Arc::default(),
                    },
                );
                prepay_id
            }
        };
        sign::fields([("result_code", "SUCCESS"), ("trade_type", "JSAPI"), ("prepay_id", prepay_id.as_str())])
    }

    fn order_query(&self, request: &Fields) -> Fields {
        let orders = self.inner.orders.lock().expect("orders lock");
        let found = match request.get("transaction_id").filter(|t| !t.is_empty()) {
            Some(tx) => orders.values().find(|o| o.transaction_id.as_ref() == Some(tx)),
            None => request.get("out_trade_no").and_then(|no| orders.get(no)),
        };
        let Some(order) = found else {
            return business_error("ORDERNOTEXIST", "order not exist");
        };
        let mut reply = sign::fields([
            ("result_code", "SUCCESS"),
            ("trade_state", order.state.as_str()),
            ("out_trade_no", order.field("out_trade_no")),
            ("total_fee", order.field("total_fee")),
        ]);
        match order.state {
            TradeState::Success => {
                reply.extend(sign::fields([
                    ("trade_state_desc", "支付成功"),
                    ("openid", order.field("openid")),
                    ("trade_type", "JSAPI"),
                    ("bank_type", "OTHERS"),
                    ("fee_type", "CNY"),
                    ("cash_fee", order.field("total_fee")),
                    ("attach", order.field("attach")),
                    ("is_subscribe", "N"),
                ]));
                reply.insert("transaction_id".into(), order.transaction_id.clone().unwrap_or_default());
                reply.insert("time_end".into(), order.time_end.clone().unwrap_or_default());
            }
            TradeState::NotPay => {
                reply.insert("trade_state_desc".into(), "订单未支付".into());
            }
            TradeState::Closed => {
                reply.insert("trade_state_desc".into(), "订单已关闭".into());
            }
        }
        reply.retain(|_, v| !v.is_empty());
        reply
    }

    fn close_order(&self, request: &Fields) -> Fields {
        let mut orders = self.inner.orders.lock().expect("orders lock");
        let Some(order) = request.get("out_trade_no").and_then(|no| orders.get_mut(no)) else {
            return business_error("ORDERNOTEXIST", "order not exist");
        };
        match order.state {
            TradeState::Success => business_error("ORDERPAID", "订单已支付，不能发起关单"),
            TradeState::Closed => business_error("ORDERCLOSED", "订单已关闭，无法重复关闭"),
            TradeState::NotPay => {
                order.state = TradeState::Closed;
                sign::fields([("result_code", "SUCCESS"), ("result_msg", "OK")])
            }
        }
    }

    /// v2's `downloadbill`: the bill itself (gzip when `tar_type=GZIP`), or
    /// an unsigned XML failure.
    fn download_bill(&self, request: &Fields) -> SimReply {
        use super::super::bills::{v2_bill_failure, BillAnswer};
        let get = |k: &str| request.get(k).map(String::as_str).unwrap_or("");
        let date = get("bill_date");
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return SimReply::raw(v2_bill_failure("invalid bill_date", Some("20001")));
        }
        if !matches!(get("bill_type"), "" | "ALL") {
            return SimReply::raw(v2_bill_failure("invalid bill_type (this simulator makes ALL bills)", Some("20001")));
        }
        let day = format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..]);
        match self.bill(&day) {
            BillAnswer::NotReady => SimReply::raw(v2_bill_failure("Bill Creating", None)),
            BillAnswer::Empty => SimReply::raw(v2_bill_failure("No Bill Exist", Some("20002"))),
            BillAnswer::Text { text, plain, .. } => match get("tar_type") == "GZIP" && !plain {
                true => SimReply::raw(crate::wechat::bill::gzip(&text)),
                false => SimReply::raw(text),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::SimulatorConfig;
    use super::*;

    /// A simulator that has issued the openid `o1` (as if after a login).
    fn sim() -> Simulator {
        let sim = Simulator::new(SimulatorConfig::new(
            "wxd930ea5d5a258f4f",
            &Secret::new("s"),
            "10000100",
            &Secret::new("192006250b4c09247ec02edce69f6a2d"),
        ));
        sim.inner.openids.lock().unwrap().insert("o1".into());
        sim
    }

    #[test]
    fn an_openid_no_login_issued_is_refused() {
        let sim = sim();
        let mut stranger = ORDER.to_vec();
        stranger[6] = ("openid", "<openid from step 1>");
        let key = "192006250b4c09247ec02edce69f6a2d";
        let r = reply(sim.pay_api("unifiedorder", true, &request(&sim, &stranger, SignType::Md5)), key, SignType::Md5);
        assert_eq!((r["err_code"].as_str(), r["err_code_des"].as_str()), ("PARAM_ERROR", "appid和openid不匹配"));
    }

    fn request(sim: &Simulator, pairs: &[(&str, &str)], sign_type: SignType) -> Vec<u8> {
        let mut f = sign::fields(pairs.iter().copied());
        f.insert("appid".into(), "wxd930ea5d5a258f4f".into());
        f.insert("mch_id".into(), "10000100".into());
        f.insert("nonce_str".into(), nonce_str());
        if sign_type == SignType::HmacSha256 {
            f.insert("sign_type".into(), "HMAC-SHA256".into());
        }
        let s = sign::sign(&f, &sim.inner.config.mch_key, sign_type);
        f.insert("sign".into(), s);
        xml::write(&f).into_bytes()
    }

    const ORDER: &[(&str, &str)] = &[
        ("body", "test"),
        ("out_trade_no", "ORDER0001"),
        ("total_fee", "100"),
        ("spbill_create_ip", "127.0.0.1"),
        ("notify_url", "http://127.0.0.1:1/pay/notify"),
        ("trade_type", "JSAPI"),
        ("openid", "o1"),
    ];

    fn reply(r: SimReply, key: &str, t: SignType) -> Fields {
        let f = xml::parse(&r.body).unwrap();
        if f["return_code"] == "SUCCESS" {
            sign::verify(&f, &Secret::new(key), &[t]).expect("the simulator signs its replies");
        } else {
            assert!(!f.contains_key("sign"), "a FAIL reply is not signed");
        }
        f
    }

    #[test]
    fn unified_order_signs_with_the_request_algorithm_and_is_idempotent() {
        let sim = sim();
        let key = "192006250b4c09247ec02edce69f6a2d";
        for t in [SignType::HmacSha256, SignType::Md5] {
            let r = reply(sim.pay_api("unifiedorder", true, &request(&sim, ORDER, t)), key, t);
            assert_eq!(r["result_code"], "SUCCESS");
            assert_eq!(r["prepay_id"].len(), 36);
        }
        let mut changed = ORDER.to_vec();
        changed[2] = ("total_fee", "101");
        let r = reply(
            sim.pay_api("unifiedorder", true, &request(&sim, &changed, SignType::HmacSha256)),
            key,
            SignType::HmacSha256,
        );
        assert_eq!(r["err_code_des"], "201 商户订单号重复");
    }

    #[test]
    fn protocol_failures_are_unsigned_fail_replies() {
        let sim = sim();
        let mut bad = request(&sim, ORDER, SignType::Md5);
        let at = bad.windows(4).position(|w| w == b"test").unwrap();
        bad[at] = b'T';
        let key = "192006250b4c09247ec02edce69f6a2d";
        assert_eq!(reply(sim.pay_api("unifiedorder", true, &bad), key, SignType::Md5)["return_msg"], "签名错误");
        assert_eq!(
            reply(sim.pay_api("unifiedorder", true, b"<xml><a>"), key, SignType::Md5)["return_msg"],
            "XML格式错误"
        );
        assert_eq!(reply(sim.pay_api("unifiedorder", false, b""), key, SignType::Md5)["return_code"], "FAIL");
    }
}
