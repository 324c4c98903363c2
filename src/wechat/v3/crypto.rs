//! The cryptography of API v3, as plain functions.
//!
//! - Requests are signed by the merchant: RSASSA-PKCS1-v1_5 with SHA-256
//!   over five lines (method, path with query, timestamp, nonce, body),
//!   each ending in `\n`, sent in the `Authorization` header.
//! - Replies and notifies are signed by WeChat over three lines (timestamp,
//!   nonce, body) with the key `Wechatpay-Serial` names: the WeChat Pay
//!   public key (`PUB_KEY_ID_…`) or a platform certificate.
//! - The mini-program's `paySign` (`signType: "RSA"`) is the merchant's
//!   signature over appid, timestamp, nonce and `prepay_id=…`.
//! - Notify resources and downloaded certificates are AEAD_AES_256_GCM under
//!   the 32-byte APIv3 key, with a 12-character nonce and associated data.
//!
//! RSA and AES-GCM come from `ring`, which the TLS stack already uses:
//! constant-time, and no second RSA implementation in the binary.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};

use crate::secret::Secret;

/// The `Authorization` scheme and `Wechatpay-Signature-Type`.
pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// Why a key could not be used. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not PEM, or PEM with another label.
    #[error("not a PEM block labelled {0}")]
    NotPem(&'static str),
    /// PEM, but not a key ring accepts (not RSA, too short, damaged).
    #[error("{0}")]
    Unusable(&'static str),
    /// The APIv3 key is not 32 bytes.
    #[error("the APIv3 key must be exactly 32 characters (as set in the merchant platform)")]
    ApiV3KeyLength,
}

fn pem(text: &str, label: &'static str) -> Result<Vec<u8>, KeyError> {
    let (found, _) = x509_parser::pem::Pem::read(std::io::Cursor::new(text.trim().as_bytes()))
        .map_err(|_| KeyError::NotPem(label))?;
    match found.label == label {
        true => Ok(found.contents),
        false => Err(KeyError::NotPem(label)),
    }
}

/// The merchant's API private key (`apiclient_key.pem`, PKCS#8).
pub struct MerchantKey {
    pair: RsaKeyPair,
}

impl std::fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MerchantKey(***)")
    }
}

impl MerchantKey {
    /// Reads `-----BEGIN PRIVATE KEY-----` (PKCS#8) RSA key of 2048 bits or more.
    pub fn from_pem(pem_text: &Secret) -> Result<MerchantKey, KeyError> {
        let der = pem(pem_text.expose(), "PRIVATE KEY")?;
        let pair = RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| KeyError::Unusable("not an RSA private key of 2048 bits or more (PKCS#8)"))?;
        Ok(MerchantKey { pair })
    }

    /// Base64 RSASSA-PKCS1-v1_5/SHA-256 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), message, &mut signature)
            .expect("PKCS#1 v1.5 signing with a valid key does not fail");
        STANDARD.encode(signature)
    }

    /// The public half, as WeChat (the simulator) verifies with it.
    pub fn public_key(&self) -> PublicKey {
        use ring::signature::KeyPair;
        PublicKey { pkcs1: self.pair.public_key().as_ref().to_vec() }
    }
}

/// An RSA public key that verifies WeChat's signatures (or, in the
/// simulator, the merchant's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// PKCS#1 `RSAPublicKey` DER, what ring verifies with.
    pkcs1: Vec<u8>,
}

impl PublicKey {
    /// Reads `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo), the form of
    /// the WeChat Pay public key (`pub_key.pem`).
    pub fn from_pem(pem_text: &str) -> Result<PublicKey, KeyError> {
        use x509_parser::prelude::FromDer;
        let der = pem(pem_text, "PUBLIC KEY")?;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
            .map_err(|_| KeyError::Unusable("not a SubjectPublicKeyInfo public key"))?;
        PublicKey::from_spki(&spki)
    }

    /// The key of a certificate (`-----BEGIN CERTIFICATE-----`, a platform
    /// certificate) and its serial as WeChat writes it: upper-case hex.
    pub fn from_certificate_pem(pem_text: &str) -> Result<(String, PublicKey), KeyError> {
        PublicKey::certificate(pem_text).map(|(serial, key, _)| (serial, key))
    }

