//! PayBridge: the backend of a WeChat Pay mini-program (mini-program B in
//! the A → B → A jump payment), in one binary.
//!
//! # Layout
//! The modules form layers, ground first; a module imports only from its own
//! layer and the ones above it in this list, and no two files import each
//! other in a circle (`tests/layers.rs` keeps it so).
//!
//! Ground, used by all and using nothing of the crate:
//! - [`clock`]: now in unix ms, the injectable clock schedules run on, RFC 3339 and Beijing days.
//! - [`domain`]: the shared vocabulary: a payment, refund states, `wx.requestPayment` parameters, sandbox or live.
//! - [`secret`]: the `Secret` type whose `Debug` prints `***`.
//! - [`limit`]: bounds for what strangers can make PayBridge keep: per-peer budgets, summarised logs.
//! - [`text`]: quoting input in messages, at a bounded length.
//! - [`metrics`]: counters and their Prometheus text.
//! - [`checkup`]: a checkup's report, one line per check (✓ / ✗ / !) with the fix.
//!
//! Then, each on the ones before it:
//! - [`wechat`]: the WeChat Pay protocol, v2 (XML, MD5/HMAC) and v3 (JSON, RSA, AES-GCM), its client, and its settings.
//! - [`store`]: sled storage: orders, notifies, refunds, the outbox, bills; one writer with group commit; the archive of ended orders.
//! - [`platform`]: platform A's keys, request signatures and order tokens (and, above [`pay`], webhook delivery).
//! - [`pay`]: the domain: orders, notifies, the lifecycle, refunds, reconciliation, platform orders; no HTTP.
//! - [`tls`]: HTTPS certificates: ACME (Let's Encrypt), files, self-signed; renewal.
//! - [`admin`]: the admin page's model: sessions, views, CSV.
//! - [`http`]: the routes, one module per audience, and the one place errors become replies.
//! - [`server`]: the accept loop, connection limits and graceful shutdown.
//! - [`control`]: the local control socket (`paybridge reconcile`, reloads).
//! - [`config`]: the TOML file and the environment, parsed into each module's settings.
//! - [`doctor`]: `paybridge doctor`: every credential and setting proved against WeChat, each with its fix.
//! - [`sandbox`]: the WeChat Pay simulator, another party: tests and sandbox mode; nothing above imports it.
//! - [`app`]: the wiring: opens the store, starts the services and the listeners.
//! - [`cli`]: the command line.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod app;
pub mod checkup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod doctor;
pub mod domain;
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
