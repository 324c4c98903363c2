//! Routes for the merchant's admin page: the embedded page itself and its
//! JSON API under `/admin/api/`.
//!
//! SECURITY: every API route but login needs a session cookie
//! (`HttpOnly; SameSite=Strict`, `Secure` over HTTPS); every POST needs the
//! session's CSRF token in `X-CSRF-Token` and, when the browser sends one, a
//! same-host `Origin`. Login attempts are limited per address. The page and
//! the API answer with a strict Content-Security-Policy (no inline script).
//!
//! Longer than the usual file on purpose: one short warp filter per admin
//! endpoint, all behind the same session, CSRF and origin checks defined
//! here, so a reviewer sees every route and its guard in one place; what
//! each route does is in [`crate::admin`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde::Deserialize;
use sha2::Digest;
use warp::filters::BoxedFilter;
use warp::http::header::{HeaderMap, HeaderValue};
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Filter;

use super::error::json_error;
use super::{assets, body, with, OverTls, PeerAddr};
use crate::admin::{self, auth, csv, Admin};
use crate::store::{beijing_day_start, OrderFilter, OrderStatus};

const COOKIE: &str = "pb_session";
const LOGIN_BODY_LIMIT: usize = 4096;
const CSV_MAX_ROWS: usize = 100_000;
/// The most items one page of any admin list holds.
const MAX_PAGE: usize = 200;

/// Headers on every admin response.
fn security_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h
}

/// What a request brings that authentication needs.
#[derive(Debug, Clone)]
struct Caller {
    cookie: Option<String>,
    csrf: Option<String>,
    origin: Option<String>,
    host: Option<String>,
    ip: IpAddr,
    tls: bool,
}

fn caller() -> impl Filter<Extract = (Caller,), Error = warp::Rejection> + Clone {
    warp::cookie::optional::<String>(COOKIE)
        .and(warp::header::optional::<String>("x-csrf-token"))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::ext::optional::<OverTls>())
        .map(|cookie, csrf, origin, host, peer: Option<PeerAddr>, tls: Option<OverTls>| Caller {
            cookie,
            csrf,
            origin,
            host,
            ip: peer.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |p| p.0.ip()),
            tls: tls.is_some(),
        })
}

/// A wrong query parameter: rendered as 400 by [`super::error::rejection`].
#[derive(Debug)]
pub struct BadQuery(pub String);

impl warp::reject::Reject for BadQuery {}

/// Parses the order list's query, or rejects with [`BadQuery`].
fn order_query_filter() -> impl Filter<Extract = (OrderQuery,), Error = warp::Rejection> + Clone {
    warp::query::<HashMap<String, String>>().and_then(|q: HashMap<String, String>| async move {
        order_query(&q).map_err(|message| warp::reject::custom(BadQuery(message)))
    })
}

/// No valid session: rendered as 401 by [`super::error::rejection`].
#[derive(Debug)]
pub struct Unauthorized;

impl warp::reject::Reject for Unauthorized {}

/// Passes the admin state on when the caller has a live session.
fn authed(admin: Arc<Admin>) -> impl Filter<Extract = (Arc<Admin>,), Error = warp::Rejection> + Clone {
    caller().and(with(admin)).and_then(|c: Caller, admin: Arc<Admin>| async move {
        match c.session(&admin) {
            Some(_) => Ok(admin),
            None => Err(warp::reject::custom(Unauthorized)),
        }
    })
}

/// Why an admin request is refused before it reaches the store.
#[derive(Debug)]
enum Refusal {
    /// No live session.
    Unauthorized,
    /// A state change without the CSRF token, or from another site.
    Csrf,
    /// A query parameter is wrong; the message says which.
    BadQuery(String),
}

impl Refusal {
    fn reply(&self) -> Response {
        match self {
            Refusal::Unauthorized => json_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "log in first"),
            Refusal::Csrf => {
                json_error(StatusCode::FORBIDDEN, "CSRF", "missing or wrong X-CSRF-Token, or a cross-site request")
            }
            Refusal::BadQuery(message) => json_error(StatusCode::BAD_REQUEST, "INVALID_QUERY", message),
        }
    }
}

impl Caller {
    /// The session's CSRF token, if the cookie names a live session.
    fn session(&self, admin: &Admin) -> Option<String> {
        self.cookie.as_deref().and_then(|c| admin.sessions.check(c))
    }

