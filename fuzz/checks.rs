//! What each fuzz target checks, as plain functions: `cargo fuzz` runs them
//! under libFuzzer (`bash fuzz/run`), and `tests/fuzz_corpora.rs` runs every
//! file of the committed corpora through them as an ordinary test, so the
//! parsers' coverage stays in the test command without the fuzzer's build.
#![allow(dead_code)]

use paybridge::admin::{csv, OrderRow};
use paybridge::config::Config;
use paybridge::config::{Platform, Platforms};
use paybridge::http::admin::parse_login;
use paybridge::http::miniprogram::parse_unified_order;
use paybridge::http::platform::parse_create;
use paybridge::platform::{auth, token};
use paybridge::secret::Secret;
use paybridge::store::{Order, OrderContents};
use paybridge::wechat::bill;
use paybridge::wechat::sign::{self, SignType};
use paybridge::wechat::v3::crypto::{ApiV3Key, PublicKey};
use paybridge::wechat::v3::notify;
use paybridge::wechat::v3::verify::{SignedHeaders, Verifier};
use paybridge::wechat::xml;

/// WeChat's XML: any bytes parse or are refused, and what parses writes back
/// to the same fields.
pub fn xml(data: &[u8]) {
    if let Ok(fields) = xml::parse(data) {
        let written = xml::write(&fields);
        let again = xml::parse(written.as_bytes()).expect("what PayBridge writes, it reads");
        assert_eq!(again, fields, "a round trip changes nothing");
    }
}

/// Notify verification (v2): any body is parsed and its signature checked
/// under both algorithms without a panic; a forged body never verifies
/// unless it carries the right signature.
pub fn notify(data: &[u8]) {
    let key = Secret::new("192006250b4c09247ec02edce69f6a2d");
    let Ok(fields) = xml::parse(data) else { return };
    for accepted in [&[SignType::Md5][..], &[SignType::HmacSha256, SignType::Md5][..]] {
        if sign::verify(&fields, &key, accepted).is_ok() {
            // Only possible if the input carries the signature of its own fields.
            let given = fields.get("sign").expect("a verified notify has a sign");
            let expected: Vec<String> = accepted.iter().map(|t| sign::sign(&fields, &key, *t)).collect();
            assert!(expected.iter().any(|e| e.eq_ignore_ascii_case(given)));
        }
    }
}

/// The APIv3 key of WECHATPAY-V3.md's vector V12 (the seed's ciphertext).
const V3_KEY: &str = "WeChatPayV3SimulatorKey000000001";

/// Notify handling (API v3) on any input: the `Wechatpay-*` headers (the
/// input's first four lines) and the body (the rest) go through signature
/// verification, the envelope and the AES-GCM resource without a panic; a
/// resource decrypts only if it was sealed with this key over exactly its
/// nonce and associated data.
pub fn notify_v3(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\n');
    let (timestamp, nonce, signature, serial) = (parts.next(), parts.next(), parts.next(), parts.next());
    let body = parts.next().unwrap_or("").as_bytes();
    let mut verifier = Verifier::default();
    let public = PublicKey::from_pem(paybridge::sandbox::v3::WECHATPAY_PUBLIC_KEY).unwrap();
    verifier.add(paybridge::sandbox::v3::WECHATPAY_PUBLIC_KEY_ID, public);
    let headers = SignedHeaders { timestamp, nonce, signature, serial };
    let now = timestamp.and_then(|t| t.parse().ok()).unwrap_or(0);
    // No RSA signature can be forged here: nothing verifies.
    assert!(verifier.verify(&headers, body, now).is_err());

    let key = ApiV3Key::new(&Secret::new(V3_KEY)).unwrap();
    let Ok(envelope) = notify::envelope(body) else { return };
    let r = &envelope.resource;
    if let Ok(plain) = key.decrypt(&r.nonce, &r.associated_data, &r.ciphertext) {
        let sealed = key.encrypt(&r.nonce, &r.associated_data, &plain).unwrap();
        assert_eq!(sealed, r.ciphertext, "only what this key sealed over this nonce and AAD decrypts");
    }
    let _ = notify::transaction(&envelope, &key);
}

