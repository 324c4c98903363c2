//! The platform API (`/platform/v1/...`): platform A's backend creates,
//! reads, lists and closes its orders. Every request is signed
//! ([`crate::platform::auth`]); its nonce is used up durably before it acts.
//!
//! | method | path | does |
//! |---|---|---|
//! | POST | `/platform/v1/orders` | create (idempotent on `orderId`) |
//! | GET | `/platform/v1/orders/{outTradeNo}` | one order |
//! | GET | `/platform/v1/orders?orderId=...` | one order, by the platform's id |
//! | POST | `/platform/v1/orders/{outTradeNo}/close` | close an unpaid order |
//! | GET | `/platform/v1/changes?after=CURSOR&limit=N` | orders changed since a cursor |

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::{self, Reply, Response};
use warp::Filter;

use super::error::{json_error, pay_error};
use super::{body, with};
use crate::pay::platform::{PlatformOrder, PlatformOrderView, MAX_EXPIRY_SECS};
use crate::pay::{now_ms, PayError, Payments};
use crate::platform::auth::{self, AuthError, Headers, Request, Verified};

/// The largest platform API body: an order is a few short fields.
pub const PLATFORM_BODY_LIMIT: usize = 16 * 1024;

/// The most orders one `/changes` page holds.
pub const MAX_CHANGES_PAGE: usize = 200;

/// The body of `POST /platform/v1/orders`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    order_id: String,
    /// Fen, a JSON integer.
    #[serde(deserialize_with = "whole_fen")]
    amount: u64,
    description: String,
    #[serde(default)]
    attach: String,
    /// Seconds from now until the order can no longer be paid.
    #[serde(default)]
    expires_in: Option<i64>,
}

/// A JSON integer of fen; anything else is refused with a message that says so.
fn whole_fen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    value.as_u64().ok_or_else(|| {
        serde::de::Error::custom(format!("amount {value} is not a whole number of fen (1990 is 19.90 yuan)"))
    })
}

/// The platform API, with what its failures cost an anonymous sender kept small.
pub fn routes(pay: Arc<Payments>, metrics: Arc<crate::metrics::Metrics>) -> BoxedFilter<(Response,)> {
    let failures = Arc::new(crate::limit::Summary::new(std::time::Duration::from_secs(60)));
    warp::path("platform")
        .and(warp::path("v1"))
        .and(warp::method())
        .and(super::path_and_query())
        .and(warp::header::headers_cloned())
        .and(body::limited(PLATFORM_BODY_LIMIT))
        .and(with(pay))
        .and(with(metrics))
        .and(with(failures))
        .then(
            |method: Method,
             path_and_query: String,
             headers: HeaderMap,
             body: bytes::Bytes,
             pay: Arc<Payments>,
             metrics: Arc<crate::metrics::Metrics>,
             failures: Arc<crate::limit::Summary>| async move {
                let request = Request { method: method.as_str(), path_and_query: &path_and_query, body: &body };
                let verified = match authenticate(&pay, &headers, &request).await {
                    Ok(verified) => verified,
                    Err(Refused::Auth(e)) => {
                        metrics.refused("platform_auth");
                        if let Some(count) = failures.event() {
                            // SECURITY: the reason, never a key or a signature.
                            tracing::warn!(count, reason = %e, "platform API requests refused");
                        }
                        return json_error(StatusCode::UNAUTHORIZED, auth_code(&e), &e.to_string());
                    }
                    Err(Refused::Pay(e)) => return pay_error(&e),
                };
                let (path, query) = path_and_query.split_once('?').unwrap_or((&path_and_query, ""));
                let segments: Vec<&str> = path.trim_matches('/').split('/').skip(2).collect();
                let platform = verified.platform.id.as_str();
                let result = match (method.as_str(), segments.as_slice()) {
                    ("POST", ["orders"]) => create(&pay, platform, &body).await,
                    ("GET", ["orders"]) => by_order_id(&pay, platform, query).await,
                    ("GET", ["orders", no]) => pay.platform_order(platform, no).await.map(|o| ok(&view(&o))),
                    ("POST", ["orders", no, "close"]) => {
                        pay.close_platform_order(platform, no).await.map(|o| ok(&view(&o)))
                    }
                    ("POST", ["orders", no, "refunds"]) => refund(&pay, platform, no, &body).await,
                    ("GET", ["changes"]) => changes(&pay, platform, query).await,
                    _ => Ok(json_error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        "no such platform endpoint (see \"Integrating platform A\" in the README)",
                    )),
                };
                result.unwrap_or_else(|e| pay_error(&e))
            },
        )
        .boxed()
}

/// `POST /platform/v1/orders/{no}/refunds` `{"refundId", "amount", "reason"?}`:
/// idempotent by the platform's `refundId`.
async fn refund(pay: &Payments, platform: &str, no: &str, body: &[u8]) -> Result<Response, PayError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct RefundBody {
        refund_id: String,
        amount: u64,
        #[serde(default)]
        reason: String,
    }
    let request: RefundBody = super::miniprogram::parse_json(body)?;
    let id_ok = (1..=64).contains(&request.refund_id.len())
        && request.refund_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if !id_ok {
        return Err(PayError::Invalid("refundId must be 1 to 64 of A-Z a-z 0-9 - _ . :".into()));
    }
    // Only the platform's own orders: another's looks like no order at all.
    let order = pay.platform_order(platform, no).await?;
    let new = crate::pay::refund::NewRefund {
        out_trade_no: order.out_trade_no,
        amount: request.amount,
        reason: request.reason,
        requested_by: format!("platform {platform}"),
        platform_refund_id: Some(request.refund_id),
    };
    let (refund, created) = pay.refund(new, Some(platform)).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let view = serde_json::json!({
        "refundId": refund.platform_refund_id, "outRefundNo": refund.out_refund_no,
        "outTradeNo": refund.out_trade_no, "amount": refund.amount, "reason": refund.reason,
        "status": refund.status.as_str(),
    });
    Ok(reply::with_status(reply::json(&view), status).into_response())
}