    /// A browser's cross-site request carries another host in `Origin`.
    fn same_origin(&self) -> bool {
        match (&self.origin, &self.host) {
            (None, _) => true,
            (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, o)| o.eq_ignore_ascii_case(host)),
            (Some(_), None) => false,
        }
    }

    /// For state-changing requests: a session, a same-host origin and the CSRF token.
    fn authorize_change(&self, admin: &Admin) -> Result<(), Refusal> {
        let Some(expected) = self.session(admin) else { return Err(Refusal::Unauthorized) };
        let token_ok = self.csrf.as_deref().is_some_and(|given| auth::csrf_matches(&expected, given));
        if !token_ok || !self.same_origin() {
            return Err(Refusal::Csrf);
        }
        Ok(())
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }
}

#[derive(Deserialize)]
struct Login {
    password: String,
}

/// The password of a login body, `{"password": "..."}`.
pub fn parse_login(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Login>(body).ok().map(|l| l.password)
}

/// A store error: logged, and a plain 500 for the client.
/// The CSV export of the filtered orders (at most [`CSV_MAX_ROWS`]).
fn export_csv(admin: &Admin, q: &OrderQuery) -> Response {
    let mut out = String::from(csv::BOM);
    out.push_str(csv::HEADER);
    let mut cursor: Option<String> = None;
    let mut rows = 0;
    loop {
        let page = match admin.orders(&q.filter, q.q.as_deref(), cursor.as_deref(), 500) {
            Ok(p) => p,
            Err(e) => return internal(e),
        };
        for row in &page.items {
            csv::write_row(&mut out, row);
        }
        rows += page.items.len();
        match page.next {
            Some(next) if rows < CSV_MAX_ROWS => cursor = Some(next),
            _ => break,
        }
    }
    // The archived orders of the same days (each once: one still in the
    // hot store is exported from there).
    match admin.archived_rows(&q.filter, q.q.as_deref(), CSV_MAX_ROWS.saturating_sub(rows)) {
        Ok(archived) => archived.iter().for_each(|row| csv::write_row(&mut out, row)),
        Err(e) => return internal(e),
    }
    let day = admin::day_string(crate::store::beijing_day(crate::clock::now_ms()));
    let disposition = format!("attachment; filename=\"paybridge-orders-{day}.csv\"");
    reply::with_header(
        reply::with_header(out, "content-type", "text/csv; charset=utf-8"),
        "content-disposition",
        disposition,
    )
    .into_response()
}

/// Runs a handler that reads the store off the async threads: sled's reads
/// take its global lock, which the store writer holds while it applies a batch.
async fn blocking(handler: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(handler).await.unwrap_or_else(|_| {
        json_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "the request failed; see the server log")
    })
}

