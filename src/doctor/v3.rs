//! API v3: one signed query of an order that cannot exist, and in
//! certificate mode one download of the platform certificates.
//!
//! WeChat authenticates the request (merchant, certificate serial, RSA
//! signature) before it looks for the order, so a 404 `ORDER_NOT_EXIST`
//! whose own signature verifies proves `mch_id`, `merchant_serial` and
//! `merchant_key_file`; a 401 `SIGN_ERROR`'s message names the culprit.
//! The reply's signature shows whether the configured WeChat Pay public key
//! (or the platform certificates) is the one WeChat signs with. The APIv3
//! key only decrypts: the certificate list where certificate mode is on,
//! else the first notify.

use std::sync::Arc;

use super::places::{PAY_APIV3_KEY, PAY_API_CERTIFICATE, PAY_MERCHANT_INFO, PAY_PUBLIC_KEY};
use super::{unreachable, CODE_APIV3_KEY, CODE_V3_REPLY, CODE_V3_REQUEST};
use crate::checkup::Check;
use crate::text::clip;
use crate::wechat::client::WechatError;
use crate::wechat::settings::V3Keys;
use crate::wechat::v3::client::{Probe, V3Client};
use crate::wechat::v3::crypto::DecryptError;
use crate::wechat::v3::verify::VerifyError;

const REQUEST: &str = "API v3 request signature";
const REPLY: &str = "API v3 reply signature";
const APIV3_KEY: &str = "APIv3 key";

/// The v3 checks: the request's signature, the reply's, and the APIv3 key.
pub(super) async fn check(client: &V3Client, keys: &Arc<V3Keys>, mch_id: &str) -> Vec<Check> {
    // Certificate mode first: the query's reply is signed with a platform
    // certificate, which only the download makes known.
    let apiv3_key = match keys.platform_certificates {
        true => Some(certificates(client, keys).await),
        false => None,
    };
    let mut checks = match client.probe_query(&super::v2::impossible_order()).await {
        Ok(probe) => {
            vec![request(&probe, keys, mch_id), reply(&probe, keys)]
        }
        Err(e) => vec![
            unreachable(CODE_V3_REQUEST, REQUEST, "WeChat Pay (wechat.pay_base_url)", &e),
            Check::unproved(CODE_V3_REPLY, REPLY, "no reply to check", None),
        ],
    };
    checks.push(apiv3_key.unwrap_or_else(|| {
        Check::unproved(
            CODE_APIV3_KEY,
            APIV3_KEY,
            "not provable before a payment: with the WeChat Pay public key, WeChat uses the APIv3 key only to \
             encrypt notifies",
            Some(format!(
                "the first notify proves it; one PayBridge cannot decrypt is refused with \"check wechat.apiv3_key\" \
                 in the log (then set it again at {PAY_APIV3_KEY}, and the same in wechat.apiv3_key)"
            )),
        )
    }));
    checks
}

