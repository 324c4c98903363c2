//! Sandbox mode: a faithful WeChat Pay simulator, served on its own port.
//!
//! Tests use it as WeChat's stand-in; `paybridge sandbox` (or `paybridge`
//! with no arguments) runs PayBridge against it so a merchant can try the
//! whole flow without credentials. Everything here says SANDBOX.

mod bills;
pub mod keys;
pub mod notifier;
pub mod secapi;
pub mod simulator;
pub mod v3;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Filter;

pub use bills::BillFault;
pub use simulator::{Fault, PayRequest, Simulator, SimulatorConfig};

use crate::http::{body, with};

/// The simulator's HTTP routes: WeChat's (`/sns/jscode2session`,
/// `/pay/unifiedorder`, `/pay/orderquery`, `/pay/closeorder`, and API v3's
/// `/v3/...` for the same merchant) and the
/// control API (`/sandbox/pay`, `/sandbox/orders/{no}`, `/sandbox/faults`).
pub fn routes(sim: Simulator) -> warp::filters::BoxedFilter<(Response,)> {
    let with_sim = with(sim);
    let login = warp::path!("sns" / "jscode2session")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_sim.clone())
        .map(|q: HashMap<String, String>, sim: Simulator| {
            sim.count_call("jscode2session");
            reply::json(&sim.jscode2session(&q)).into_response()
        });
    let pay =
        warp::path!("pay" / String).and(warp::method()).and(body::limited(1024 * 1024)).and(with_sim.clone()).then(
            |api: String, method: warp::http::Method, body: bytes::Bytes, sim: Simulator| async move {
                sim.count_call(&format!("pay/{}", crate::text::clip(&api, 40)));
                let r = sim.pay_api(&api, method == warp::http::Method::POST, &body);
                if let Some(delay) = r.delay {
                    tokio::time::sleep(delay).await;
                }
                let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let content_type = if r.status == 200 { "text/plain" } else { "text/html" };
                reply::with_header(reply::with_status(r.body, status), "content-type", content_type).into_response()
            },
        );
    let control_pay =
        warp::path!("sandbox" / "pay").and(warp::post()).and(json_body::<PayRequest>()).and(with_sim.clone()).map(
            |req: Result<PayRequest, String>, sim: Simulator| match req {
                Err(e) => control_error(StatusCode::BAD_REQUEST, &e),
                Ok(req) => match sim.pay(&req) {
                    Ok(transaction_id) => {
                        reply::json(&serde_json::json!({ "transaction_id": transaction_id })).into_response()
                    }
                    Err(e) => control_error(StatusCode::CONFLICT, &e),
                },
            },
        );
    let control_order = warp::path!("sandbox" / "orders" / String).and(warp::get()).and(with_sim.clone()).map(
        |no: String, sim: Simulator| match sim.report(&no) {
            Some(report) => reply::json(&report).into_response(),
            None => control_error(StatusCode::NOT_FOUND, "no such order in the simulator"),
        },
    );
    let control_faults =
        warp::path!("sandbox" / "faults").and(warp::post()).and(json_body::<Vec<Fault>>()).and(with_sim.clone()).map(
            |faults: Result<Vec<Fault>, String>, sim: Simulator| match faults {
                Err(e) => control_error(StatusCode::BAD_REQUEST, &e),
                Ok(faults) => {
                    sim.inject(faults);
                    reply::json(&serde_json::json!({ "ok": true })).into_response()
                }
            },
        );
    let v3 = warp::path("v3")
        .and(warp::method())
        .and(crate::http::path_and_query())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("wechatpay-serial"))
        .and(warp::header::optional::<String>("host"))
        .and(body::limited(64 * 1024))
        .and(with_sim.clone())
        .then(
            |method: warp::http::Method,
             path_and_query: String,
             authorization: Option<String>,
             wants_serial: Option<String>,
             host: Option<String>,
             body: bytes::Bytes,
             sim: Simulator| async move {
                let now = crate::clock::now_ms() / 1000;
                let path = path_and_query.split('?').next().unwrap_or_default();
                let api: Vec<&str> = path.split('/').skip(1).take(4).collect();
                sim.count_call(&format!("{method} /{}", api.join("/")));
                let (auth, serial, host) =
                    (authorization.as_deref(), wants_serial.as_deref(), host.unwrap_or_default());
                if let Some(reply) = sim.v3_bill(method.as_str(), &path_and_query, auth, serial, &host, now) {
                    return v3::into_response(reply);
                }
                if method == warp::http::Method::GET && path_and_query.starts_with("/v3/pay/transactions/") {
                    sim.count_query();
                }
                match sim.next_fault() {
                    Some(Fault::Http { status }) => {
                        let page = format!("<html><body><h1>{status}</h1>upstream error</body></html>");
                        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                        return reply::with_status(reply::html(page), status).into_response();
                    }
                    Some(Fault::Delay { ms }) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
                    Some(Fault::Business { code, description }) => {
                        return v3::into_response(sim.v3().error_reply(500, &code, &description, now));
                    }
                    Some(Fault::ReturnFail { message }) => {
                        let body = serde_json::json!({ "code": "SIGN_ERROR", "message": message });
                        return reply::with_status(reply::json(&body), StatusCode::UNAUTHORIZED).into_response();
                    }
                    Some(other) => sim.v3().inject(other.v3_sign_fault()),
                    None => {}
                }
                let reply = sim.v3().handle_with_serial(
                    method.as_str(),
                    &path_and_query,
                    authorization.as_deref(),
                    wants_serial.as_deref(),
                    &body,
                    now,
                );
                // A refund WeChat accepted ends soon after, with a notify.
                sim.end_new_refunds();
                v3::into_response(reply)
            },
        );
    let demo_platform = warp::path!("demo-a" / "webhook")
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(body::limited(64 * 1024))
        .map(|headers: warp::http::HeaderMap, body: bytes::Bytes| demo_platform_receives(&headers, &body));
    login
        .or(demo_platform)
        .unify()
        .or(v3)
        .unify()
        .or(pay)
        .unify()
        .or(control_pay)
        .unify()
        .or(control_order)
        .unify()
        .or(control_faults)
        .unify()
        .recover(|r: warp::Rejection| async move {
            let message = format!("SANDBOX simulator: {r:?}");
            Ok::<_, Infallible>(control_error(StatusCode::BAD_REQUEST, &message))
        })
        .unify()
        .boxed()
}

