//! API v2's refund notify payload, `req_info`: the refund's fields as XML
//! (root `<root>`), AES-256-ECB encrypted with the lower-case hex MD5 of the
//! API key (its 32 ASCII characters are the AES key), PKCS#7 padded, base64.
//!
//! The outer message is not signed, and ECB has no integrity check: what
//! makes a notify believable is that it decrypts with the merchant's key to
//! well-formed XML with valid padding, and then that its refund is one
//! PayBridge asked for, for the same order and amount (checked by the caller).

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use base64::Engine as _;
use md5::{Digest, Md5};

use super::sign::Fields;
use crate::secret::Secret;

fn cipher(mch_key: &Secret) -> aes::Aes256 {
    let key = hex::encode(Md5::digest(mch_key.expose().as_bytes()));
    aes::Aes256::new_from_slice(key.as_bytes()).expect("32 hex characters are an AES-256 key")
}

/// Decrypts `req_info` into the refund's fields; an error says why it is
/// not a refund notify from WeChat (never what it contained).
pub fn decrypt(req_info: &str, mch_key: &Secret) -> Result<Fields, String> {
    let mut data = base64::engine::general_purpose::STANDARD
        .decode(req_info.trim())
        .map_err(|_| "req_info is not base64".to_owned())?;
    if data.is_empty() || data.len() % 16 != 0 {
        return Err("req_info is not whole AES blocks".into());
    }
    let cipher = cipher(mch_key);
    for block in data.chunks_exact_mut(16) {
        cipher.decrypt_block(block.into());
    }
    // PKCS#7 (WeChat's SDKs also accept pads up to 32): every pad byte equal.
    let pad = usize::from(*data.last().expect("not empty"));
    if !(1..=32).contains(&pad) || pad > data.len() || !data[data.len() - pad..].iter().all(|&b| b as usize == pad) {
        return Err("req_info does not decrypt with this merchant's API key".into());
    }
    data.truncate(data.len() - pad);
    super::xml::parse_with_root(&data, "root")
        .map_err(|_| "req_info does not decrypt with this merchant's API key to WeChat's XML".to_owned())
}

/// Encrypts refund fields as WeChat does (the simulator's refund notifies).
pub fn encrypt(fields: &Fields, mch_key: &Secret) -> String {
    let xml = super::xml::write(fields).replacen("<xml>", "<root>", 1);
    let xml = match xml.strip_suffix("</xml>") {
        Some(body) => format!("{body}</root>"),
        None => xml,
    };
    let mut data = xml.into_bytes();
    let pad = 16 - data.len() % 16;
    data.extend(std::iter::repeat_n(pad as u8, pad));
    let cipher = cipher(mch_key);
    for block in data.chunks_exact_mut(16) {
        cipher.encrypt_block(block.into());
    }
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WECHATPAY-V2.md §7.4 (wechatpy's test vector).
    const KEY: &str = "OF4Ne3znh8KqL0V4NqmALQa0uXMYKcEk";
    const REQ_INFO: &str = "51A27s9LxbaEv52nBOrqa0FCs3HVIM31Wc3BpNqSCP5MQlS8HL1Vl7mZ21043B7PZy7adtOZGtZv44lGl0U8JXlVFL4Ltxsw6+pACjZBB0Qi1LUDjFlP2IyTxYX4eC57kxnCphDdIyRkU67kOWW/HN/efggTUlaPJkoL5kVe9Y1MZF55IHR4lwGI7WtVLtxATX1tkAVZF+/ri0WlPXo9+GkqeB2/id6Ozw09Tqp8C/TKbmKBpRhTCRU2TzfQoLa6fjbgETFHJ795aEMyUZPQYbbsz6U9Rj9lUzEh8+Oc8KYTXa9zVk+nnFr82+yjffb3d36ylTe0y/VmYf90rf9cbiJQdM00zZ8Qa99SlMTs2wjOO4Mi4Btlg1PebsLF8TkqbSZkRJDGs61UunUB8Km1b/VeBxXuv4D3H7DiVZ9Fj7lq2j07zFDpxxlhhen7kZvMWWO3lrfFpA9c4eFOqfF9SxcU9nBmHfDD1g/dsrMl6+a71xQHJ/gn80fZOefUBv92ggqutsuJ4gd4OqkmO0XUs8e4XQyLpra+LvpmahsU5lBIZuQcMq3FHrqe8hXTfp3+3qym2wGfvPI75jx41VZwmBQy9izB1Id+A5lUeXC5QJy+ryDu/dWkhB+aMjkElaI/Epmcc/IEPaI73W6Hc58hNednOM536rPnn+GDc98PdGszpLTjmaZSu8dtqwPaym66yRqFQowzFoBbooik57iHUFBCeWya7XcXYL9WKhRF3uIZM+Kfv9/Zs2pF+w9/EJpltuzPpT1GP2VTMSHz45zwphFlS2lX8wHyZ+k9n2dptzQqpOCPedt5iQAmAe1oNQMxNdPDH9g68x9UzWD1kfK/dPO+3NPAh0XG+io4x15fIknNf7JLjpAuWicMMzCdwC4hhqeYOzQ+pC9f2xJXi5YViNKIZY69oO8eoHYRitLZrHLgx3oB2zimmqX6BI+DMklKAzAqqgGmbFxcVTvxZB6cMCx+H7TTWXnjAG+6A3SrCcxg0l5+UB93pkAYR7SVJ+VaZoiBqlqnZvb7IM17n9XaaFntlzvbbFCIa7OnOQb5Lvw=";

    #[test]
    fn decrypts_the_vector() {
        let fields = decrypt(REQ_INFO, &Secret::new(KEY)).unwrap();
        assert_eq!(fields["out_refund_no"], "1234");
        assert_eq!(fields["out_trade_no"], "2020010418301551404339261814");
        assert_eq!(fields["refund_status"], "SUCCESS");
        assert_eq!(fields["refund_fee"], "1");
        assert_eq!(fields["refund_id"], "50300103182020010413419046597");
        assert_eq!(fields["refund_recv_accout"], "招商银行信用卡8915");
        assert_eq!(fields["success_time"], "2020-01-04 18:34:24");
        assert_eq!(fields.len(), 13);
    }

    #[test]
    fn round_trips_and_refuses_what_is_not_wechats() {
        let fields =
            crate::wechat::sign::fields([("out_refund_no", "R1"), ("refund_fee", "50"), ("refund_status", "SUCCESS")]);
        let key = Secret::new(KEY);
        let sealed = encrypt(&fields, &key);
        assert_eq!(decrypt(&sealed, &key).unwrap(), fields);
        let message = "req_info does not decrypt with this merchant's API key";
        assert!(decrypt(&sealed, &Secret::new("another key")).unwrap_err().starts_with(message));
        // A flipped byte garbles its block (ECB): the XML or the padding breaks.
        let mut bytes = base64::engine::general_purpose::STANDARD.decode(REQ_INFO).unwrap();
        bytes[40] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert!(decrypt(&tampered, &key).unwrap_err().starts_with(message));
        assert_eq!(decrypt("not base64!", &key).unwrap_err(), "req_info is not base64");
        assert_eq!(decrypt("AAAA", &key).unwrap_err(), "req_info is not whole AES blocks");
    }
}
