//! How the v3 simulator signs and checks signatures, as WeChat: a
//! request's `Authorization` verified over the exact bytes, every reply and
//! notify signed with the WeChat Pay public key's private half or the
//! platform certificate's key (by the merchant's key mode), the platform
//! certificate itself (made with rcgen, rotated on demand, downloaded
//! encrypted from `/v3/certificates`), the merchant's `paySign`, and the
//! signing faults tests inject.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{
    error, KeyMode, SignFault, SimulatorV3, V3Notify, V3Reply, MERCHANT_PRIVATE_KEY, PLATFORM_CERT_PRIVATE_KEY,
};
use crate::secret::Secret;
use crate::wechat::v3::crypto::{request_message, response_message, MerchantKey, SCHEME};

/// The simulated platform certificate.
#[derive(Debug, Clone)]
pub(super) struct PlatformCert {
    serial: String,
    pem: String,
    not_after: time::OffsetDateTime,
}

pub(super) fn make_certificate(serial: u64, valid_for: time::Duration) -> PlatformCert {
    let key = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(PLATFORM_CERT_PRIVATE_KEY, &rcgen::PKCS_RSA_SHA256)
        .expect("the sandbox key parses");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Tenpay.com Root CA (PayBridge SANDBOX)");
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial.to_be_bytes()));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + valid_for;
    let cert = params.self_signed(&key).expect("a certificate for a valid key");
    PlatformCert { serial: hex::encode_upper(serial.to_be_bytes()), pem: cert.pem(), not_after: params.not_after }
}

impl SimulatorV3 {
    /// Issues a new platform certificate (a new serial) valid for `valid_for`,
    /// as WeChat rotates them; returns its serial.
    pub fn rotate_certificate(&self, valid_for: time::Duration) -> String {
        let mut cert = self.inner.cert.lock().expect("cert lock");
        let next = u64::from_str_radix(&cert.serial, 16).unwrap_or(1).wrapping_add(1);
        *cert = make_certificate(next, valid_for);
        cert.serial.clone()
    }

    /// The current platform certificate's serial.
    pub fn certificate_serial(&self) -> String {
        self.inner.cert.lock().expect("cert lock").serial.clone()
    }

    /// Whether `paySign` is the merchant's signature of these parameters, as
    /// the WeChat client checks it before showing the payment sheet.
    pub fn pay_sign_valid(
        &self,
        app_id: &str,
        time_stamp: &str,
        nonce_str: &str,
        package: &str,
        pay_sign: &str,
    ) -> bool {
        let message = crate::wechat::v3::crypto::pay_sign_message(app_id, time_stamp, nonce_str, package);
        app_id == self.inner.merchant.appid && self.inner.merchant.public_key.verify(message.as_bytes(), pay_sign)
    }

    /// A reply signed with the key the merchant's mode (and, while
    /// migrating, its `Wechatpay-Serial`) calls for.
    pub(in crate::sandbox) fn reply_as_asked(
        &self,
        status: u16,
        reply: Option<Value>,
        wants_serial: Option<&str>,
        now_secs: i64,
    ) -> V3Reply {
        let body = reply.map_or_else(Vec::new, |v| v.to_string().into_bytes());
        let use_public_key = match self.key_mode() {
            KeyMode::PublicKey => true,
            KeyMode::Certificates => false,
            KeyMode::Migrating => wants_serial == Some(self.inner.wechat_key_id.as_str()),
        };
        self.signed(status, body, now_secs, use_public_key)
    }