    /// A certificate's serial (upper-case hex), key, and end of validity (unix seconds).
    pub fn certificate(pem_text: &str) -> Result<(String, PublicKey, i64), KeyError> {
        use x509_parser::prelude::FromDer;
        let der = pem(pem_text, "CERTIFICATE")?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
            .map_err(|_| KeyError::Unusable("not an X.509 certificate"))?;
        let serial = cert.tbs_certificate.raw_serial_as_string().replace(':', "").to_ascii_uppercase();
        let not_after = cert.validity().not_after.timestamp();
        Ok((serial, PublicKey::from_spki(cert.public_key())?, not_after))
    }

    fn from_spki(spki: &x509_parser::x509::SubjectPublicKeyInfo) -> Result<PublicKey, KeyError> {
        if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
            return Err(KeyError::Unusable("not an RSA public key"));
        }
        Ok(PublicKey { pkcs1: spki.subject_public_key.data.to_vec() })
    }

    /// Whether `signature` (Base64) is this key's over `message`. A probe
    /// signature (`WECHATPAY/SIGNTEST/…`) or anything not Base64 fails.
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        let Ok(signature) = STANDARD.decode(signature.trim()) else { return false };
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.pkcs1).verify(message, &signature).is_ok()
    }
}

/// The message a request's signature covers: method, path with query (as
/// sent), timestamp, nonce and body, each followed by `\n`.
pub fn request_message(method: &str, path_and_query: &str, timestamp: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// The `Authorization` header of a signed request.
pub fn authorization(mchid: &str, serial_no: &str, timestamp: i64, nonce: &str, signature: &str) -> String {
    format!(
        "{SCHEME} mchid=\"{mchid}\",nonce_str=\"{nonce}\",signature=\"{signature}\",timestamp=\"{timestamp}\",\
         serial_no=\"{serial_no}\""
    )
}

/// The message WeChat's signature on a reply or notify covers: timestamp,
/// nonce and the raw body, each followed by `\n`.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// The message of the mini-program's `paySign` (`signType: "RSA"`).
pub fn pay_sign_message(appid: &str, timestamp: &str, nonce: &str, package: &str) -> String {
    format!("{appid}\n{timestamp}\n{nonce}\n{package}\n")
}

/// The APIv3 key: 32 characters used as the AES-256 key, byte for byte.
#[derive(Clone)]
pub struct ApiV3Key(ring::aead::LessSafeKey);

impl std::fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiV3Key(***)")
    }
}

/// Why an encrypted resource could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// Not Base64, or the nonce is not 12 bytes.
    #[error("the encrypted resource is malformed: {0}")]
    Malformed(&'static str),
    /// The tag does not match: a wrong or reset APIv3 key, or changed data.
    #[error("the encrypted resource does not authenticate (a wrong APIv3 key, or the data was changed)")]
    Authentication,
}

impl ApiV3Key {
    /// The key as set in the merchant platform.
    pub fn new(key: &Secret) -> Result<ApiV3Key, KeyError> {
        let bytes = key.expose().as_bytes();
        if bytes.len() != 32 {
            return Err(KeyError::ApiV3KeyLength);
        }
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, bytes).expect("32 bytes");
        Ok(ApiV3Key(ring::aead::LessSafeKey::new(key)))
    }

    fn nonce(nonce: &str) -> Result<ring::aead::Nonce, DecryptError> {
        ring::aead::Nonce::try_assume_unique_for_key(nonce.as_bytes())
            .map_err(|_| DecryptError::Malformed("the nonce is not 12 characters"))
    }

    /// Decrypts `Base64(ciphertext ‖ tag)`.
    pub fn decrypt(&self, nonce: &str, associated_data: &str, ciphertext: &str) -> Result<Vec<u8>, DecryptError> {
        let mut data =
            STANDARD.decode(ciphertext).map_err(|_| DecryptError::Malformed("the ciphertext is not Base64"))?;
        let aad = ring::aead::Aad::from(associated_data.as_bytes());
        let plain =
            self.0.open_in_place(ApiV3Key::nonce(nonce)?, aad, &mut data).map_err(|_| DecryptError::Authentication)?;
        Ok(plain.to_vec())
    }

    /// Encrypts as WeChat does (the simulator): `Base64(ciphertext ‖ tag)`.
    pub fn encrypt(&self, nonce: &str, associated_data: &str, plain: &[u8]) -> Result<String, DecryptError> {
        let mut data = plain.to_vec();
        let aad = ring::aead::Aad::from(associated_data.as_bytes());
        self.0
            .seal_in_place_append_tag(ApiV3Key::nonce(nonce)?, aad, &mut data)
            .map_err(|_| DecryptError::Malformed("the plaintext is too long"))?;
        Ok(STANDARD.encode(data))
    }
}
