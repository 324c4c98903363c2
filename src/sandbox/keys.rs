//! The sandbox's key material and credentials, in a leaf module: the
//! simulator signs and checks with them, and the configuration builds the
//! sandbox merchant from them, without either importing the other. They are
//! public, built in, and never accepted in live mode.

/// AppID of the simulated mini-program.
pub const APPID: &str = "wx5andb0x000000000";
/// AppSecret of the simulated mini-program.
pub const APP_SECRET: &str = "sandbox-app-secret-not-a-real-one";
/// Merchant number of the simulated merchant.
pub const MCH_ID: &str = "1900000109";
/// API key of the simulated merchant (32 characters, as WeChat's).
pub const MCH_KEY: &str = "SANDBOXsandboxSANDBOXsandbox0000";
/// The demo platform A: its id and key (public: sandbox only), and the
/// path of its webhook receiver on the simulator's port.
pub const DEMO_PLATFORM: &str = "demo-a";
/// The demo platform's key.
pub const DEMO_PLATFORM_KEY: &str = "sandbox-demo-platform-key-not-a-secret-0000";
/// Where the simulator receives the demo platform's webhooks.
pub const DEMO_WEBHOOK_PATH: &str = "/demo-a/webhook";

/// The sandbox merchant's API private key (PKCS#8).
pub const MERCHANT_PRIVATE_KEY: &str = include_str!("keys/merchant-private.pem");
/// Its public half, what the simulator verifies requests with.
pub const MERCHANT_PUBLIC_KEY: &str = include_str!("keys/merchant-public.pem");
/// The sandbox merchant's API certificate serial.
pub const MERCHANT_SERIAL: &str = "5A4D1C0E9B8F7A6D5C4B3A291807F6E5D4C3B2A1";
/// The simulated WeChat Pay public key and its id.
pub const WECHATPAY_PUBLIC_KEY: &str = include_str!("keys/wechatpay-public.pem");
/// The id of [`WECHATPAY_PUBLIC_KEY`].
pub const WECHATPAY_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0000000000000000000000000000000001";
/// The sandbox merchant's APIv3 key (32 characters), encrypting notifies.
pub const APIV3_KEY: &str = "SANDBOXapiv3KEYsandboxAPIV3key00";
