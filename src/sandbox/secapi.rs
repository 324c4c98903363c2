//! The simulator's API v2 refunds, as WeChat runs them: `/secapi/pay/refund`
//! only over TLS with the merchant's client certificate (mutual TLS, on a
//! port of its own), `refundquery` on the ordinary API, and the refund
//! notify whose `req_info` is encrypted with the API key.
//!
//! At start the simulator makes a CA ("Tenpay.com Root CA (SANDBOX)"), a
//! server certificate for 127.0.0.1 and the merchant's client certificate
//! (CN = mch_id), both issued by it. The refunds themselves are the v3
//! side's (one merchant, one set of refunds), so amounts, idempotency and
//! the outcome knobs are the same in both versions.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

use super::simulator::{business_error, return_fail, SimReply, Simulator, TradeState};
use crate::wechat::sign::{self, Fields, SignType};
use crate::wechat::{nonce_str, refund_info, xml};

/// The certificates of the mutual-TLS port.
pub struct MerchantTls {
    /// The CA that issued both certificates, PEM (what PayBridge trusts as `secapi_ca_file`).
    pub ca_pem: String,
    /// The merchant's client certificate, then its key, PEM (`apiclient_cert.pem` + `apiclient_key.pem`).
    pub client_cert_pem: String,
    /// Its key, PEM.
    pub client_key_pem: String,
    /// The server side: requires a client certificate issued by the CA.
    pub server: Arc<rustls::ServerConfig>,
    /// The CA, to issue other client certificates (a test's expired one).
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl MerchantTls {
    /// New certificates for merchant `mch_id`.
    pub fn new(mch_id: &str) -> MerchantTls {
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "Tenpay.com Root CA (PayBridge SANDBOX)");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a key")).expect("a CA");
        let leaf = |names: Vec<String>, cn: &str, purpose| {
            let key = KeyPair::generate().expect("a key");
            let mut params = CertificateParams::new(names).expect("valid names");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![purpose];
            (params.signed_by(&key, &ca).expect("a certificate"), key)
        };
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let (server_cert, server_key) =
            leaf(names, "api.mch.weixin.qq.com (SANDBOX)", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(Vec::new(), mch_id, ExtendedKeyUsagePurpose::ClientAuth);

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("the CA certificate parses");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .expect("a verifier for one root");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![CertificateDer::from(server_cert.der().to_vec())], key)
            .expect("the server certificate matches its key");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        MerchantTls {
            ca_pem: ca.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            server: Arc::new(server),
            ca,
        }
    }

    /// Another API certificate from the same CA, for merchant `cn`, valid
    /// from `not_before` to `not_after` (a test's expired or soon-expiring
    /// certificate: the mutual-TLS port refuses an expired one, as WeChat
    /// does). Returns the certificate and its key, PEM.
    pub fn client_certificate(
        &self,
        cn: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> (String, String) {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.ca).expect("a certificate");
        (cert.pem(), key.serialize_pem())
    }
}

impl Simulator {
    /// `/secapi/pay/refund`: reached only through the mutual-TLS port, so
    /// the merchant's certificate was checked in the handshake.
    pub fn secapi_refund(&self, body: &[u8], now_secs: i64) -> SimReply {
        if body.is_empty() {
            return return_fail("post数据为空");
        }
        let request = match xml::parse(body) {
            Ok(f) => f,
            Err(_) => return return_fail("XML格式错误"),
        };
        let cfg = self.config();
        let get = |k: &str| request.get(k).map(String::as_str).unwrap_or("");
        if get("mch_id") != cfg.mch_id || get("appid") != cfg.appid {
            return return_fail("appid或mch_id参数错误");
        }
        let sign_type = match get("sign_type") {
            "" | "MD5" => SignType::Md5,
            "HMAC-SHA256" => SignType::HmacSha256,
            _ => return return_fail("sign_type参数错误"),
        };
        if sign::verify(&request, &cfg.mch_key, &[sign_type]).is_err() {
            return return_fail("签名错误");
        }
        // Signed and authenticated: a request WeChat counts, and answers as a test asked.
        if let Some((code, description)) = self.v3().refund_requested(get("out_refund_no")) {
            return self.signed_reply(business_error(&code, &description), sign_type);
        }
        let (Ok(total), Ok(amount)) = (get("total_fee").parse::<u64>(), get("refund_fee").parse::<u64>()) else {
            return self.signed_reply(business_error("PARAM_ERROR", "total_fee或refund_fee格式错误"), sign_type);
        };
        let paid = {
            let orders = self.orders();
            orders
                .get(get("out_trade_no"))
                .filter(|o| o.state == TradeState::Success)
                .and_then(|o| o.field("total_fee").parse::<u64>().ok())
        };
        let as_v3 = json!({
            "out_trade_no": get("out_trade_no"), "out_refund_no": get("out_refund_no"),
            "reason": get("refund_desc"), "notify_url": get("notify_url"),
            "amount": { "refund": amount, "total": total, "currency": "CNY" },
        });
        let reply = match self.v3().accept_refund(as_v3, paid, true, now_secs) {
            (200, Some(refund)) => {
                let refund_id = refund["refund_id"].as_str().unwrap_or("").to_owned();
                let mut fields = sign::fields([
                    ("result_code", "SUCCESS"),
                    ("out_trade_no", get("out_trade_no")),
                    ("out_refund_no", get("out_refund_no")),
                    ("refund_id", &refund_id),
                    ("refund_fee", get("refund_fee")),
                    ("total_fee", get("total_fee")),
                    ("cash_fee", get("total_fee")),
                ]);
                if let Some(tx) = self.orders().get(get("out_trade_no")).and_then(|o| o.transaction_id.clone()) {
                    fields.insert("transaction_id".into(), tx);
                }
                fields
            }
            (404, _) => business_error("ORDERNOTEXIST", "订单不存在或未支付"),
            (_, error) => {
                let error = error.unwrap_or_default();
                let code = match error["code"].as_str() {
                    Some("PARAM_ERROR") => "PARAM_ERROR",
                    _ => "ERROR",
                };
                business_error(code, error["message"].as_str().unwrap_or("退款失败"))
            }
        };
        self.signed_reply(reply, sign_type)
    }

