//! What the WeChat Pay client needs to know: the merchant's ids, which API
//! (v2 or v3) with its keys, WeChat's hosts and the time limit. The protocol
//! layer owns these types; the configuration layer fills them from the file
//! and the environment, having read and checked every key at start-up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::sign::SignType;
use super::v3::crypto::{ApiV3Key, MerchantKey, PublicKey};
use crate::secret::Secret;

/// WeChat Pay's API host (v2 and v3).
pub const WECHAT_PAY_BASE_URL: &str = "https://api.mch.weixin.qq.com";
/// WeChat's mini-program login host.
pub const WECHAT_SNS_BASE_URL: &str = "https://api.weixin.qq.com";

/// `[wechat]`
#[derive(Debug, Clone)]
pub struct WechatConfig {
    /// The payment mini-program's AppID (mini-program B).
    pub appid: String,
    /// The mini-program's AppSecret, for `jscode2session`.
    pub app_secret: Secret,
    /// The merchant number bound to `appid`.
    pub mch_id: String,
    /// API v2 or v3, with the merchant's keys for it.
    pub api: PayApi,
    /// Base URL of the pay API (`/pay/unifiedorder`, `/v3/...`).
    pub pay_base_url: Url,
    /// Base URL of the login API (`/sns/jscode2session`).
    pub sns_base_url: Url,
    /// Where WeChat posts payment notifies; decided by the server, never the client.
    pub notify_url: Url,
    /// Time limit for one call to WeChat.
    pub timeout: Duration,
    /// API v2: the client certificate refunds need; `None` refuses them.
    pub refund_tls: Option<RefundTls>,
}

/// The API the merchant uses, with its keys.
#[derive(Debug, Clone)]
pub enum PayApi {
    /// API v2: XML, MD5 or HMAC-SHA256 with the API key.
    V2 {
        /// The 32-character merchant API key (APIv2 key) that signs every message.
        mch_key: Secret,
        /// Algorithm for unified orders, `paySign` and expected notifies.
        sign_type: SignType,
    },
    /// API v3: JSON, RSA signatures, AES-GCM notifies.
    V3(Arc<V3Keys>),
}

impl PayApi {
    /// `"v2"` or `"v3"`.
    pub fn version(&self) -> &'static str {
        match self {
            PayApi::V2 { .. } => "v2",
            PayApi::V3(_) => "v3",
        }
    }

    /// The merchant secret PayBridge derives its own tokens from (the
    /// payer's order-status token): the v2 API key, or the APIv3 key.
    pub fn token_secret(&self) -> &Secret {
        match self {
            PayApi::V2 { mch_key, .. } => mch_key,
            PayApi::V3(keys) => &keys.apiv3_key_text,
        }
    }
}

/// The keys of a v3 merchant, parsed.
#[derive(Debug)]
pub struct V3Keys {
    /// The APIv3 key, for AES-GCM (notifies, certificates).
    pub apiv3_key: ApiV3Key,
    /// The same key as text (32 characters), for [`PayApi::token_secret`].
    pub apiv3_key_text: Secret,
    /// The merchant API private key (`apiclient_key.pem`): signs every request and `paySign`.
    pub merchant_key: Arc<MerchantKey>,
    /// Where it was read from, for `check-config` and the admin page.
    pub merchant_key_file: Option<PathBuf>,
    /// The merchant API certificate's serial, upper-case hex.
    pub merchant_serial: String,
    /// The WeChat Pay public key and its id (`PUB_KEY_ID_…`), if configured.
    pub public_key: Option<WechatPayPublicKey>,
    /// Whether to download platform certificates (`/v3/certificates`).
    pub platform_certificates: bool,
}

/// The WeChat Pay public key.
#[derive(Debug, Clone)]
pub struct WechatPayPublicKey {
    /// `PUB_KEY_ID_…`, what WeChat puts in `Wechatpay-Serial`.
    pub id: String,
    /// The key.
    pub key: PublicKey,
    /// Where it was read from.
    pub file: Option<PathBuf>,
}

impl V3Keys {
    /// How WeChat is verified, as a code: `public_key`, `certificates` or `both`.
    pub fn key_mode_code(&self) -> &'static str {
        match (&self.public_key, self.platform_certificates) {
            (Some(_), true) => "both",
            (Some(_), false) => "public_key",
            (None, _) => "certificates",
        }
    }

    /// How WeChat is verified, for people: `public key`, `platform certificates`, or both.
    pub fn key_mode(&self) -> &'static str {
        match (&self.public_key, self.platform_certificates) {
            (Some(_), true) => "public key + platform certificates (migration)",
            (Some(_), false) => "WeChat Pay public key",
            (None, _) => "platform certificates",
        }
    }
}

/// WeChat's host for the mutual-TLS API.
pub const SECAPI_BASE_URL: &str = "https://api.mch.weixin.qq.com";

/// Mutual TLS for API v2 refunds.
#[derive(Debug, Clone)]
pub struct RefundTls {
    /// The merchant's API certificate, then its private key, PEM.
    pub identity_pem: Secret,
    /// Where `/secapi/...` is: WeChat's host (the simulator's in tests).
    pub base_url: Url,
    /// CA certificates (PEM) trusted for it besides the usual roots: only
    /// the simulator needs one.
    pub ca_pem: Option<String>,
}