/// A list's `limit` query parameter: 1 to `max`, `default` when absent.
fn page_limit(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, Refusal> {
    match q.get("limit").filter(|l| !l.is_empty()) {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| Refusal::BadQuery(format!("limit must be 1 to {max}"))),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin: storage error");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "storage error; see the server log")
}

/// The filter, search and paging parameters of the order list and CSV.
struct OrderQuery {
    filter: OrderFilter,
    q: Option<String>,
    cursor: Option<String>,
    limit: usize,
}

fn order_query(q: &HashMap<String, String>) -> Result<OrderQuery, String> {
    let nonempty = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let status = match nonempty("status") {
        Some(s) => Some(OrderStatus::parse(s).ok_or("status must be CREATED, PREPAID, PAID or CLOSED")?),
        None => None,
    };
    let day = |key: &str| match nonempty(key) {
        Some(text) => admin::parse_day(text).map(Some).ok_or_else(|| format!("{key} must be a date like 2026-11-27")),
        None => Ok(None),
    };
    let from_ms = day("from")?.map(beijing_day_start);
    let to_ms = day("to")?.map(|d| beijing_day_start(d + 1));
    let limit = match nonempty("limit") {
        Some(l) => l.parse::<usize>().ok().filter(|l| (1..=MAX_PAGE).contains(l)).ok_or("limit must be 1 to 200")?,
        None => 50,
    };
    Ok(OrderQuery {
        filter: OrderFilter { status, from_ms, to_ms },
        q: nonempty("q").map(str::to_owned),
        cursor: nonempty("cursor").map(str::to_owned),
        limit,
    })
}

/// The admin page and its API.
pub fn routes(admin: Arc<Admin>) -> BoxedFilter<(Response,)> {
    let page = warp::path!("admin").and(warp::get()).map(|| asset("admin.html"));
    let static_file = warp::path!("admin" / "static" / String).and(warp::get()).map(|name: String| asset(&name));

    let login = warp::path!("admin" / "api" / "login")
        .and(warp::post())
        .and(caller())
        .and(warp::header::optional::<String>("content-type"))
        .and(body::limited(LOGIN_BODY_LIMIT))
        .and(with(admin.clone()))
        .then(login);

    let logout = warp::path!("admin" / "api" / "logout").and(warp::post()).and(caller()).and(with(admin.clone())).map(
        |c: Caller, admin: Arc<Admin>| {
            if let Err(refusal) = c.authorize_change(&admin) {
                return refusal.reply();
            }
            if let Some(token) = &c.cookie {
                admin.sessions.remove(token);
            }
            reply::with_header(
                reply::with_status(reply::reply(), StatusCode::NO_CONTENT),
                "set-cookie",
                c.cookie("", 0),
            )
            .into_response()
        },
    );

    let session = warp::path!("admin" / "api" / "session").and(warp::get()).and(caller()).and(with(admin.clone())).map(
        |c: Caller, admin: Arc<Admin>| match c.session(&admin) {
            Some(csrf) => reply::json(&serde_json::json!({
                "csrf": csrf, "sandbox": admin.sandbox(), "version": env!("CARGO_PKG_VERSION"),
            }))
            .into_response(),
            None => Refusal::Unauthorized.reply(),
        },
    );

    // Read-only API routes: a session is enough (GET changes nothing).
    let authed = authed(admin.clone());

    let overview =
        warp::path!("admin" / "api" / "overview").and(warp::get()).and(authed.clone()).then(|admin: Arc<Admin>| {
            blocking(move || match admin.overview(crate::clock::now_ms()) {
                Ok(o) => reply::json(&o).into_response(),
                Err(e) => internal(e),
            })
        });

    let orders = warp::path!("admin" / "api" / "orders")
        .and(warp::get())
        .and(authed.clone())
        .and(order_query_filter())
        .then(|admin: Arc<Admin>, q: OrderQuery| {
            blocking(move || match admin.orders(&q.filter, q.q.as_deref(), q.cursor.as_deref(), q.limit) {
                Ok(page) => reply::json(&serde_json::json!({ "items": page.items, "next": page.next })).into_response(),
                Err(e) => internal(e),
            })
        });

    let order = warp::path!("admin" / "api" / "orders" / String).and(warp::get()).and(authed.clone()).then(
        |no: String, admin: Arc<Admin>| {
            blocking(move || match admin.order(&no) {
                Ok(Some(detail)) => reply::json(&detail).into_response(),
                Ok(None) => json_error(StatusCode::NOT_FOUND, "ORDER_NOT_FOUND", "no such order"),
                Err(e) => internal(e),
            })
        },
    );

    let export = warp::path!("admin" / "api" / "export" / "orders.csv")
        .and(warp::get())
        .and(authed.clone())
        .and(order_query_filter())
        .then(|admin: Arc<Admin>, q: OrderQuery| blocking(move || export_csv(&admin, &q)));

    let notifies = warp::path!("admin" / "api" / "notifies")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(authed.clone())
        .then(|q: HashMap<String, String>, admin: Arc<Admin>| async move {
            let cursor = match q.get("cursor").filter(|c| !c.is_empty()).map(|c| c.parse::<u64>()) {
                Some(Ok(c)) => Some(c),
                Some(Err(_)) => {
                    return Refusal::BadQuery("cursor must be the value of `next` from the previous page".into())
                        .reply()
                }
                None => None,
            };
            let limit = match page_limit(&q, 50, MAX_PAGE) {
                Ok(limit) => limit,
                Err(refusal) => return refusal.reply(),
            };
            let order = q.get("order").filter(|o| !o.is_empty()).cloned();
            blocking(move || match admin.notifies(order.as_deref(), cursor, limit) {
                Ok(page) => reply::json(&serde_json::json!({ "items": page.items, "next": page.next })).into_response(),
                Err(e) => internal(e),
            })
            .await
        });

    let resend = warp::path!("admin" / "api" / "deliveries" / u64 / "resend")
        .and(warp::post())
        .and(caller())
        .and(with(admin.clone()))
        .then(|id: u64, c: Caller, admin: Arc<Admin>| async move {
            if let Err(refusal) = c.authorize_change(&admin) {
                return refusal.reply();
            }
            match admin.webhooks.resend(id).await {
                Ok(Some(d)) => {
                    tracing::info!(delivery = id, out_trade_no = %d.out_trade_no, "webhook re-sent from the admin page");
                    reply::json(&crate::admin::DeliveryRow::from(&d)).into_response()
                }
                Ok(None) => json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such delivery"),
                Err(e) => internal(e),
            }
        });

    // A refund: amount and reason, after the page's confirmation step.
    let refund = warp::path!("admin" / "api" / "orders" / String / "refunds")
        .and(warp::post())
        .and(caller())
        .and(body::limited(4096))
        .and(with(admin.clone()))
        .then(|no: String, c: Caller, body: bytes::Bytes, admin: Arc<Admin>| async move {
            if let Err(refusal) = c.authorize_change(&admin) {
                return refusal.reply();
            }
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                amount: u64,
                #[serde(default)]
                reason: String,
            }
            let body: Body = match serde_json::from_slice(&body) {
                Ok(b) => b,
                Err(e) => {
                    let message = format!("the body must be {{\"amount\": fen, \"reason\": text}}: {e}");
                    return json_error(StatusCode::BAD_REQUEST, "INVALID_JSON", &message);
                }
            };
            // Which session asked, without the session itself.
            let session = c.cookie.as_deref().map(|cookie| hex::encode(&sha2::Sha256::digest(cookie)[..4]));
            let new = crate::pay::refund::NewRefund {
                out_trade_no: no,
                amount: body.amount,
                reason: body.reason,
                requested_by: format!("admin (session {}, from {})", session.unwrap_or_default(), c.ip),
                platform_refund_id: None,
            };
            match admin.payments.refund(new, None).await {
                Ok((refund, _)) => {
                    let row = crate::admin::RefundRow::from(&refund);
                    reply::with_status(reply::json(&row), StatusCode::CREATED).into_response()
                }
                Err(e) => super::error::pay_error(&e),
            }
        });

    // The daily bill: the days, one day, its bill file, and a re-run.
    let bill_days = warp::path!("admin" / "api" / "reconciliation")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(authed.clone())
        .then(|q: HashMap<String, String>, admin: Arc<Admin>| async move {
            let before = q.get("before").filter(|b| !b.is_empty()).cloned();
            if before.as_deref().is_some_and(|b| admin::parse_day(b).is_none()) {
                return Refusal::BadQuery("before must be a date like 2026-11-27".into()).reply();
            }
            let limit = match page_limit(&q, 31, admin::MAX_DAYS_PER_PAGE) {
                Ok(limit) => limit,
                Err(refusal) => return refusal.reply(),
            };
            blocking(move || match admin.bill_days(before.as_deref(), limit) {
                Ok((items, next)) => reply::json(&serde_json::json!({ "items": items, "next": next })).into_response(),
                Err(e) => internal(e),
            })
            .await
        });

    let bill_day = warp::path!("admin" / "api" / "reconciliation" / String).and(warp::get()).and(authed.clone()).then(
        |day: String, admin: Arc<Admin>| {
            blocking(move || match admin.bill_day(&day) {
                Ok(Some(view)) => reply::json(&view).into_response(),
                Ok(None) => json_error(StatusCode::NOT_FOUND, "NOT_RECONCILED", "this day has not been reconciled"),
                Err(e) => internal(e),
            })
        },
    );

    let bill_file = warp::path!("admin" / "api" / "reconciliation" / String / "bill")
        .and(warp::get())
        .and(authed.clone())
        .then(|day: String, admin: Arc<Admin>| {
            blocking(move || match admin.store.bill_file(&day) {
                Ok(Some(gzip)) => {
                    let name = format!("attachment; filename=\"wechatpay-bill-{day}.csv.gz\"");
                    let r = reply::with_header(gzip, "content-type", "application/gzip");
                    reply::with_header(r, "content-disposition", name).into_response()
                }
                Ok(None) => json_error(StatusCode::NOT_FOUND, "NO_BILL_KEPT", "no bill is kept for this day"),
                Err(e) => internal(e),
            })
        });

    let bill_run = warp::path!("admin" / "api" / "reconciliation" / String / "run")
        .and(warp::post())
        .and(caller())
        .and(with(admin.clone()))
        .then(|day: String, c: Caller, admin: Arc<Admin>| async move {
            if let Err(refusal) = c.authorize_change(&admin) {
                return refusal.reply();
            }
            tracing::info!(day, from = %c.ip, "daily bill: reconciliation asked for from the admin page");
            match admin.reconciler.run_day(&day).await {
                Ok(result) => reply::json(&admin::BillDayView::from(&result)).into_response(),
                Err(crate::pay::reconcile::ReconcileError::Day(message)) => {
                    json_error(StatusCode::BAD_REQUEST, "INVALID_DAY", &message)
                }
                Err(crate::pay::reconcile::ReconcileError::Store(e)) => internal(e),
            }
        });

    let integration = warp::path!("admin" / "api" / "integration")
        .and(warp::get())
        .and(authed.clone())
        .map(|admin: Arc<Admin>| reply::json(&admin.integration()).into_response());

    let system = warp::path!("admin" / "api" / "system").and(warp::get()).and(authed).then(|admin: Arc<Admin>| {
        blocking(move || match admin.system() {
            Ok(s) => reply::json(&s).into_response(),
            Err(e) => internal(e),
        })
    });

    // "Check credentials": the doctor for the running configuration. It
    // calls WeChat, so it is a change as far as CSRF goes, and bounded.
    let checkup = warp::path!("admin" / "api" / "system" / "checkup")
        .and(warp::post())
        .and(caller())
        .and(with(admin.clone()))
        .then(|c: Caller, admin: Arc<Admin>| async move {
            if let Err(refusal) = c.authorize_change(&admin) {
                return refusal.reply();
            }
            match admin.checkup().await {
                Some(Ok(report)) => reply::json(&serde_json::json!({
                    "checks": report.checks, "failed": report.failed(), "summary": report.summary(),
                }))
                .into_response(),
                Some(Err(refused)) => json_error(StatusCode::TOO_MANY_REQUESTS, "TOO_SOON", &refused.to_string()),
                None => json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no checkup in this server"),
            }
        });

    let api = overview
        .or(orders)
        .unify()
        .or(export)
        .unify()
        .or(order)
        .unify()
        .or(notifies)
        .unify()
        .or(system)
        .unify()
        .or(resend)
        .unify()
        .or(refund)
        .unify()
        .boxed();
    // Boxed in groups: a long chain of warp filters makes one deeply nested
    // type that takes the compiler minutes.
    let reconciliation =
        bill_days.or(bill_day).unify().or(bill_file).unify().or(bill_run).unify().or(checkup).unify().boxed();
    let api =
        api.or(reconciliation).unify().or(integration).unify().or(login).unify().or(logout).unify().or(session).unify();
    page.or(static_file)
        .unify()
        .or(api)
        .unify()
        .with(warp::reply::with::headers(security_headers()))
        .map(Reply::into_response)
        .boxed()
}

