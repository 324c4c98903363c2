//! The "second signature": the parameters `wx.requestPayment` takes.
//!
//! `paySign` is the v2 signature over exactly `appId`, `nonceStr`, `package`,
//! `signType` and `timeStamp` (note the camel case, and that `appId` is signed
//! but not passed to `wx.requestPayment`). `signType` must equal the
//! `sign_type` of the unified order.

use serde::{Deserialize, Serialize};

use super::sign::{fields, sign, SignType};
use crate::secret::Secret;

/// What the mini-program passes to `wx.requestPayment`, plus `appId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayParams {
    /// The mini-program's AppID, signed but not passed to `wx.requestPayment`.
    pub app_id: String,
    /// Seconds since the epoch, as a string (WeChat wants a string).
    pub time_stamp: String,
    /// A random string of at most 32 characters.
    pub nonce_str: String,
    /// `prepay_id=<prepay_id>`.
    pub package: String,
    /// `MD5` or `HMAC-SHA256`, as used for the unified order.
    pub sign_type: SignType,
    /// The signature over the five fields above.
    pub pay_sign: String,
}

impl PayParams {
    /// Signs a new set of parameters for `prepay_id`.
    pub fn new(
        appid: &str,
        prepay_id: &str,
        key: &Secret,
        sign_type: SignType,
        time_stamp: i64,
        nonce_str: String,
    ) -> PayParams {
        let time_stamp = time_stamp.to_string();
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = sign(
            &fields([
                ("appId", appid),
                ("nonceStr", &nonce_str),
                ("package", &package),
                ("signType", sign_type.as_str()),
                ("timeStamp", &time_stamp),
            ]),
            key,
            sign_type,
        );
        PayParams { app_id: appid.to_owned(), time_stamp, nonce_str, package, sign_type, pay_sign }
    }

    /// Checks `pay_sign` against the other fields, as WeChat's client does.
    pub fn verify(&self, key: &Secret) -> bool {
        let prepay_id = self.package.strip_prefix("prepay_id=").unwrap_or("");
        let Ok(ts) = self.time_stamp.parse() else {
            return false;
        };
        let again = PayParams::new(&self.app_id, prepay_id, key, self.sign_type, ts, self.nonce_str.clone());
        again.package == self.package && again.pay_sign == self.pay_sign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_pay_sign_example() {
        let key = Secret::new("qazwsxedcrfvtgbyhnujmikolp111111");
        let p = PayParams::new(
            "wxd678efh567hg6787",
            "wx2017033010242291fcfe0db70013231072",
            &key,
            SignType::Md5,
            1490840662,
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS".into(),
        );
        assert_eq!(p.pay_sign, "22D9B4E54AB1950F51E0649E8810ACD6");
        assert!(p.verify(&key));
        let h = PayParams { sign_type: SignType::HmacSha256, ..p.clone() };
        let h = PayParams::new(
            &h.app_id,
            "wx2017033010242291fcfe0db70013231072",
            &key,
            h.sign_type,
            1490840662,
            h.nonce_str,
        );
        // Checked with Python's hmac module. (WECHATPAY-V2.md §8.2 prints
        // 15FC5558…5A06 for these inputs, which neither signType reproduces.)
        assert_eq!(h.pay_sign, "FB9D1EFB5C509131BBFF729F88A99CA2DE9B724D06D3B3262832A53083862BC0");
        assert!(!PayParams { nonce_str: "other".into(), ..p }.verify(&key));
    }
}