/// The sandbox's demo platform A receiving a webhook: it checks the
/// signature and freshness as A's backend would, and says what it verified.
fn demo_platform_receives(headers: &warp::http::HeaderMap, body: &[u8]) -> Response {
    use crate::sandbox::keys::DEMO_PLATFORM_KEY;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let verified = crate::platform::webhook::verify(
        &crate::secret::Secret::new(DEMO_PLATFORM_KEY),
        header("paybridge-timestamp"),
        header("paybridge-signature"),
        body,
        crate::clock::now_ms() / 1000,
    );
    if let Err(reason) = verified {
        tracing::warn!(reason, "SANDBOX demo platform A: refused a webhook");
        return control_error(StatusCode::UNAUTHORIZED, reason);
    }
    let event: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let order = &event["order"];
    let kind = event["type"].as_str().unwrap_or("?");
    let refund = &event["refund"];
    if refund.is_object() {
        // What A's backend acts on for a refund: this refund's amount, and
        // how much of the order is refunded by now; not what was paid.
        tracing::info!(
            event = %event["id"].as_str().unwrap_or(""),
            order_id = %order["orderId"].as_str().unwrap_or(""),
            out_trade_no = %order["outTradeNo"].as_str().unwrap_or(""),
            out_refund_no = %refund["outRefundNo"].as_str().unwrap_or(""),
            status = %refund["status"].as_str().unwrap_or(""),
            amount = refund["amount"].as_u64().unwrap_or(0),
            refunded_total = order["refundedAmount"].as_u64().unwrap_or(0),
            order_amount = order["amount"].as_u64().unwrap_or(0),
            "SANDBOX demo platform A: signature verified, {kind}"
        );
    } else {
        tracing::info!(
            event = %event["id"].as_str().unwrap_or(""),
            order_id = %order["orderId"].as_str().unwrap_or(""),
            out_trade_no = %order["outTradeNo"].as_str().unwrap_or(""),
            amount = order["amount"].as_u64().unwrap_or(0),
            "SANDBOX demo platform A: signature verified, {kind}"
        );
    }
    reply::json(&serde_json::json!({ "ok": true })).into_response()
}

/// A JSON control request, with or without a `Content-Type` (curl users forget it).
fn json_body<T: serde::de::DeserializeOwned + Send>(
) -> impl Filter<Extract = (Result<T, String>,), Error = warp::Rejection> + Clone {
    body::limited(64 * 1024)
        .map(|bytes: bytes::Bytes| serde_json::from_slice(&bytes).map_err(|e| format!("bad JSON: {e}")))
}

fn control_error(status: StatusCode, message: &str) -> Response {
    reply::with_status(reply::json(&serde_json::json!({ "error": message })), status).into_response()
}

