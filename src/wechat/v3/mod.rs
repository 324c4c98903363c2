//! WeChat Pay API v3 (JSON, RSA signatures, AES-GCM), as WeChat defines it
//! (`../shared/WECHATPAY-V3.md` in the project's notes). So far the pure
//! parts that the client, the notify handler and the simulator will share,
//! each checked against the published test vectors: [`crypto`] (signatures,
//! AES-GCM, keys), [`verify`] (what WeChat signs), [`api`] (the order
//! body, signed requests, replies, `wx.requestPayment`) and [`notify`] (the
//! payment notify's envelope and transaction); and [`client`], the HTTP
//! client that sends them (tested against the simulator's v3 side).

pub mod api;
pub mod client;
pub mod crypto;
pub mod notify;
pub mod trust;
pub mod verify;

#[cfg(test)]
mod tests;
