//! HTTP routes, one module per audience, and what they share.
//!
//! - [`miniprogram`]: mini-program B's API (`/pay/openid`, `/pay/unifiedOrder`, `/pay/orders/..`).
//! - [`notify`]: WeChat's payment notifies.
//! - [`admin`]: the merchant's admin page and its API ([`assets`]: the embedded files).
//! - [`error`]: the one place errors become replies.
//! - [`body`]: size-limited request bodies.
//! - [`plain`]: the plain-HTTP listener when HTTPS is on (ACME HTTP-01, redirects).
//! - [`platform`]: platform A's signed server-to-server API.
//! - [`ops`]: `/metrics` (on its own listener) and `/healthz`.

pub mod admin;
pub mod assets;
pub mod body;
pub mod error;
pub mod miniprogram;
pub mod notify;
pub mod ops;
pub mod plain;
pub mod platform;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::header::{HeaderMap, HeaderValue};
use warp::reply::{Reply, Response};
use warp::Filter;

use crate::pay::Payments;

/// The peer's socket address, put into each request by [`crate::server`].
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Present on requests that came over TLS (so cookies can be `Secure`).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// A filter that hands a clone of `value` to the handler.
pub fn with<T: Clone + Send + Sync + 'static>(value: T) -> impl Filter<Extract = (T,), Error = Infallible> + Clone {
    warp::any().map(move || value.clone())
}

/// The request's path with its query, as sent: what signatures cover (the
/// platform API, the simulator's WeChat Pay v3).
pub fn path_and_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::path::full().and(warp::query::raw().or(warp::any().map(String::new)).unify()).map(
        |path: warp::path::FullPath, query: String| match query.is_empty() {
            true => path.as_str().to_owned(),
            false => format!("{}?{query}", path.as_str()),
        },
    )
}

/// Every PayBridge route, with error rendering, security headers and access logs.
pub fn routes(
    pay: Arc<Payments>,
    admin: Arc<crate::admin::Admin>,
    store: crate::store::Store,
    metrics: Arc<crate::metrics::Metrics>,
) -> BoxedFilter<(Response,)> {
    let mut headers = HeaderMap::new();
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    let sandbox = pay.is_sandbox();
    if sandbox {
        headers.insert("x-paybridge-mode", HeaderValue::from_static("SANDBOX"));
    }
    let health = ops::health(store, sandbox);
    miniprogram::routes(pay.clone())
        .or(platform::routes(pay.clone(), metrics))
        .unify()
        .or(notify::routes(pay))
        .unify()
        .or(admin::routes(admin))
        .unify()
        .or(health)
        .unify()
        .recover(error::rejection)
        .unify()
        .with(warp::reply::with::headers(headers))
        .map(Reply::into_response)
        .boxed()
}
