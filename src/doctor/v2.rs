//! The API v2 key: one signed `orderquery` for an order number that cannot
//! exist. WeChat checks the merchant, then the signature, then looks for
//! the order, so "order does not exist" (`ORDERNOTEXIST`, in a reply whose
//! signature verified with the same key) proves `mch_id` and `mch_key`
//! with the configured `sign_type`; `签名错误` means the key is wrong.

use super::places::{PAY_APIV2_KEY, PAY_APPID_BINDING, PAY_MERCHANT_INFO};
use super::{unreachable, CODE_V2_KEY};
use crate::checkup::Check;
use crate::text::clip;
use crate::wechat::client::{WechatClient, WechatError};
use crate::wechat::sign::SignType;

/// An order number no order has: PayBridge's numbers start `PB`.
pub(super) fn impossible_order() -> String {
    format!("DOCTOR{}", &crate::wechat::nonce_str()[..20])
}

/// Checks the merchant number and the API v2 key with one call.
pub(super) async fn check(client: &WechatClient, appid: &str, mch_id: &str, sign_type: SignType) -> Check {
    let algorithm = sign_type.as_str();
    let name = format!("API v2 key ({algorithm})");
    let name = name.as_str();
    let key_fix = format!(
        "set a new API v2 key at {PAY_APIV2_KEY} (32 letters and digits) and put the same in wechat.mch_key; it is \
         not the APIv3 key, and a key set on another merchant account does not work for {mch_id}"
    );
    let key_fix_zh = format!(
        "在 {PAY_APIV2_KEY} 设置新的 API v2 密钥（32 位字母和数字），并把同样的值填入 wechat.mch_key；它不是 APIv3 密钥，\
         在其他商户号上设置的密钥对 {mch_id} 无效"
    );
    let bind_fix_zh = format!(
        "在 {PAY_APPID_BINDING} 关联小程序（再到 mp.weixin.qq.com → 功能 → 微信支付 → 商户号管理 确认），或改正 wechat.appid / \
         wechat.mch_id"
    );
    let mch_fix_zh = format!("从 {PAY_MERCHANT_INFO} 复制商户号到 wechat.mch_id");
    match client.order_query(&impossible_order()).await {
        Err(WechatError::Business { code, .. }) if code == "ORDERNOTEXIST" => Check::passed(
            CODE_V2_KEY,
            name,
            format!(
                "WeChat accepted mch_id {mch_id} and wechat.mch_key signed with {algorithm} (orderquery of a made-up \
                 order: ORDERNOTEXIST, reply signature verified)"
            ),
        )
        .zh(format!(
            "微信接受了商户号 {mch_id} 和用 {algorithm} 签名的 wechat.mch_key（查询编造的订单号：ORDERNOTEXIST，回复签名已验证）"
        )),
        Ok(_) => Check::passed(
            CODE_V2_KEY,
            name,
            format!("WeChat accepted mch_id {mch_id} and wechat.mch_key ({algorithm}); reply signature verified"),
        )
        .zh(format!("微信接受了商户号 {mch_id} 和 wechat.mch_key（{algorithm}）；回复签名已验证")),
        Err(WechatError::ReturnFail(message)) | Err(WechatError::Business { description: message, .. })
            if message.contains("签名错误") || message.contains("SIGNERROR") =>
        {
            Check::failed(
                CODE_V2_KEY,
                name,
                format!(
                    "WeChat refused an orderquery signed with wechat.mch_key ({algorithm}): {}; the key is not \
                     merchant {mch_id}'s API v2 key",
                    clip(&message, 100)
                ),
                key_fix,
            )
            .zh(format!(
                "微信拒绝了用 wechat.mch_key（{algorithm}）签名的 orderquery：{}；该密钥不是商户 {mch_id} 的 API v2 密钥",
                clip(&message, 100)
            ))
            .zh_fix(key_fix_zh)
        }
        Err(WechatError::Business { code, description }) if code == "SIGNERROR" => Check::failed(
            CODE_V2_KEY,
            name,
            format!("WeChat refused the signature ({algorithm}): SIGNERROR {}", clip(&description, 100)),
            key_fix,
        )
        .zh(format!("微信拒绝了签名（{algorithm}）：SIGNERROR {}", clip(&description, 100)))
        .zh_fix(key_fix_zh),
        Err(WechatError::Business { code, description })
            if code == "APPID_MCHID_NOT_MATCH" || code == "APPID_NOT_EXIST" =>
        {
            Check::failed(
                CODE_V2_KEY,
                name,
                format!("WeChat: {code} {}: {appid} is not bound to merchant {mch_id}", clip(&description, 100)),
                format!(
                    "bind the mini-program at {PAY_APPID_BINDING} (then confirm it in mp.weixin.qq.com → 功能 → 微信支付 \
                     → 商户号管理), or correct wechat.appid / wechat.mch_id"
                ),
            )
            .zh(format!("微信：{code} {}：{appid} 未关联商户号 {mch_id}", clip(&description, 100)))
            .zh_fix(bind_fix_zh)
        }
        Err(WechatError::ReturnFail(message)) if message.contains("mch_id") || message.contains("商户号") => {
            Check::failed(
                CODE_V2_KEY,
                name,
                format!("WeChat refused mch_id {mch_id}: {}", clip(&message, 100)),
                format!("copy the merchant number from {PAY_MERCHANT_INFO} into wechat.mch_id"),
            )
            .zh(format!("微信拒绝了商户号 {mch_id}：{}", clip(&message, 100)))
            .zh_fix(mch_fix_zh)
        }
        Err(WechatError::ReturnFail(message)) if message.contains("appid") => Check::failed(
            CODE_V2_KEY,
            name,
            format!("WeChat refused appid {appid} for merchant {mch_id}: {}", clip(&message, 100)),
            format!("bind the mini-program at {PAY_APPID_BINDING}, or correct wechat.appid / wechat.mch_id"),
        )
        .zh(format!("微信不接受商户号 {mch_id} 使用 appid {appid}：{}", clip(&message, 100)))
        .zh_fix(bind_fix_zh),
        Err(e @ WechatError::Business { .. }) if e.is_retryable() => Check::unproved(
            CODE_V2_KEY,
            name,
            format!("{e}: the key was not proved"),
            Some("run the doctor again in a minute".into()),
        )
        .zh(format!("{e}：密钥未能证明"))
        .zh_fix("一分钟后再运行一次 doctor"),
        Err(e @ (WechatError::BadSignature(_) | WechatError::WrongMerchant { .. })) => Check::failed(
            CODE_V2_KEY,
            name,
            format!("{e}: the reply did not come from WeChat for this merchant"),
            "make wechat.pay_base_url WeChat's host (https://api.mch.weixin.qq.com, the default) with nothing in \
             between that rewrites replies"
                .to_owned(),
        )
        .zh(format!("{e}：回复不是微信为本商户发出的"))
        .zh_fix("把 wechat.pay_base_url 设为微信的主机（https://api.mch.weixin.qq.com，默认值），中间不要有改写回复的代理"),
        Err(e @ (WechatError::ReturnFail(_) | WechatError::Business { .. } | WechatError::Login { .. })) => {
            Check::failed(
                CODE_V2_KEY,
                name,
                format!("{e}"),
                format!("check wechat.mch_id ({PAY_MERCHANT_INFO}) and wechat.mch_key ({PAY_APIV2_KEY})"),
            )
            .zh(format!("微信拒绝了请求：{e}"))
            .zh_fix(format!("检查 wechat.mch_id（{PAY_MERCHANT_INFO}）和 wechat.mch_key（{PAY_APIV2_KEY}）"))
        }
        Err(e) => unreachable(CODE_V2_KEY, name, "WeChat Pay (wechat.pay_base_url)", &e),
    }
}