    /// How many times `/v3/certificates` was called.
    pub fn certificate_downloads(&self) -> u64 {
        self.inner.certificate_downloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn certificates(&self) -> (u16, Option<Value>) {
        self.inner.certificate_downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let none = self.inner.no_platform_certificates.load(std::sync::atomic::Ordering::Relaxed);
        if self.key_mode() == KeyMode::PublicKey && none {
            // WeChat's words to a merchant that has only the public key (its
            // guide's address after "可查看指引" is left out: not known exactly).
            let message = "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。";
            return (404, Some(error("RESOURCE_NOT_EXISTS", message)));
        }
        let cert = self.inner.cert.lock().expect("cert lock").clone();
        let nonce = &crate::wechat::nonce_str()[..12];
        let Ok(ciphertext) = self.inner.api_v3_key.encrypt(nonce, "certificate", cert.pem.as_bytes()) else {
            return (500, Some(error("SYSTEM_ERROR", "系统错误")));
        };
        let rfc3339 = |t: time::OffsetDateTime| crate::wechat::beijing_rfc3339(t.unix_timestamp());
        let effective = cert.not_after - time::Duration::days(5 * 365);
        (
            200,
            Some(json!({ "data": [{
                "serial_no": cert.serial, "effective_time": rfc3339(effective), "expire_time": rfc3339(cert.not_after),
                "encrypt_certificate": {
                    "algorithm": "AEAD_AES_256_GCM", "nonce": nonce, "associated_data": "certificate",
                    "ciphertext": ciphertext,
                },
            }] })),
        )
    }

    pub(in crate::sandbox) fn authenticate(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), &'static str> {
        const BAD_FORMAT: &str = "Http头Authorization值格式错误,请参考《微信支付商户REST API签名规则》";
        let header = authorization.ok_or(BAD_FORMAT)?;
        let params = header
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or("Http头Authorization认证类型不正确")?;
        let mut fields = HashMap::new();
        for pair in params.split(',') {
            let (key, value) = pair.split_once('=').ok_or(BAD_FORMAT)?;
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or(BAD_FORMAT)?;
            fields.insert(key, value);
        }
        let field = |name: &str| fields.get(name).copied().ok_or(BAD_FORMAT);
        let merchant = &self.inner.merchant;
        if field("mchid")? != merchant.mchid {
            return Err("商户号不存在");
        }
        if field("serial_no")? != merchant.serial_no {
            return Err("商户证书序列号有误。");
        }
        let timestamp: i64 = field("timestamp")?.parse().map_err(|_| BAD_FORMAT)?;
        if (timestamp - now_secs).abs() > 300 {
            return Err("请求时间戳超出有效范围");
        }
        let message = request_message(method, path_and_query, timestamp, field("nonce_str")?, body);
        match merchant.public_key.verify(&message, field("signature")?) {
            true => Ok(()),
            false => Err("签名错误,请检查后再试"),
        }
    }

    /// Signs a reply or notify as WeChat: with the public key's private
    /// half under its id, or the certificate's key under its serial.
    pub(super) fn signed(&self, status: u16, body: Vec<u8>, now_secs: i64, use_public_key: bool) -> V3Reply {
        let fault = self.inner.faults.lock().expect("faults lock").pop_front();
        let nonce = crate::wechat::nonce_str();
        let stamped = if fault == Some(SignFault::StaleTimestamp) { now_secs - 600 } else { now_secs };
        let timestamp = stamped.to_string();
        let message = response_message(&timestamp, &nonce, &body);
        let cert_serial = self.inner.cert.lock().expect("cert lock").serial.clone();
        let (key, mut serial) = match use_public_key {
            true => (&self.inner.wechat_key, self.inner.wechat_key_id.clone()),
            false => (&self.inner.cert_key, cert_serial),
        };
        let other;
        let key = match fault == Some(SignFault::WrongKey)
            || self.inner.sign_with_other_key.load(std::sync::atomic::Ordering::Relaxed)
        {
            true => {
                other = MerchantKey::from_pem(&Secret::new(MERCHANT_PRIVATE_KEY)).expect("the sandbox key parses");
                &other
            }
            false => key,
        };
        let mut signature = key.sign(&message);
        match fault {
            Some(SignFault::UnknownSerial) => serial = "7E57000000000000000000000000000000000000".to_owned(),
            Some(SignFault::Probe) => signature = format!("WECHATPAY/SIGNTEST/{}", &signature[..40]),
            _ => {}
        }
        let headers = vec![
            ("wechatpay-timestamp", timestamp),
            ("wechatpay-nonce", nonce),
            ("wechatpay-signature", signature),
            ("wechatpay-serial", serial),
            ("wechatpay-signature-type", SCHEME.to_owned()),
            ("content-type", "application/json".to_owned()),
        ];
        V3Reply { status, headers, body }
    }

    /// Signs any notify body as WeChat would sign it now (tests build
    /// tampered notifies that still carry a valid signature with this).
    pub fn sign_notify(&self, body: Vec<u8>, now_secs: i64) -> V3Notify {
        let signed = self.signed(200, body, now_secs, self.key_mode() != KeyMode::Certificates);
        let headers = signed.headers.into_iter().filter(|(name, _)| name.starts_with("wechatpay-")).collect();
        V3Notify { headers, body: signed.body }
    }

    /// A signed error reply (an injected business error).
    pub fn error_reply(&self, status: u16, code: &str, message: &str, now_secs: i64) -> V3Reply {
        let body = error(code, message).to_string().into_bytes();
        self.signed(status, body, now_secs, self.key_mode() != KeyMode::Certificates)
    }
}