/// The JSON bodies of the public endpoints (`/pay/unifiedOrder`, the admin
/// login): any bytes are read or refused with a message, never a panic.
pub fn json_bodies(data: &[u8]) {
    if let Err(e) = parse_unified_order(data) {
        assert!(!e.to_string().is_empty());
    }
    let _ = parse_login(data);
}

/// Config parsing: any text is a config or an error that names a key or a
/// line, never a panic, and secrets never appear in the error.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml(text, std::path::Path::new("fuzz.toml"), std::iter::empty()) {
        Ok(config) => {
            let _ = config.describe();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// RFC 4180 cells of one row.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = row.strip_suffix("\r\n").expect("a row ends with CRLF").chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().unwrap().push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => out.push(String::new()),
            (c, _) => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// The CSV writer: whatever text an order holds, its row reads back as
/// exactly the ten columns of the header, and no cell starts a formula.
pub fn csv(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{1f}');
    let (body, attach, openid, no) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let contents =
        OrderContents { total_fee: data.len() as u64, body: body.into(), attach: attach.into(), openid: openid.into() };
    let order = Order::new(no.into(), contents, false, 1_700_000_000_000);
    let mut out = String::new();
    csv::write_row(&mut out, &OrderRow::from(&order));
    let cells = cells(&out);
    assert_eq!(cells.len(), csv::HEADER.split(',').count(), "{out:?}");
    for cell in &cells {
        assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r', '\n']), "a formula: {cell:?} in {out:?}");
    }
}

const PLATFORM_KEY: &str = "fuzz-platform-key-fuzz-platform-key-0000";
const NOW_MS: i64 = 1_764_226_800_000;

fn platforms() -> Platforms {
    Platforms::new(vec![Platform {
        id: "shop-a".into(),
        key: Secret::new(PLATFORM_KEY),
        previous_key: None,
        webhook_url: "https://a.example.com/hook".parse().unwrap(),
        appid: None,
    }])
}

/// What platform A (or anyone pretending to be it) sends: signed request
/// headers, order tokens and order bodies. Nothing panics, and whatever
/// verifies was really signed with the platform key.
pub fn platform(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let platforms = platforms();

    // An order token.
    if let Ok(claims) = token::verify(&platforms, &text, NOW_MS) {
        let (payload, signature) = text.rsplit_once('.').unwrap();
        assert_eq!(signature.to_ascii_lowercase(), auth::hmac_hex(&Secret::new(PLATFORM_KEY), payload.as_bytes()));
        assert!(claims.expires_at * 1000 > NOW_MS);
    }

    // A signed request: platform, timestamp, nonce, signature, method, path, then the body.
    let mut lines = text.splitn(7, '\n');
    let mut next = || lines.next();
    let headers = auth::Headers { platform: next(), timestamp: next(), nonce: next(), signature: next() };
    let (method, path, body) = (next().unwrap_or(""), next().unwrap_or(""), next().unwrap_or(""));
    let request = auth::Request { method, path_and_query: path, body: body.as_bytes() };
    match auth::verify(&platforms, &headers, &request, NOW_MS) {
        Ok(verified) => {
            let expected = auth::sign(&Secret::new(PLATFORM_KEY), &request, verified.timestamp, &verified.nonce);
            assert_eq!(headers.signature.unwrap().to_ascii_lowercase(), expected);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    // An order body.
    if let Err(e) = parse_create(data, NOW_MS, 7200) {
        assert!(!e.to_string().is_empty());
    }
}

/// WeChat's daily bill on any input (a v2 bill is not signed: only TLS
/// vouches for it): the parser and gunzip never panic, a parsed bill
/// renders and parses back to the same rows, and its amounts are exact fen.
pub fn bill(data: &[u8]) {
    let _ = bill::gunzip(data);
    if let Ok(parsed) = bill::parse(data) {
        let _ = parsed.summary_disagreement();
        let again = bill::parse(bill::render(&parsed.payments, &parsed.refunds).as_bytes());
        // What a bill says must survive being written again, if it could be
        // written at all (values with commas or line breaks cannot).
        if let Ok(again) = again {
            assert_eq!(again.payments.len(), parsed.payments.len());
            for (a, b) in again.payments.iter().zip(&parsed.payments) {
                assert_eq!((a.total_fee, &a.out_trade_no), (b.total_fee, &b.out_trade_no));
            }
        }
    }
}
