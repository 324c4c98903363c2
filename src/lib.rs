//! PayBridge: the backend of a WeChat Pay mini-program (mini-program B in
//! the A → B → A jump payment), in one binary.
//!
//! # Layout
//! - [`wechat`]: WeChat Pay v2 protocol — signing, XML, `wx.requestPayment`
//!   parameters — and the HTTP client for WeChat's servers.
//! - [`store`]: sled storage of orders and the notify log, with paging indexes.
//! - [`pay`]: the payment flow (login, unified order, notify, platform
//!   orders), free of HTTP.
//! - [`platform`]: platform A's side: request signatures, order tokens,
//!   result webhooks from the outbox.
//! - [`http`]: the routes, one module per audience, and error rendering.
//! - [`server`]: the accept loop and graceful shutdown.
//! - [`tls`]: HTTPS certificates: ACME (Let's Encrypt), files, self-signed.
//! - [`sandbox`]: the WeChat Pay simulator used by tests and sandbox mode.
//! - [`config`], [`secret`], [`text`] (bounded quoting of input in
//!   messages), [`app`] (wiring), [`cli`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod http;
pub mod limit;
pub mod metrics;
pub mod pay;
pub mod platform;
pub mod sandbox;
pub mod secret;
pub mod server;
pub mod store;
pub mod text;
pub mod tls;
pub mod wechat;