/// The request's signature, from the status and WeChat's code and message.
fn request(probe: &Probe, keys: &V3Keys, mch_id: &str) -> Check {
    let serial = &keys.merchant_serial;
    let said = format!("{} {} {}", probe.status, probe.code, clip(&probe.message, 100));
    let verified = matches!(probe.verified, Some(Ok(())));
    let certificate_fix = format!(
        "find the certificate at {PAY_API_CERTIFICATE}: put its 证书序列号 in wechat.merchant_serial and its \
         apiclient_key.pem (from the same download) in wechat.merchant_key_file; `openssl x509 -noout -serial -in \
         apiclient_cert.pem` prints the serial of a certificate file"
    );
    match (probe.status, probe.code.as_str()) {
        (404, "ORDER_NOT_EXIST") | (200..=299, _) if verified => Check::passed(
            CODE_V3_REQUEST,
            REQUEST,
            format!(
                "WeChat accepted mchid {mch_id}, merchant_serial {serial} and merchant_key_file (a signed query of a \
                 made-up order: {}, reply verified)",
                said.trim()
            ),
        ),
        (404, "ORDER_NOT_EXIST") | (200..=299, _) => Check::unproved(
            CODE_V3_REQUEST,
            REQUEST,
            format!("the reply says {}, but its signature did not verify (see the next line)", said.trim()),
            None,
        ),
        (401, _) if probe.message.contains("序列号") => Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat knows no API certificate {serial} of merchant {mch_id}: {said}"),
            certificate_fix,
        ),
        (401, _) if probe.message.contains("商户号") => Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat knows no merchant {mch_id}: {said}"),
            format!("copy the merchant number from {PAY_MERCHANT_INFO} into wechat.mch_id"),
        ),
        (401, _) if probe.message.contains("时间戳") => Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat refused the request's time: {said}"),
            "this machine's clock is wrong: turn on NTP (timedatectl set-ntp true) and run the doctor again".to_owned(),
        ),
        (401, _) if probe.message.contains("签名错误") => Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!(
                "WeChat knows certificate {serial} but the signature does not verify with its key: merchant_key_file \
                 is not that certificate's private key ({said})"
            ),
            certificate_fix,
        ),
        (400, "MCH_NOT_EXISTS") => Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat knows no merchant {mch_id}: {said}"),
            format!("copy the merchant number from {PAY_MERCHANT_INFO} into wechat.mch_id"),
        ),
        (500..=599, _) => Check::unproved(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat had an error ({said}): not proved"),
            Some(format!(
                "run the doctor again; if it repeats, check wechat.mch_id and wechat.merchant_serial at \
                 {PAY_API_CERTIFICATE} (WeChat has answered SYSTEM_ERROR to a wrong serial)"
            )),
        ),
        _ => Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat refused the request: {said}"),
            format!(
                "check wechat.mch_id, wechat.merchant_serial and wechat.merchant_key_file at {PAY_API_CERTIFICATE}"
            ),
        ),
    }
}

/// The reply's signature: which key WeChat signs with, and whether it is the configured one.
fn reply(probe: &Probe, keys: &V3Keys) -> Check {
    let configured_id = keys.public_key.as_ref().map(|k| k.id.as_str());
    let serial = probe.serial.as_deref().unwrap_or("");
    let public_key_fix = format!(
        "download this merchant's public key at {PAY_PUBLIC_KEY}: pub_key.pem into wechat.public_key_file and its \
         公钥ID into wechat.public_key_id"
    );
    match &probe.verified {
        None if probe.status == 401 => Check::unproved(
            CODE_V3_REPLY,
            REPLY,
            "WeChat does not sign its answer to a request it refused: the WeChat Pay public key / platform \
             certificates were not proved",
            Some("fix the request signature above, then run the doctor again".into()),
        ),
        None => Check::failed(
            CODE_V3_REPLY,
            REPLY,
            format!("the reply (HTTP {}) carries no WeChat signature", probe.status),
            "make wechat.pay_base_url WeChat's host (https://api.mch.weixin.qq.com, the default), with nothing in \
             between that changes replies"
                .to_owned(),
        ),
        Some(Ok(())) => {
            let from_file = keys.public_key.as_ref().is_some_and(|k| k.file.is_some());
            let by = match (configured_id == Some(serial), from_file) {
                (true, true) => format!("the WeChat Pay public key {serial} (wechat.public_key_file)"),
                (true, false) => format!("the WeChat Pay public key {serial}"),
                (false, _) => format!("platform certificate {serial}"),
            };
            Check::passed(CODE_V3_REPLY, REPLY, format!("WeChat's reply verified with {by}"))
        }
        Some(Err(VerifyError::UnknownSerial(signed_by))) => match (signed_by.starts_with("PUB_KEY_ID_"), configured_id)
        {
            (true, Some(id)) => Check::failed(
                CODE_V3_REPLY,
                REPLY,
                format!(
                    "WeChat signs this merchant's replies with public key {signed_by}, not wechat.public_key_id {id}: \
                     the configured public key belongs to another merchant"
                ),
                public_key_fix,
            ),
            (true, None) => Check::failed(
                CODE_V3_REPLY,
                REPLY,
                format!(
                    "WeChat signs this merchant's replies with its public key {signed_by}, and PayBridge has only \
                     platform certificates: the switch to the WeChat Pay public key has begun"
                ),
                format!("{public_key_fix}; keep platform_certificates = true until the switch is complete"),
            ),
            // Certificate mode, and the download failed: the APIv3 key line says why.
            (false, _) if keys.platform_certificates => Check::unproved(
                CODE_V3_REPLY,
                REPLY,
                format!(
                    "WeChat signs with platform certificate {signed_by}, which PayBridge could not download and \
                     decrypt (see the APIv3 key line)"
                ),
                None,
            ),
            (false, _) => Check::failed(
                CODE_V3_REPLY,
                REPLY,
                format!(
                    "WeChat signs this merchant's replies with platform certificate {signed_by}, which PayBridge does \
                     not have: this merchant has not (fully) switched to the WeChat Pay public key"
                ),
                format!(
                    "set wechat.platform_certificates = true (with the public key during the switch), or finish the \
                     switch at {PAY_PUBLIC_KEY}"
                ),
            ),
        },
        Some(Err(VerifyError::BadSignature(signed_by))) => Check::failed(
            CODE_V3_REPLY,
            REPLY,
            format!(
                "the reply is signed under {signed_by} but does not verify with wechat.public_key_file: the file is \
                 not that id's key (another merchant's public key)"
            ),
            public_key_fix,
        ),
        Some(Err(VerifyError::Stale(skew))) => Check::failed(
            CODE_V3_REPLY,
            REPLY,
            format!("WeChat's timestamp is {skew} s from this machine's clock"),
            "this machine's clock is wrong: turn on NTP (timedatectl set-ntp true) and run the doctor again".to_owned(),
        ),
        Some(Err(VerifyError::Probe)) => Check::unproved(
            CODE_V3_REPLY,
            REPLY,
            "WeChat sent one of its deliberate signature probes (refused, as it must be)",
            Some("run the doctor again".into()),
        ),
        Some(Err(e @ VerifyError::Missing(_))) => Check::failed(
            CODE_V3_REPLY,
            REPLY,
            format!("{e}: the reply is not WeChat's"),
            "make wechat.pay_base_url WeChat's host (https://api.mch.weixin.qq.com, the default)".to_owned(),
        ),
    }
}

