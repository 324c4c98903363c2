//! The mini-program login: one `jscode2session` with a code that cannot be
//! valid. WeChat checks the AppID, then the AppSecret, then the code, so
//! "invalid code" (40029) proves the first two; "invalid appsecret" (40125)
//! and "invalid appid" (40013) say which one is wrong.

use super::places::MP_DEVELOPER_ID;
use super::{unreachable, CODE_LOGIN};
use crate::checkup::Check;
use crate::text::clip;
use crate::wechat::client::{WechatClient, WechatError};

/// The code sent: no `wx.login` issues one like it, so no user is logged in.
pub(super) fn impossible_code() -> String {
    format!("invalid-code-paybridge-doctor-{}", &crate::wechat::nonce_str()[..8])
}

/// Checks `appid` and its AppSecret with one call.
pub(super) async fn check(client: &WechatClient, appid: &str) -> Check {
    let name = format!("mini-program login ({appid})");
    let name = name.as_str();
    match client.jscode2session(&impossible_code()).await {
        Err(WechatError::Login { errcode: 40029, .. }) => Check::passed(
            CODE_LOGIN,
            name,
            "WeChat accepted wechat.appid and wechat.app_secret (jscode2session of a made-up code: 40029 invalid code)",
        )
        .zh("微信接受了 wechat.appid 和 wechat.app_secret（用编造的 code 调用 jscode2session：40029 invalid code）"),
        Ok(_) => Check::passed(CODE_LOGIN, name, "WeChat accepted wechat.appid and wechat.app_secret")
            .zh("微信接受了 wechat.appid 和 wechat.app_secret"),
        Err(WechatError::Login { errcode: 40125, errmsg }) => Check::failed(
            CODE_LOGIN,
            name,
            format!("WeChat refused wechat.app_secret: 40125 {}", clip(&errmsg, 120)),
            format!(
                "copy the AppSecret of {appid} from {MP_DEVELOPER_ID} → AppSecret(小程序密钥) (reset it if nobody has \
                 it; the old one stops working) into wechat.app_secret; not the merchant's API key"
            ),
        )
        .zh(format!("微信拒绝了 wechat.app_secret：40125 {}", clip(&errmsg, 120)))
        .zh_fix(format!(
            "从 {MP_DEVELOPER_ID} → AppSecret(小程序密钥) 复制 {appid} 的 AppSecret 到 wechat.app_secret（无人保存时可重置，\
             旧的随即失效）；不是商户的 API 密钥"
        )),
        Err(WechatError::Login { errcode: 40013, errmsg }) => Check::failed(
            CODE_LOGIN,
            name,
            format!("WeChat knows no mini-program {appid}: 40013 {}", clip(&errmsg, 120)),
            format!(
                "copy the mini-program's AppID from {MP_DEVELOPER_ID} → AppID(小程序ID) into wechat.appid (the \
                 payment mini-program B, not an official account's or mini-program A's)"
            ),
        )
        .zh(format!("微信不认识小程序 {appid}：40013 {}", clip(&errmsg, 120)))
        .zh_fix(format!(
            "从 {MP_DEVELOPER_ID} → AppID(小程序ID) 复制小程序的 AppID 到 wechat.appid（支付用的小程序 B，不是公众号或小程序 A 的）"
        )),
        Err(WechatError::Login { errcode, errmsg }) if errcode == -1 || errcode == 45011 => Check::unproved(
            CODE_LOGIN,
            name,
            format!("WeChat was busy ({errcode} {}): AppID and AppSecret not proved", clip(&errmsg, 120)),
            Some("run the doctor again in a minute".into()),
        )
        .zh(format!("微信繁忙（{errcode} {}）：AppID 和 AppSecret 未能证明", clip(&errmsg, 120)))
        .zh_fix("一分钟后再运行一次 doctor"),
        Err(WechatError::Login { errcode, errmsg }) => Check::failed(
            CODE_LOGIN,
            name,
            format!("WeChat refused the login: {errcode} {}", clip(&errmsg, 120)),
            format!("look errcode {errcode} up in WeChat's jscode2session documentation; check {MP_DEVELOPER_ID}"),
        )
        .zh(format!("微信拒绝了登录：{errcode} {}", clip(&errmsg, 120)))
        .zh_fix(format!("在微信 jscode2session 文档中查 errcode {errcode}；检查 {MP_DEVELOPER_ID}")),
        Err(e) => unreachable(CODE_LOGIN, name, "WeChat's login host (wechat.sns_base_url)", &e),
    }
}
