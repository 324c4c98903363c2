//! API v3: one signed query of an order that cannot exist, and one
//! download of the platform certificates.
//!
//! WeChat authenticates the request (merchant, certificate serial, RSA
//! signature) before it looks for the order, so a 404 `ORDER_NOT_EXIST`
//! whose own signature verifies proves `mch_id`, `merchant_serial` and
//! `merchant_key_file`; a 401 `SIGN_ERROR`'s message names the culprit.
//! The reply's signature shows whether the configured WeChat Pay public key
//! (or the platform certificates) is the one WeChat signs with. The APIv3
//! key only decrypts: the certificate list, which WeChat sends in
//! certificate mode and, in public-key mode, to a merchant that switched
//! and kept its certificates; for a merchant that has none (new since
//! 2024: 404 `RESOURCE_NOT_EXISTS` "无可用的平台证书"), nothing WeChat
//! answers before a payment is encrypted, and the first notify proves it.

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
    // The download first: in certificate mode the query's reply is signed
    // with a platform certificate, which only the download makes known.
    let apiv3_key = certificates(client, keys).await;
    let mut checks = match client.probe_query(&super::v2::impossible_order()).await {
        Ok(probe) => {
            vec![request(&probe, keys, mch_id), reply(&probe, keys)]
        }
        Err(e) => vec![
            unreachable(CODE_V3_REQUEST, REQUEST, "WeChat Pay (wechat.pay_base_url)", &e),
            Check::unproved(CODE_V3_REPLY, REPLY, "no reply to check", None).zh("没有可检查的回复"),
        ],
    };
    checks.push(apiv3_key);
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
    let certificate_fix_zh = format!(
        "在 {PAY_API_CERTIFICATE} 找到证书：把它的证书序列号填入 wechat.merchant_serial，把同一次下载的 apiclient_key.pem \
         填入 wechat.merchant_key_file；`openssl x509 -noout -serial -in apiclient_cert.pem` 可显示证书文件的序列号"
    );
    let unknown_merchant = || {
        Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat knows no merchant {mch_id}: {said}"),
            format!("copy the merchant number from {PAY_MERCHANT_INFO} into wechat.mch_id"),
        )
        .zh(format!("微信不认识商户号 {mch_id}：{said}"))
        .zh_fix(format!("从 {PAY_MERCHANT_INFO} 复制商户号到 wechat.mch_id"))
    };
    let clock_fix_zh = "本机时钟不准：打开 NTP（timedatectl set-ntp true），然后再运行一次 doctor";
    match (probe.status, probe.code.as_str()) {
        (404, "ORDER_NOT_EXIST") | (200..=299, _) if verified => Check::passed(
            CODE_V3_REQUEST,
            REQUEST,
            format!(
                "WeChat accepted mchid {mch_id}, merchant_serial {serial} and merchant_key_file (a signed query of a \
                 made-up order: {}, reply verified)",
                said.trim()
            ),
        )
        .zh(format!(
            "微信接受了商户号 {mch_id}、merchant_serial {serial} 和 merchant_key_file（签名查询编造的订单：{}，回复已验证）",
            said.trim()
        )),
        (404, "ORDER_NOT_EXIST") | (200..=299, _) => Check::unproved(
            CODE_V3_REQUEST,
            REQUEST,
            format!("the reply says {}, but its signature did not verify (see the next line)", said.trim()),
            None,
        )
        .zh(format!("回复为 {}，但其签名未通过验证（见下一行）", said.trim())),
        (401, _) if probe.message.contains("序列号") => Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat knows no API certificate {serial} of merchant {mch_id}: {said}"),
            certificate_fix,
        )
        .zh(format!("微信不认识商户 {mch_id} 的 API 证书 {serial}：{said}"))
        .zh_fix(certificate_fix_zh),
        (401, _) if probe.message.contains("商户号") => unknown_merchant(),
        (401, _) if probe.message.contains("时间戳") => Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat refused the request's time: {said}"),
            "this machine's clock is wrong: turn on NTP (timedatectl set-ntp true) and run the doctor again".to_owned(),
        )
        .zh(format!("微信拒绝了请求的时间：{said}"))
        .zh_fix(clock_fix_zh),
        (401, _) if probe.message.contains("签名错误") => Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!(
                "WeChat knows certificate {serial} but the signature does not verify with its key: merchant_key_file \
                 is not that certificate's private key ({said})"
            ),
            certificate_fix,
        )
        .zh(format!(
            "微信认识证书 {serial}，但签名无法用它的公钥验证：merchant_key_file 不是该证书的私钥（{said}）"
        ))
        .zh_fix(certificate_fix_zh),
        (400, "MCH_NOT_EXISTS") => unknown_merchant(),
        (500..=599, _) => Check::unproved(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat had an error ({said}): not proved"),
            Some(format!(
                "run the doctor again; if it repeats, check wechat.mch_id and wechat.merchant_serial at \
                 {PAY_API_CERTIFICATE} (WeChat has answered SYSTEM_ERROR to a wrong serial)"
            )),
        )
        .zh(format!("微信出错了（{said}）：未能证明"))
        .zh_fix(format!(
            "再运行一次 doctor；如果重复出现，请在 {PAY_API_CERTIFICATE} 检查 wechat.mch_id 和 wechat.merchant_serial（微信曾对\
             错误的序列号回复 SYSTEM_ERROR）"
        )),
        _ => Check::failed(
            CODE_V3_REQUEST,
            REQUEST,
            format!("WeChat refused the request: {said}"),
            format!(
                "check wechat.mch_id, wechat.merchant_serial and wechat.merchant_key_file at {PAY_API_CERTIFICATE}"
            ),
        )
        .zh(format!("微信拒绝了请求：{said}"))
        .zh_fix(format!(
            "在 {PAY_API_CERTIFICATE} 检查 wechat.mch_id、wechat.merchant_serial 和 wechat.merchant_key_file"
        )),
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
    let public_key_fix_zh =
        format!("在 {PAY_PUBLIC_KEY} 下载本商户的公钥：pub_key.pem 填入 wechat.public_key_file，公钥ID 填入 wechat.public_key_id");
    let base_url_fix_zh =
        "把 wechat.pay_base_url 设为微信的主机（https://api.mch.weixin.qq.com，默认值），中间不要有改写回复的代理";
    let clock_fix_zh = "本机时钟不准：打开 NTP（timedatectl set-ntp true），然后再运行一次 doctor";
    match &probe.verified {
        None if probe.status == 401 => Check::unproved(
            CODE_V3_REPLY,
            REPLY,
            "WeChat does not sign its answer to a request it refused: the WeChat Pay public key / platform \
             certificates were not proved",
            Some("fix the request signature above, then run the doctor again".into()),
        )
        .zh("微信不对它拒绝的请求的回复签名：微信支付公钥 / 平台证书未能证明")
        .zh_fix("先改正上面的请求签名，然后再运行一次 doctor"),
        None => Check::failed(
            CODE_V3_REPLY,
            REPLY,
            format!("the reply (HTTP {}) carries no WeChat signature", probe.status),
            "make wechat.pay_base_url WeChat's host (https://api.mch.weixin.qq.com, the default), with nothing in \
             between that changes replies"
                .to_owned(),
        )
        .zh(format!("回复（HTTP {}）没有微信的签名", probe.status))
        .zh_fix(base_url_fix_zh),
        Some(Ok(())) => {
            let from_file = keys.public_key.as_ref().is_some_and(|k| k.file.is_some());
            let (by, by_zh) = match (configured_id == Some(serial), from_file) {
                (true, true) => (
                    format!("the WeChat Pay public key {serial} (wechat.public_key_file)"),
                    format!("微信支付公钥 {serial}（wechat.public_key_file）"),
                ),
                (true, false) => (format!("the WeChat Pay public key {serial}"), format!("微信支付公钥 {serial}")),
                (false, _) => (format!("platform certificate {serial}"), format!("平台证书 {serial}")),
            };
            Check::passed(CODE_V3_REPLY, REPLY, format!("WeChat's reply verified with {by}"))
                .zh(format!("微信的回复已用{by_zh}验证"))
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
            )
            .zh(format!(
                "微信用公钥 {signed_by} 为本商户的回复签名，而不是 wechat.public_key_id {id}：配置的公钥属于另一个商户"
            ))
            .zh_fix(public_key_fix_zh),
            (true, None) => Check::failed(
                CODE_V3_REPLY,
                REPLY,
                format!(
                    "WeChat signs this merchant's replies with its public key {signed_by}, and PayBridge has only \
                     platform certificates: the switch to the WeChat Pay public key has begun"
                ),
                format!("{public_key_fix}; keep platform_certificates = true until the switch is complete"),
            )
            .zh(format!(
                "微信用它的公钥 {signed_by} 为本商户的回复签名，而 PayBridge 只有平台证书：切换到微信支付公钥已经开始"
            ))
            .zh_fix(format!("{public_key_fix_zh}；在切换完成之前保留 platform_certificates = true")),
            // Certificate mode, and the download failed: the APIv3 key line says why.
            (false, _) if keys.platform_certificates => Check::unproved(
                CODE_V3_REPLY,
                REPLY,
                format!(
                    "WeChat signs with platform certificate {signed_by}, which PayBridge could not download and \
                     decrypt (see the APIv3 key line)"
                ),
                None,
            )
            .zh(format!("微信用平台证书 {signed_by} 签名，PayBridge 未能下载并解密它（见 APIv3 密钥一行）")),
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
            )
            .zh(format!(
                "微信用平台证书 {signed_by} 为本商户的回复签名，PayBridge 没有它：本商户尚未（完全）切换到微信支付公钥"
            ))
            .zh_fix(format!(
                "设置 wechat.platform_certificates = true（切换期间同时保留公钥），或在 {PAY_PUBLIC_KEY} 完成切换"
            )),
        },
        Some(Err(VerifyError::BadSignature(signed_by))) => Check::failed(
            CODE_V3_REPLY,
            REPLY,
            format!(
                "the reply is signed under {signed_by} but does not verify with wechat.public_key_file: the file is \
                 not that id's key (another merchant's public key)"
            ),
            public_key_fix,
        )
        .zh(format!(
            "回复以 {signed_by} 签名，但无法用 wechat.public_key_file 验证：该文件不是这个 ID 的公钥（另一个商户的公钥）"
        ))
        .zh_fix(public_key_fix_zh),
        Some(Err(VerifyError::Stale(skew))) => Check::failed(
            CODE_V3_REPLY,
            REPLY,
            format!("WeChat's timestamp is {skew} s from this machine's clock"),
            "this machine's clock is wrong: turn on NTP (timedatectl set-ntp true) and run the doctor again".to_owned(),
        )
        .zh(format!("微信的时间戳与本机时钟相差 {skew} 秒"))
        .zh_fix(clock_fix_zh),
        Some(Err(VerifyError::Probe)) => Check::unproved(
            CODE_V3_REPLY,
            REPLY,
            "WeChat sent one of its deliberate signature probes (refused, as it must be)",
            Some("run the doctor again".into()),
        )
        .zh("微信发来了它故意的签名探测（已拒绝，这是应该的）")
        .zh_fix("再运行一次 doctor"),
        Some(Err(e @ VerifyError::Missing(_))) => Check::failed(
            CODE_V3_REPLY,
            REPLY,
            format!("{e}: the reply is not WeChat's"),
            "make wechat.pay_base_url WeChat's host (https://api.mch.weixin.qq.com, the default)".to_owned(),
        )
        .zh(format!("{e}：回复不是微信发出的"))
        .zh_fix(base_url_fix_zh),
    }
}