/// The walkthrough printed when the sandbox starts: an order by product,
/// the platform flow A → B → A with the demo platform, then what the merchant
/// does afterwards: the admin page (with `admin_password`, the one the
/// sandbox made up, if it did), a refund, and the day's reconciliation of the
/// data in `data_dir`. Every command works as pasted (`tests/binary.rs`
/// pastes them), so the reconcile command names this very binary by its
/// path: after `cargo run` there is no `paybridge` on the PATH.
pub fn walkthrough(
    paybridge: SocketAddr,
    simulator: SocketAddr,
    code: &str,
    out_trade_no: &str,
    api: &str,
    admin_password: Option<&str>,
    data_dir: &std::path::Path,
) -> String {
    let binary = std::env::current_exe().map_or_else(|_| "cargo run --release --".to_owned(), |p| sh_quote(&p));
    // Absolute, so the command also works from another directory or shell.
    let data_dir = sh_quote(&std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned()));
    let today = crate::store::day_string(crate::store::beijing_day(crate::pay::now_ms()));
    // A sandbox run from a config file with its own password hash: the
    // merchant knows the password, the walkthrough does not.
    let (password_step, password) = match admin_password {
        Some(p) => (format!("the SANDBOX password {p}"), p.to_owned()),
        None => {
            ("your admin password (put it in $ADMIN_PASSWORD first)".to_owned(), "'\"$ADMIN_PASSWORD\"'".to_owned())
        }
    };
    let api = match api {
        "v3" => {
            "API v3 (JSON; requests and paySign signed with RSA; WeChat verified with its public key; AES-GCM notifies)"
        }
        _ => "API v2 (XML, MD5 signatures)",
    };
    use crate::sandbox::keys::{DEMO_PLATFORM, DEMO_PLATFORM_KEY};
    let order_id = format!("A-{out_trade_no}");
    format!(
        r#"
================================================================
  PayBridge SANDBOX — simulated WeChat Pay, no real money moves
================================================================
PayBridge:            http://{paybridge}
WeChat Pay simulator: http://{simulator}
WeChat Pay API:       {api}

Take an order from login to PAID: paste these into one shell, in order.

1. Log in (what mini-program B does after wx.login; any string works as the
   code here, each one once, as in WeChat). This keeps the openid in $OPENID:
   OPENID=$(curl -s 'http://{paybridge}/pay/openid?code={code}' | sed -E 's/.*"openid":"([^"]*)".*/\1/'); echo "$OPENID"

2. Place the order for that openid: product "demo" of the sandbox's catalogue,
   whose price (1 fen) PayBridge sets itself:
   curl -X POST http://{paybridge}/pay/unifiedOrder \
        -H 'content-type: application/json' \
        -d '{{"outTradeNo":"{out_trade_no}","productId":"demo","openid":"'"$OPENID"'"}}'

3. Be the user who pays (the simulator then sends PayBridge a signed notify):
   curl -X POST http://{simulator}/sandbox/pay \
        -H 'content-type: application/json' -d '{{"out_trade_no":"{out_trade_no}"}}'

4. See the order PAID (only its payer may: by openid, or by the orderToken from step 2):
   curl "http://{paybridge}/pay/orders/{out_trade_no}?openid=$OPENID"

Then the platform flow, A → B → A: platform A's backend creates and signs the
order, mini-program B pays it without naming an amount, A gets a signed webhook.

5. Be platform A's backend: the sandbox's demo platform "{DEMO_PLATFORM}" (its key is
   public: sandbox only) signs the order and sends it; $NO keeps PayBridge's number:
   KEY={DEMO_PLATFORM_KEY}; BODY='{{"orderId":"{order_id}","amount":1990,"description":"VIP month"}}'; TS=$(date +%s); NONCE=$(openssl rand -hex 16)
   SIG=$(printf 'POST\n/platform/v1/orders\n%s\n%s\n%s\n' "$TS" "$NONCE" "$(printf '%s' "$BODY" | openssl dgst -sha256 | sed 's/^.*= //')" | openssl dgst -sha256 -hmac "$KEY" | sed 's/^.*= //')
   NO=$(curl -s -X POST http://{paybridge}/platform/v1/orders -H "PayBridge-Platform: {DEMO_PLATFORM}" -H "PayBridge-Timestamp: $TS" -H "PayBridge-Nonce: $NONCE" -H "PayBridge-Signature: $SIG" -d "$BODY" | sed -E 's/.*"outTradeNo":"([^"]*)".*/\1/'); echo "$NO"

6. Be mini-program B: place that order for the user of step 1 (no amount: A set
   it), then be the user who pays:
   curl -X POST http://{paybridge}/pay/unifiedOrder -H 'content-type: application/json' -d '{{"outTradeNo":"'"$NO"'","openid":"'"$OPENID"'"}}'
   curl -X POST http://{simulator}/sandbox/pay -H 'content-type: application/json' -d '{{"out_trade_no":"'"$NO"'"}}'

7. Demo platform A's webhook receiver logs what it verified, in this terminal:
   "SANDBOX demo platform A: signature verified, order.paid" with order_id="{order_id}".

Then the merchant's side: the admin page, a refund, the day's reconciliation (对账).

8. Open http://{paybridge}/admin in a browser and sign in with
   {password_step}:
   both orders are there, PAID. The same from this shell, through the admin
   page's own API ($JAR keeps the session cookie, $CSRF the token every
   change must carry):
   JAR=$(mktemp); CSRF=$(curl -s -c "$JAR" -X POST http://{paybridge}/admin/api/login -H 'content-type: application/json' -d '{{"password":"{password}"}}' | sed -E 's/.*"csrf":"([^"]*)".*/\1/'); echo "$CSRF"

9. Refund 5.00 yuan of platform A's order (the order's detail page has the same
   form). The simulator ends the refund with a signed refund notify a moment
   later, and demo platform A logs "signature verified, order.refunded":
   curl -s -b "$JAR" -X POST "http://{paybridge}/admin/api/orders/$NO/refunds" -H "X-CSRF-Token: $CSRF" -H 'content-type: application/json' -d '{{"amount":500,"reason":"sandbox demo refund"}}'

10. Reconcile today with WeChat's bill (live PayBridge does this by itself every
   morning for the day before; the simulator makes today's bill at once). It
   prints "{today}: MATCHED (2 payments, ¥19.91; 1 refunds, ¥5.00)":
   {binary} reconcile --data-dir {data_dir} --date {today}

Stop with Ctrl-C. Orders are kept in the sandbox data directory.
"#
    )
}