/// Certificate mode: downloads the platform certificates, which proves the
/// APIv3 key (they come encrypted with it), and trusts them for the query.
async fn certificates(client: &V3Client, keys: &V3Keys) -> Check {
    let wrong_key = DecryptError::Authentication.to_string();
    match client.certificates(&keys.apiv3_key).await {
        Ok(certificates) if !certificates.is_empty() => {
            let serials: Vec<&str> = certificates.iter().map(|c| c.serial.as_str()).collect();
            let detail = format!(
                "decrypted the platform certificate list WeChat sent with wechat.apiv3_key ({})",
                serials.join(", ")
            );
            client.trust().set_certificates(certificates, crate::clock::now_ms() / 1000);
            Check::passed(CODE_APIV3_KEY, APIV3_KEY, detail)
        }
        Ok(_) => Check::unproved(CODE_APIV3_KEY, APIV3_KEY, "WeChat sent no platform certificate to decrypt", None),
        Err(WechatError::BadReply(message)) if message.contains(&wrong_key) => Check::failed(
            CODE_APIV3_KEY,
            APIV3_KEY,
            "the platform certificates WeChat sent do not decrypt with wechat.apiv3_key: it is not this merchant's \
             APIv3 key",
            format!(
                "set the APIv3 key again at {PAY_APIV3_KEY} and put the same 32 characters in wechat.apiv3_key (not \
                 the API v2 key)"
            ),
        ),
        Err(WechatError::Business { code, description }) if code == "RESOURCE_NOT_EXISTS" => Check::failed(
            CODE_APIV3_KEY,
            "platform certificates",
            format!(
                "WeChat has no platform certificates for this merchant ({code} {}): it uses the WeChat Pay public \
                 key only",
                clip(&description, 100)
            ),
            format!(
                "remove wechat.platform_certificates; set wechat.public_key_file and public_key_id from {PAY_PUBLIC_KEY}"
            ),
        ),
        Err(e) => Check::unproved(
            CODE_APIV3_KEY,
            APIV3_KEY,
            format!("the platform certificates could not be downloaded ({}): not proved", clip(&e.to_string(), 200)),
            Some("fix what the API v3 lines above say, then run the doctor again".into()),
        ),
    }
}