enum Refused {
    Auth(AuthError),
    Pay(PayError),
}

/// Verifies the signature, then uses up the nonce (durably).
async fn authenticate(pay: &Payments, headers: &HeaderMap, request: &Request<'_>) -> Result<Verified, Refused> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let given = Headers {
        platform: header(auth::PLATFORM_HEADER),
        timestamp: header(auth::TIMESTAMP_HEADER),
        nonce: header(auth::NONCE_HEADER),
        signature: header(auth::SIGNATURE_HEADER),
    };
    let verified = auth::verify(&pay.platforms(), &given, request, now_ms()).map_err(Refused::Auth)?;
    match pay.use_nonce(&verified).await {
        Ok(true) => Ok(verified),
        Ok(false) => Err(Refused::Auth(AuthError::Replayed)),
        Err(e) => Err(Refused::Pay(e)),
    }
}

fn auth_code(e: &AuthError) -> &'static str {
    match e {
        AuthError::Missing(_) | AuthError::BadTimestamp | AuthError::BadNonce => "AUTH_HEADERS_INVALID",
        AuthError::UnknownPlatform(_) => "UNKNOWN_PLATFORM",
        AuthError::Stale(_) => "TIMESTAMP_OUT_OF_WINDOW",
        AuthError::BadSignature => "SIGNATURE_MISMATCH",
        AuthError::Replayed => "NONCE_REUSED",
    }
}

fn view(order: &crate::store::Order) -> PlatformOrderView {
    PlatformOrderView::of(order)
}

fn ok(value: &impl serde::Serialize) -> Response {
    reply::json(value).into_response()
}

/// Reads a `POST /platform/v1/orders` body at `now_ms`; without
/// `expiresIn` the order expires after `default_expires_in` seconds
/// (`orders.expire_minutes`). The order's fields themselves are checked
/// where it is created.
pub fn parse_create(body: &[u8], now_ms: i64, default_expires_in: i64) -> Result<PlatformOrder, PayError> {
    let request: CreateBody = super::miniprogram::parse_json(body)?;
    let expires_in = request.expires_in.unwrap_or(default_expires_in);
    if !(60..=MAX_EXPIRY_SECS).contains(&expires_in) {
        return Err(PayError::Invalid(format!("expiresIn must be 60 to {MAX_EXPIRY_SECS} seconds")));
    }
    Ok(PlatformOrder {
        order_id: request.order_id,
        amount: request.amount,
        description: request.description,
        attach: request.attach,
        expires_at: now_ms + expires_in * 1000,
    })
}

async fn create(pay: &Payments, platform: &str, body: &[u8]) -> Result<Response, PayError> {
    let order = parse_create(body, now_ms(), pay.expire_after_secs())?;
    let (order, created) = pay.create_platform_order(platform, order, false).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(reply::with_status(reply::json(&view(&order)), status).into_response())
}

fn query_map(query: &str) -> Result<HashMap<String, String>, PayError> {
    serde_urlencoded::from_str(query).map_err(|_| PayError::Invalid("the query string is malformed".into()))
}

async fn by_order_id(pay: &Payments, platform: &str, query: &str) -> Result<Response, PayError> {
    let query = query_map(query)?;
    let Some(order_id) = query.get("orderId").filter(|id| !id.is_empty()) else {
        return Err(PayError::Invalid(
            "pass ?orderId= (your order id), or GET /platform/v1/orders/{outTradeNo}".into(),
        ));
    };
    let (p, id) = (platform.to_owned(), order_id.clone());
    match pay.store().read(move |store| store.platform_order(&p, &id)).await? {
        Some(order) => Ok(ok(&view(&order))),
        None => Err(PayError::NotFound(order_id.clone())),
    }
}

async fn changes(pay: &Payments, platform: &str, query: &str) -> Result<Response, PayError> {
    let query = query_map(query)?;
    let after = match query.get("after").map(String::as_str) {
        None | Some("") => 0,
        Some(cursor) => cursor.parse().map_err(|_| PayError::Invalid("after must be a cursor from `next`".into()))?,
    };
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n @ 1..=MAX_CHANGES_PAGE)) => n,
        Some(_) => return Err(PayError::Invalid(format!("limit must be 1 to {MAX_CHANGES_PAGE}"))),
    };
    let p = platform.to_owned();
    let found = pay.store().read(move |store| store.platform_changes(&p, after, limit)).await?;
    // A cursor is where to go on from: the change after the last one seen.
    let next = found.last().map_or(after, |(id, _)| id + 1);
    let items: Vec<_> = found
        .iter()
        .map(|(id, order)| PlatformOrderView { change: Some((id + 1).to_string()), ..view(order) })
        .collect();
    Ok(ok(&serde_json::json!({ "items": items, "next": next.to_string() })))
}