fn asset(name: &str) -> Response {
    match assets::get(name) {
        Some((content_type, bytes)) => reply::with_header(bytes, "content-type", content_type).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such file"),
    }
}

async fn login(c: Caller, content_type: Option<String>, body: bytes::Bytes, admin: Arc<Admin>) -> Response {
    if !c.same_origin() {
        return json_error(StatusCode::FORBIDDEN, "CSRF", "cross-site login refused");
    }
    // A cross-site form cannot send JSON without a CORS preflight, which PayBridge never grants.
    if !content_type.is_some_and(|t| t.starts_with("application/json")) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "JSON_REQUIRED",
            "send {\"password\": \"...\"} as application/json",
        );
    }
    let Some(hash) = admin.password_hash.clone() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ADMIN_DISABLED",
            "no admin password is set; run `paybridge admin set-password --config FILE` and restart",
        );
    };
    let Some(password) = parse_login(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "INVALID_JSON", "send {\"password\": \"...\"}");
    };
    // Counted before it is checked, so a burst cannot outrun the count.
    let attempt = match admin.limiter.begin(c.ip).await {
        Ok(attempt) => attempt,
        Err(throttled) => {
            let (wait, message) = match throttled {
                auth::Throttled::Address(wait) => {
                    (wait.as_secs() + 1, format!("too many failed logins; try again in {} seconds", wait.as_secs() + 1))
                }
                auth::Throttled::Busy => (2, "too many logins at once; try again in a few seconds".to_owned()),
            };
            let reply = json_error(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_ATTEMPTS", &message);
            return reply::with_header(reply, "retry-after", wait.to_string()).into_response();
        }
    };
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash)).await.unwrap_or(false);
    if !ok {
        attempt.failed().await;
        tracing::warn!(target: "paybridge::admin", ip = %c.ip, "admin login failed");
        return json_error(StatusCode::UNAUTHORIZED, "WRONG_PASSWORD", "wrong password");
    }
    attempt.succeeded();
    let (token, csrf) = admin.sessions.create();
    tracing::info!(target: "paybridge::admin", ip = %c.ip, "admin logged in");
    let body = reply::json(&serde_json::json!({ "csrf": csrf, "sandbox": admin.sandbox() }));
    reply::with_header(body, "set-cookie", c.cookie(&token, 12 * 3600)).into_response()
}