/// Downloads the platform certificates, which proves the APIv3 key (they
/// come encrypted with it); in certificate mode, trusts them for the query.
async fn certificates(client: &V3Client, keys: &V3Keys) -> Check {
    let wrong_key = DecryptError::Authentication.to_string();
    let public_key_mode = !keys.platform_certificates;
    let first_notify = format!(
        "the first notify proves it; one PayBridge cannot decrypt is refused with \"check wechat.apiv3_key\" in the \
         log (then set it again at {PAY_APIV3_KEY}, and the same in wechat.apiv3_key)"
    );
    let first_notify_zh = format!(
        "第一笔支付通知会证明它；PayBridge 无法解密的通知会被拒绝，日志中写着 \"check wechat.apiv3_key\"（那时请在 \
         {PAY_APIV3_KEY} 重新设置，并把同样的值填入 wechat.apiv3_key）"
    );
    match client.certificates(&keys.apiv3_key).await {
        Ok(certificates) if !certificates.is_empty() => {
            let serials = certificates.iter().map(|c| c.serial.as_str()).collect::<Vec<_>>().join(", ");
            let (kept, kept_zh) = match public_key_mode {
                // PayBridge verifies with the public key: the certificates are only proof.
                true => ("; WeChat still keeps them for this merchant, PayBridge verifies with the public key", "；微信仍为本商户保留它们，PayBridge 用公钥验证"),
                false => ("", ""),
            };
            let detail = format!("decrypted the platform certificate list WeChat sent with wechat.apiv3_key ({serials}){kept}");
            let detail_zh = format!("已用 wechat.apiv3_key 解密微信发来的平台证书列表（{serials}）{kept_zh}");
            if !public_key_mode {
                client.trust().set_certificates(certificates, crate::clock::now_ms() / 1000);
            }
            Check::passed(CODE_APIV3_KEY, APIV3_KEY, detail).zh(detail_zh)
        }
        Ok(_) => Check::unproved(CODE_APIV3_KEY, APIV3_KEY, "WeChat sent no platform certificate to decrypt", Some(first_notify))
            .zh("微信没有发来可解密的平台证书")
            .zh_fix(first_notify_zh),
        Err(WechatError::BadReply(message)) if message.contains(&wrong_key) => Check::failed(
            CODE_APIV3_KEY,
            APIV3_KEY,
            "the platform certificates WeChat sent do not decrypt with wechat.apiv3_key: it is not this merchant's \
             APIv3 key",
            format!(
                "set the APIv3 key again at {PAY_APIV3_KEY} and put the same 32 characters in wechat.apiv3_key (not \
                 the API v2 key)"
            ),
        )
        .zh("微信发来的平台证书无法用 wechat.apiv3_key 解密：它不是本商户的 APIv3 密钥")
        .zh_fix(format!(
            "在 {PAY_APIV3_KEY} 重新设置 APIv3 密钥，并把同样的 32 个字符填入 wechat.apiv3_key（不是 API v2 密钥）"
        )),
        // A merchant with the public key only (new since 2024, or its
        // certificates voided after the switch): nothing to decrypt yet.
        Err(WechatError::Business { code, description })
            if public_key_mode && (code == "RESOURCE_NOT_EXISTS" || code == "SYSTEM_ERROR") =>
        {
            let said = format!("{code} {}", clip(&description, 100));
            Check::unproved(
                CODE_APIV3_KEY,
                APIV3_KEY,
                format!(
                    "not provable before a payment: WeChat has no platform certificates for this merchant ({said}), \
                     and with the WeChat Pay public key it uses the APIv3 key only to encrypt notifies"
                ),
                Some(first_notify),
            )
            .zh(format!(
                "付款之前无法证明：微信没有本商户的平台证书（{said}），使用微信支付公钥时，微信只用 APIv3 密钥加密支付通知"
            ))
            .zh_fix(first_notify_zh)
        }
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
        )
        .zh(format!("微信没有本商户的平台证书（{code} {}）：它只使用微信支付公钥", clip(&description, 100)))
        .zh_fix(format!(
            "去掉 wechat.platform_certificates；用 {PAY_PUBLIC_KEY} 中的公钥设置 wechat.public_key_file 和 public_key_id"
        )),
        Err(e) => {
            let text = e.to_string();
            let why = clip(&text, 200);
            Check::unproved(
                CODE_APIV3_KEY,
                APIV3_KEY,
                format!("the platform certificates could not be downloaded ({why}): not proved"),
                Some("fix what the API v3 lines above say, then run the doctor again".into()),
            )
            .zh(format!("无法下载平台证书（{why}）：未能证明"))
            .zh_fix("先改正上面 API v3 各行所说的问题，然后再运行一次 doctor")
        }
    }
}
