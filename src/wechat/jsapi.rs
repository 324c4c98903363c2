//! The "second signature": the parameters `wx.requestPayment` takes, the
//! same five for both API versions.
//!
//! In v2, `paySign` is the v2 signature over exactly `appId`, `nonceStr`,
//! `package`, `signType` and `timeStamp` (note the camel case, and that
//! `appId` is signed but not passed to `wx.requestPayment`); `signType` must
//! equal the `sign_type` of the unified order. In v3 it is the merchant's
//! RSA signature over four lines, and `signType` is `RSA`.

use super::sign::{fields, sign, SignType};
use super::v3::crypto::{pay_sign_message, MerchantKey};
use crate::secret::Secret;

impl From<SignType> for PaySignType {
    fn from(t: SignType) -> PaySignType {
        match t {
            SignType::Md5 => PaySignType::Md5,
            SignType::HmacSha256 => PaySignType::HmacSha256,
        }
    }
}

pub use crate::domain::{PayParams, PaySignType};

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
        PayParams { app_id: appid.to_owned(), time_stamp, nonce_str, package, sign_type: sign_type.into(), pay_sign }
    }

    /// v3: signs the parameters for `prepay_id` with the merchant's RSA key.
    pub fn rsa(appid: &str, prepay_id: &str, key: &MerchantKey, time_stamp: i64, nonce_str: String) -> PayParams {
        let package = format!("prepay_id={prepay_id}");
        let time_stamp = time_stamp.to_string();
        let pay_sign = key.sign(pay_sign_message(appid, &time_stamp, &nonce_str, &package).as_bytes());
        PayParams { app_id: appid.to_owned(), time_stamp, nonce_str, package, sign_type: PaySignType::Rsa, pay_sign }
    }

    /// v2: checks `pay_sign` against the other fields, as WeChat's client does.
    pub fn verify(&self, key: &Secret) -> bool {
        let prepay_id = self.package.strip_prefix("prepay_id=").unwrap_or("");
        let (Ok(ts), Some(sign_type)) = (self.time_stamp.parse(), SignType::parse(self.sign_type.as_str())) else {
            return false;
        };
        let again = PayParams::new(&self.app_id, prepay_id, key, sign_type, ts, self.nonce_str.clone());
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
        let h = PayParams::new(
            &p.app_id,
            "wx2017033010242291fcfe0db70013231072",
            &key,
            SignType::HmacSha256,
            1490840662,
            p.nonce_str.clone(),
        );
        // Checked with Python's hmac module. (WECHATPAY-V2.md §8.2 prints
        // 15FC5558…5A06 for these inputs, which neither signType reproduces.)
        assert_eq!(h.pay_sign, "FB9D1EFB5C509131BBFF729F88A99CA2DE9B724D06D3B3262832A53083862BC0");
        assert!(!PayParams { nonce_str: "other".into(), ..p }.verify(&key));
    }
}
