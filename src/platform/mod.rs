//! Platform A's side of the jump payment: the signed server-to-server API
//! ([`auth`]), order tokens ([`token`]), and result webhooks ([`webhook`]).
//!
//! A platform is configured in `[[platforms]]` with a shared key. It creates
//! orders whose amount PayBridge then trusts, and learns each order's result
//! from a webhook delivered at least once from a durable outbox.

pub mod auth;
pub mod keys;
pub mod token;
pub mod webhook;
