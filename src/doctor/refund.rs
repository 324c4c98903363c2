//! API v2 refunds' credentials: the merchant API certificate itself (whose
//! merchant, until when) and one mutual-TLS request to the refund host with
//! it, an empty one that WeChat can only refuse.
//!
//! The handshake proves that WeChat accepts the certificate, not whose it
//! is: WeChat documents no refusal of another merchant's certificate at the
//! TLS layer (only a missing one is known to get its HTML 400 page), so the
//! simulator accepts any certificate its CA issued, and the certificate's
//! own merchant ([`certificate`]) is what catches one of another merchant.

use super::places::PAY_API_CERTIFICATE;
use super::{unreachable, CODE_REFUND_CERT, CODE_REFUND_TLS};
use crate::checkup::Check;
use crate::secret::Secret;
use crate::wechat::client::{WechatClient, WechatError};

const CERTIFICATE: &str = "API certificate (v2 refunds)";
const HANDSHAKE: &str = "refund host (mutual TLS)";

/// Days before the end of validity from which the doctor warns.
pub const WARN_DAYS: i64 = 30;

/// What the certificate says of itself.
struct Subject {
    common_name: String,
    units: Vec<String>,
    not_after: i64,
}

/// The first certificate of `identity` (certificate, then key, PEM).
fn subject(identity: &Secret) -> Option<Subject> {
    use x509_parser::prelude::FromDer;
    // SECURITY: only the CERTIFICATE block is parsed; the key is never read here.
    let pem = x509_parser::pem::Pem::iter_from_buffer(identity.expose().as_bytes())
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&pem.contents).ok()?;
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue| attr.as_str().ok().map(str::to_owned);
    let subject = cert.subject();
    let common_name = subject.iter_common_name().find_map(text).unwrap_or_default();
    let units = subject.iter_organizational_unit().filter_map(text).collect();
    Some(Subject { common_name, units, not_after: cert.validity().not_after.timestamp() })
}

/// `YYYY-MM-DD` of unix seconds.
fn day(secs: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{}-{:02}-{:02}", at.year(), u8::from(at.month()), at.day())
}

/// The certificate's merchant and validity at `now_secs`.
pub(super) fn certificate(identity: &Secret, mch_id: &str, now_secs: i64) -> Check {
    let renew = format!(
        "apply for a new API certificate at {PAY_API_CERTIFICATE} and replace apiclient_cert.pem and \
         apiclient_key.pem (wechat.client_cert_file, client_key_file, or client_p12_file)"
    );
    let renew_zh = format!(
        "在 {PAY_API_CERTIFICATE} 申请新的 API 证书，替换 apiclient_cert.pem 和 apiclient_key.pem（wechat.client_cert_file、\
         client_key_file 或 client_p12_file）"
    );
    let Some(subject) = subject(identity) else {
        return Check::failed(CODE_REFUND_CERT, CERTIFICATE, "the client certificate does not parse", renew)
            .zh("客户端证书无法解析")
            .zh_fix(renew_zh);
    };
    let for_merchant = subject.common_name == mch_id || subject.units.iter().any(|u| u == mch_id);
    if !for_merchant {
        return Check::failed(
            CODE_REFUND_CERT,
            CERTIFICATE,
            format!(
                "the certificate is merchant {:?}'s (CN {:?}, OU {:?}), not {mch_id}'s",
                subject.common_name, subject.common_name, subject.units
            ),
            format!("use merchant {mch_id}'s apiclient_cert.pem and apiclient_key.pem ({PAY_API_CERTIFICATE})"),
        )
        .zh(format!(
            "该证书属于商户 {:?}（CN {:?}，OU {:?}），不属于 {mch_id}",
            subject.common_name, subject.common_name, subject.units
        ))
        .zh_fix(format!("使用商户 {mch_id} 的 apiclient_cert.pem 和 apiclient_key.pem（{PAY_API_CERTIFICATE}）"));
    }
    let days_left = (subject.not_after - now_secs).div_euclid(86_400);
    let until = day(subject.not_after);
    match days_left {
        d if subject.not_after <= now_secs => Check::failed(
            CODE_REFUND_CERT,
            CERTIFICATE,
            format!("merchant {mch_id}'s certificate expired on {until} ({} days ago): refunds fail", -d),
            renew,
        )
        .zh(format!("商户 {mch_id} 的证书已于 {until} 过期（{} 天前）：退款会失败", -d))
        .zh_fix(renew_zh),
        d if d < WARN_DAYS => Check::unproved(
            CODE_REFUND_CERT,
            CERTIFICATE,
            format!("merchant {mch_id}'s certificate expires on {until}, in {d} days"),
            Some(renew),
        )
        .zh(format!("商户 {mch_id} 的证书将于 {until} 过期，还剩 {d} 天"))
        .zh_fix(renew_zh),
        _ => Check::passed(CODE_REFUND_CERT, CERTIFICATE, format!("merchant {mch_id}'s, valid until {until}"))
            .zh(format!("属于商户 {mch_id}，有效期至 {until}")),
    }
}

/// One mutual-TLS request to the refund host.
pub(super) async fn handshake(client: &WechatClient, host: &str) -> Check {
    let refused = format!(
        "WeChat accepts only a current certificate of this merchant: check the line above, or download a new one at \
         {PAY_API_CERTIFICATE}"
    );
    let refused_zh = format!("微信只接受本商户当前有效的证书：请看上一行，或在 {PAY_API_CERTIFICATE} 下载新证书");
    match client.probe_refund_host().await {
        Ok((200, Some(message))) => Check::passed(
            CODE_REFUND_TLS,
            HANDSHAKE,
            format!("{host} accepted the API certificate in a mutual-TLS handshake (an empty request: {message})"),
        )
        .zh(format!("{host} 在双向 TLS 握手中接受了 API 证书（一个空请求：{message}）")),
        Ok((status, _)) => Check::failed(
            CODE_REFUND_TLS,
            HANDSHAKE,
            format!("{host} answered HTTP {status}, not WeChat's reply: the certificate was not accepted"),
            refused,
        )
        .zh(format!("{host} 回复 HTTP {status}，不是微信的回复：证书未被接受"))
        .zh_fix(refused_zh),
        Err(WechatError::Transport(why)) if why.contains("alert") || why.contains("certificate") => Check::failed(
            CODE_REFUND_TLS,
            HANDSHAKE,
            format!("{host} refused the API certificate: {}", crate::text::clip(&why, 200)),
            refused,
        )
        .zh(format!("{host} 拒绝了 API 证书：{}", crate::text::clip(&why, 200)))
        .zh_fix(refused_zh),
        Err(e) => unreachable(CODE_REFUND_TLS, HANDSHAKE, host, &e),
    }
}