/// `path` as one shell word: single-quoted, any single quote in it spelled `'\''`.
fn sh_quote(path: &std::path::Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The mutual-TLS port's routes: only `/secapi/pay/refund`.
fn secapi_routes(sim: Simulator) -> warp::filters::BoxedFilter<(Response,)> {
    warp::path!("secapi" / "pay" / "refund")
        .and(warp::post())
        .and(body::limited(64 * 1024))
        .and(with(sim))
        .map(|body: bytes::Bytes, sim: Simulator| {
            sim.count_call("secapi/pay/refund");
            let r = sim.secapi_refund(&body, crate::clock::now_ms() / 1000);
            // A refund WeChat accepted ends soon after, with a notify.
            sim.end_new_refunds();
            reply::with_header(reply::with_status(r.body, StatusCode::OK), "content-type", "text/plain").into_response()
        })
        .boxed()
}

/// A simulator serving on a bound port.
pub struct SimulatorHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where `/secapi/...` listens (HTTPS, client certificate required).
    pub secapi_addr: SocketAddr,
    /// The simulator, to inspect or control directly.
    pub simulator: Simulator,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl SimulatorHandle {
    /// Its base URL, for `pay_base_url` and `sns_base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The mutual-TLS API's base URL, for `secapi_base_url`.
    pub fn secapi_url(&self) -> String {
        format!("https://{}", self.secapi_addr)
    }

    /// Stops serving.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Serves `simulator` on `listener`.
pub fn serve_simulator(simulator: Simulator, listener: tokio::net::TcpListener) -> std::io::Result<SimulatorHandle> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // WeChat does not cap a merchant at a few hundred connections; the
    // simulator must not either, or load tests measure the simulator.
    let limits = crate::server::ConnectionLimits { total: 16_384, per_ip: 16_384, ..Default::default() };
    let serving = crate::server::Serving { metrics: None, limits };
    let secure = std::net::TcpListener::bind((addr.ip(), 0))?;
    secure.set_nonblocking(true)?;
    let secure = tokio::net::TcpListener::from_std(secure)?;
    let secapi_addr = secure.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(simulator.merchant_tls().server.clone());
    let (plain_routes, secure_routes) = (routes(simulator.clone()), secapi_routes(simulator.clone()));
    let task = tokio::spawn(async move {
        let (stop_plain, stopped_plain) = tokio::sync::watch::channel(false);
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let plain = crate::server::run(listener, plain_routes, serving.clone(), wait(stopped_plain.clone()));
        let secure = crate::server::run_tls(secure, acceptor, secure_routes, serving, wait(stopped_plain));
        let stop = async move {
            let _ = stopped.await;
            let _ = stop_plain.send(true);
        };
        tokio::join!(plain, secure, stop);
    });
    Ok(SimulatorHandle { addr, secapi_addr, simulator, stop, task })
}
