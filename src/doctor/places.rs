//! Where each credential is set or shown at WeChat: the pages of the
//! mini-program console (mp.weixin.qq.com) and the merchant platform
//! (pay.weixin.qq.com), named as their menus name them, so every fix the
//! doctor prints sends the merchant to the same place.

/// The mini-program's AppID and AppSecret.
pub const MP_DEVELOPER_ID: &str = "mp.weixin.qq.com → 开发管理 → 开发设置 → 开发者ID";
/// The merchant number.
pub const PAY_MERCHANT_INFO: &str = "pay.weixin.qq.com → 账户中心 → 商户信息 → 微信支付商户号";
/// The AppIDs bound to the merchant.
pub const PAY_APPID_BINDING: &str = "pay.weixin.qq.com → 产品中心 → AppID账号管理 → 关联AppID";
/// The API v2 key.
pub const PAY_APIV2_KEY: &str = "pay.weixin.qq.com → 账户中心 → API安全 → APIv2密钥 → 设置密钥";
/// The APIv3 key.
pub const PAY_APIV3_KEY: &str = "pay.weixin.qq.com → 账户中心 → API安全 → APIv3密钥 → 设置密钥";
/// The merchant API certificate: its serial, a new one.
pub const PAY_API_CERTIFICATE: &str = "pay.weixin.qq.com → 账户中心 → API安全 → 商户API证书 → 管理证书";
/// The WeChat Pay public key and its id, and the switch to it.
pub const PAY_PUBLIC_KEY: &str = "pay.weixin.qq.com → 账户中心 → API安全 → 微信支付公钥";
