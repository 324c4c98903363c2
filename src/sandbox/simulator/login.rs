//! The simulator's login, `GET /sns/jscode2session`: each code once, the
//! AppSecret checked, a stable openid per code (which the pay APIs then
//! accept) and a real-looking `session_key` PayBridge must never pass on.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::Simulator;
use crate::wechat::nonce_str;

impl Simulator {
    /// The openid this simulator issues for a login code: stable per code.
    pub fn openid_for(&self, code: &str) -> String {
        let digest = Sha256::digest(format!("{}:{code}", self.inner.config.appid));
        format!("o{}", &hex::encode(digest)[..27])
    }

    /// `GET /sns/jscode2session`: returns the JSON reply.
    pub fn jscode2session(&self, query: &HashMap<String, String>) -> serde_json::Value {
        let get = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
        let cfg = &self.inner.config;
        let error = |errcode: i64, errmsg: &str| {
            let rid = &nonce_str()[..8];
            serde_json::json!({ "errcode": errcode, "errmsg": format!("{errmsg}, rid: {rid}") })
        };
        if get("appid") != cfg.appid {
            return error(40013, "invalid appid");
        }
        if get("secret") != cfg.app_secret.expose() {
            return error(40125, "invalid appsecret");
        }
        if get("grant_type") != "authorization_code" {
            return error(40002, "invalid grant_type");
        }
        let code = get("js_code");
        if code.is_empty() || code.starts_with("invalid") {
            return error(40029, "invalid code");
        }
        if !self.inner.used_codes.lock().expect("codes lock").insert(code.to_owned()) {
            return error(40163, "code been used");
        }
        // A real session_key is returned, as WeChat does: PayBridge must drop it.
        let session_key = format!("SK{}", &nonce_str()[..22]);
        self.inner.session_keys.lock().expect("keys lock").push(session_key.clone());
        let openid = self.openid_for(code);
        self.inner.openids.lock().expect("openids lock").insert(openid.clone());
        serde_json::json!({ "openid": openid, "session_key": session_key })
    }

    /// Every `session_key` this simulator has issued.
    pub fn issued_session_keys(&self) -> Vec<String> {
        self.inner.session_keys.lock().expect("keys lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::SimulatorConfig;
    use super::*;
    use crate::secret::Secret;

    fn sim() -> Simulator {
        Simulator::new(SimulatorConfig::new(
            "wxd930ea5d5a258f4f",
            &Secret::new("s"),
            "10000100",
            &Secret::new("192006250b4c09247ec02edce69f6a2d"),
        ))
    }

    #[test]
    fn login_codes_are_single_use_and_checked() {
        let sim = sim();
        let q = |code: &str, secret: &str| {
            [
                ("appid", "wxd930ea5d5a258f4f"),
                ("secret", secret),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>()
        };
        let ok = sim.jscode2session(&q("c1", "s"));
        assert_eq!(ok["openid"], sim.openid_for("c1"));
        assert!(ok["session_key"].is_string());
        assert_eq!(sim.jscode2session(&q("c1", "s"))["errcode"], 40163);
        assert_eq!(sim.jscode2session(&q("c2", "wrong"))["errcode"], 40125);
        assert_eq!(sim.jscode2session(&q("invalid-1", "s"))["errcode"], 40029);
    }
}
