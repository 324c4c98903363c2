//! The one place where errors become HTTP replies.
//!
//! A client sees a status, a stable `code` and a message that says what to
//! fix; causes that may hold internals (storage errors) are logged, not sent.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Rejection;

use super::body::{BodyLate, BodyTooLarge, BodyUnreadable};
use crate::pay::PayError;
use crate::store::StoreError;
use crate::wechat::client::WechatError;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

/// The longest message an error reply carries. Messages quote input through
/// [`crate::text::quote`]; this is the last bound, for a part that may still
/// be long (a JSON parser's error quoting the field it met).
pub const MAX_MESSAGE_CHARS: usize = 400;

/// A JSON error reply: `{"error": {"code": ..., "message": ...}}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let message = &crate::text::clip(message, MAX_MESSAGE_CHARS);
    let body = ErrorBody { error: ErrorDetail { code, message } };
    reply::with_status(reply::json(&body), status).into_response()
}

/// Renders a payment error.
pub fn pay_error(e: &PayError) -> Response {
    let message = e.to_string();
    let (status, code) = match e {
        PayError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        PayError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "INVALID_JSON"),
        PayError::Token(_) => (StatusCode::BAD_REQUEST, "INVALID_ORDER_TOKEN"),
        PayError::ClientAmountRefused => (StatusCode::FORBIDDEN, "CLIENT_AMOUNT_NOT_ALLOWED"),
        PayError::Conflict { code, .. } => (StatusCode::CONFLICT, *code),
        PayError::NotFound(_) => (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND"),
        PayError::Login(WechatError::Login { errcode: 40029 | 40163 | 40226, .. }) => {
            (StatusCode::BAD_REQUEST, "INVALID_LOGIN_CODE")
        }
        PayError::Login(WechatError::Timeout) => (StatusCode::GATEWAY_TIMEOUT, "WECHAT_TIMEOUT"),
        PayError::Login(_) => (StatusCode::BAD_GATEWAY, "WECHAT_LOGIN_FAILED"),
        PayError::Upstream(WechatError::Timeout) => (StatusCode::GATEWAY_TIMEOUT, "WECHAT_TIMEOUT"),
        PayError::Upstream(_) => (StatusCode::BAD_GATEWAY, "WECHAT_ERROR"),
        PayError::RefundRefused(_) => (StatusCode::BAD_GATEWAY, "REFUND_REFUSED"),
        PayError::Refused(_) => (StatusCode::BAD_GATEWAY, "WECHAT_REFUSED"),
        PayError::Store(StoreError::Busy | StoreError::Unavailable | StoreError::Stopped) => {
            // Logged once per episode by the writer; the client may retry.
            (StatusCode::SERVICE_UNAVAILABLE, "STORAGE_UNAVAILABLE")
        }
        PayError::TooMany { .. } => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
        PayError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "WECHAT_BUDGET_SPENT"),
        PayError::Store(cause) => {
            tracing::error!(error = %cause, "storage error");
            (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
        }
    };
    let mut reply = json_error(status, code, &message);
    if let PayError::TooMany { retry_after, .. } | PayError::Busy { retry_after, .. } = e {
        reply.headers_mut().insert(warp::http::header::RETRY_AFTER, (*retry_after).into());
    }
    reply
}

/// Renders what warp's routing refused: unknown path, wrong method, body too large.
pub async fn rejection(r: Rejection) -> Result<Response, Infallible> {
    let reply = if r.find::<super::admin::Unauthorized>().is_some() {
        json_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "log in first")
    } else if let Some(super::admin::BadQuery(message)) = r.find() {
        json_error(StatusCode::BAD_REQUEST, "INVALID_QUERY", message)
    } else if r.is_not_found() {
        json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint (see the API reference in the README)")
    } else if let Some(too_large) = r.find::<BodyTooLarge>() {
        let message = format!("the request body is larger than this endpoint's limit of {} bytes", too_large.limit);
        json_error(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE", &message)
    } else if let Some(BodyLate(timeout)) = r.find() {
        let message = format!("the request body did not arrive within {} seconds", timeout.as_secs());
        json_error(StatusCode::REQUEST_TIMEOUT, "BODY_TIMEOUT", &message)
    } else if r.find::<BodyUnreadable>().is_some() {
        json_error(StatusCode::BAD_REQUEST, "BODY_UNREADABLE", "the request body could not be read")
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        json_error(StatusCode::BAD_REQUEST, "INVALID_QUERY", &e.to_string())
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        json_error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "this endpoint does not take that HTTP method")
    } else {
        tracing::debug!(rejection = ?r, "unhandled rejection");
        json_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "the request could not be understood")
    };
    Ok(reply)
}