    /// `refundquery` by `out_refund_no` (the only way PayBridge asks).
    pub(super) fn refund_query_v2(&self, request: &Fields) -> Fields {
        let no = request.get("out_refund_no").map(String::as_str).unwrap_or("");
        let Some((refund, status, refund_id, _)) = self.v3().refund_facts(no) else {
            return business_error("REFUNDNOTEXIST", "not exist");
        };
        let v2_status = v2_refund_status(status);
        sign::fields([
            ("result_code", "SUCCESS"),
            ("out_trade_no", &text(&refund["out_trade_no"])),
            ("total_fee", &text(&refund["amount"]["total"])),
            ("refund_count", "1"),
            ("out_refund_no_0", no),
            ("refund_id_0", &refund_id),
            ("refund_fee_0", &text(&refund["amount"]["refund"])),
            ("refund_status_0", v2_status),
            ("refund_channel_0", "ORIGINAL"),
            ("refund_recv_accout_0", "支付用户零钱"),
        ])
    }

    /// The v2 refund notify for a refund the v3 side just ended: outer XML,
    /// unsigned, with the refund in `req_info`.
    pub(super) fn refund_notify_v2(&self, resource: &Value) -> Vec<u8> {
        let cfg = self.config();
        let status = v2_refund_status(resource["refund_status"].as_str().unwrap_or("SUCCESS")).to_owned();
        let when = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
        let success_time = when
            .format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"))
            .expect("formats");
        let (no, order, refund_id) =
            (text(&resource["out_refund_no"]), text(&resource["out_trade_no"]), text(&resource["refund_id"]));
        let (amount, total) = (text(&resource["amount"]["refund"]), text(&resource["amount"]["total"]));
        let mut info = sign::fields([
            ("out_refund_no", no.as_str()),
            ("out_trade_no", order.as_str()),
            ("refund_id", refund_id.as_str()),
            ("refund_fee", amount.as_str()),
            ("settlement_refund_fee", amount.as_str()),
            ("total_fee", total.as_str()),
            ("refund_status", status.as_str()),
            ("refund_recv_accout", "支付用户零钱"),
            ("refund_account", "REFUND_SOURCE_UNSETTLED_FUNDS"),
            ("refund_request_source", "API"),
        ]);
        if status == "SUCCESS" {
            info.insert("success_time".into(), success_time);
        }
        if let Some(tx) = self.orders().get(&order).and_then(|o| o.transaction_id.clone()) {
            info.insert("transaction_id".into(), tx);
        }
        let req_info = refund_info::encrypt(&info, &cfg.mch_key);
        let outer = sign::fields([
            ("return_code", "SUCCESS"),
            ("appid", cfg.appid.as_str()),
            ("mch_id", cfg.mch_id.as_str()),
            ("nonce_str", &nonce_str()),
            ("req_info", &req_info),
        ]);
        xml::write(&outer).into_bytes()
    }
}

/// A refund status as API v2 names it (`refund_status`): the inverse of
/// [`crate::store::RefundStatus::parse_v2`].
fn v2_refund_status(v3: &str) -> &str {
    match v3 {
        "CLOSED" => "REFUNDCLOSE",
        "ABNORMAL" => "CHANGE",
        other => other,
    }
}

/// A JSON value as the text a v2 field carries (`"800"` for 800).
fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}
