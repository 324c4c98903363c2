//! What the configuration's unit tests share: a valid live configuration
//! and loading with a given environment.

use std::path::Path;

use super::{Config, ConfigError};

/// A valid live configuration on API v2, with every required key.
pub const LIVE: &str = r#"
        data_dir = "/tmp/pb"
        [http]
        listen = "127.0.0.1:9000"
        [wechat]
        appid = "wxd930ea5d5a258f4f"
        app_secret = "s3cr3t"
        mch_id = "10000100"
        mch_key = "192006250b4c09247ec02edce69f6a2d"
        sign_type = "HMAC-SHA256"
        notify_url = "https://pay.example.com/pay/notify"
    "#;

/// `text` with `env` as the process environment.
pub fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    Config::from_toml(text, Path::new("test.toml"), env.into_iter())
}

/// The error `text` and `env` give, as printed.
pub fn error(text: &str, env: &[(&str, &str)]) -> String {
    load(text, env).unwrap_err().to_string()
}
