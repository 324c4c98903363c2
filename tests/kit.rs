//! The integration kit's JavaScript runs: `tests/kit/flow.js` drives the
//! files the admin page's Integration view serves (placeholders filled in)
//! in Node.js against a running PayBridge and the simulator.

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;
#[path = "common/process.rs"]
mod process;

use std::time::{Duration, Instant};

use common::{Env, Opts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_runs_in_node_against_a_running_paybridge() {
    let hook_port = process::free_tcp_port();
    let webhook = format!("http://127.0.0.1:{hook_port}/paybridge/webhook");
    let extra = platform_a::platform_toml(platform_a::PLATFORM, platform_a::KEY, &webhook);
    let env = Env::start(Opts { accept_client_amount: false, extra, ..Opts::default() }).await;

    // The files as the merchant gets them from the Integration view.
    let admin = common::login(&env).await;
    let (status, view) = admin.get("/admin/api/integration").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["apiBase"], env.base.as_str());
    assert!(!view.to_string().contains(platform_a::KEY), "the view never shows a key");
    let kit = tempfile::tempdir().unwrap();
    for file in view["files"].as_array().unwrap() {
        std::fs::write(kit.path().join(file["name"].as_str().unwrap()), file["text"].as_str().unwrap()).unwrap();
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kit/flow.js");
    let mut node = std::process::Command::new("node")
        .arg(script)
        .env("KIT_DIR", kit.path())
        .env("BASE", &env.base)
        .env("SIM", env.sim.url())
        .env("KEY", platform_a::KEY)
        .env("PLATFORM", platform_a::PLATFORM)
        .env("B_APPID", common::APPID)
        .env("HOOK_PORT", hook_port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node (Node.js 18+) runs the kit's tests; `bash .ci/run` installs it");
    let started = Instant::now();
    // Output goes to pipes read at the end: the script prints a few lines only.
    let output = loop {
        if node.try_wait().unwrap().is_some() {
            break node.wait_with_output().unwrap();
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = node.kill();
            panic!("the kit's flow did not finish in 2 minutes: {:?}", node.wait_with_output());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "flow.js failed:\n{stdout}\n{stderr}");
    for check in ["OK platform order", "OK order token", "OK cancel", "OK failures", "OK close", "OK forged"] {
        assert!(stdout.contains(check), "{check} missing:\n{stdout}");
    }

    // The curl/openssl recipe, as filled in: it creates an order and reads it back.
    let out = std::process::Command::new("bash")
        .arg(kit.path().join("a-backend.sh"))
        .env("PAYBRIDGE_KEY", platform_a::KEY)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    let replies: Vec<serde_json::Value> = printed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(replies.len(), 2, "{printed}");
    assert_eq!((replies[0]["status"].as_str(), replies[0]["amount"].as_u64()), (Some("CREATED"), Some(1990)));
    assert_eq!(replies[1]["outTradeNo"], replies[0]["outTradeNo"], "read back by orderId");
    env.stop().await;
}

/// Platform A's manual, where the worked examples are printed.
const MANUAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/static/docs/platform-a.md");

/// The key every worked example uses (its ASCII text is the HMAC key).
const EXAMPLE_KEY: &str = "3c9f0b6e2a4d8c1f7e5a9b3d6c0f2e4a8b1d7c5e9f3a6b0c2d4e8f1a3b5c7d9e";

/// Runs the `sh` block after `**Worked example: {name}**` in the manual with
/// bash, as a reader would paste it, and checks that it prints exactly the
/// `# => ` lines written under its commands. Returns those lines, for the
/// caller to compare with what PayBridge's own code computes.
fn run_worked_example(name: &str) -> Vec<String> {
    let manual = std::fs::read_to_string(MANUAL).unwrap();
    let marker = format!("**Worked example: {name}**");
    let example = manual.split(&marker).nth(1).unwrap_or_else(|| panic!("{marker} is not in {MANUAL}"));
    let script = example.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let expected: Vec<String> = script.lines().filter_map(|l| l.strip_prefix("# => ")).map(str::to_owned).collect();
    assert!(!expected.is_empty(), "{marker}: no `# => ` line to check: {script}");
    let out = std::process::Command::new("bash").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{marker}: {}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(printed, expected, "{marker}: what it prints is not what the manual says");
    expected
}

/// The worked example of a signed request, run as printed with openssl: the
/// numbers under it are what openssl prints and what PayBridge computes (see
/// also `platform::auth`'s unit test of the same example).
#[test]
fn the_manuals_signing_example_runs_as_printed() {
    let expected = run_worked_example("signing a request");
    assert_eq!(expected.len(), 2, "the body hash and the signature: {expected:?}");
    let server_side = paybridge::platform::auth::sign(
        &paybridge::secret::Secret::new(EXAMPLE_KEY),
        &paybridge::platform::auth::Request {
            method: "POST",
            path_and_query: "/platform/v1/orders",
            body: br#"{"orderId":"A-20261127-0001","amount":1990,"description":"VIP month"}"#,
        },
        1_764_226_800,
        "3f1c0a9e5b7d4c2a8e6f",
    );
    assert_eq!(server_side, expected[1]);
}

/// The worked order token: openssl makes the printed token, PayBridge's own
/// signer makes the same one, and PayBridge accepts it (until its expiry)
/// with the claims the manual lists.
#[test]
fn the_manuals_order_token_example_is_what_paybridge_signs_and_accepts() {
    use paybridge::platform::token::{self, TokenClaims};
    let printed = run_worked_example("an order token");
    let claims = TokenClaims {
        platform: "shop-a".into(),
        order_id: "A-20261127-0002".into(),
        amount: 990,
        description: "Ticket".into(),
        attach: "seat 12".into(),
        expires_at: 1_795_773_600,
        nonce: "7b1e4f0c9a2d".into(),
    };
    let key = paybridge::secret::Secret::new(EXAMPLE_KEY);
    assert_eq!(printed, [token::sign(&key, &claims)]);
    let platforms = paybridge::config::Platforms::new(vec![paybridge::config::Platform {
        id: "shop-a".into(),
        key,
        previous_key: None,
        webhook_url: "https://a.example.com/paybridge/webhook".parse().unwrap(),
        appid: None,
    }]);
    let before_expiry = (claims.expires_at - 3600) * 1000;
    assert_eq!(token::verify(&platforms, &printed[0], before_expiry), Ok(claims.clone()));
    let at_expiry = claims.expires_at * 1000;
    assert_eq!(token::verify(&platforms, &printed[0], at_expiry), Err(token::TokenError::Expired(claims.expires_at)));
}

/// The worked webhook: its body is byte for byte what PayBridge sends for
/// that payment, and its signature is PayBridge's.
#[test]
fn the_manuals_webhook_example_is_what_paybridge_sends() {
    use paybridge::platform::webhook;
    use paybridge::store::{Delivery, DeliveryState, EventKind};
    let printed = run_worked_example("a webhook's signature");
    let delivery = Delivery {
        id: 0x2a,
        platform: "shop-a".into(),
        kind: EventKind::Paid,
        created_at: 1_795_764_672_402,
        out_trade_no: "PB20261127153005Xk2m9Qa7Lc".into(),
        order_id: "A-20261127-0001".into(),
        total_fee: 1990,
        transaction_id: Some("4200000475426856964606091033".into()),
        time_end: Some("20261127153112".into()),
        state: DeliveryState::Pending,
        attempts: 0,
        next_at: None,
        last_attempt_at: None,
        last_result: None,
        refund: None,
    };
    let body = webhook::event_body(&delivery, false);
    let manual = std::fs::read_to_string(MANUAL).unwrap();
    let example = manual.split("**Worked example: a webhook's signature**").nth(1).unwrap();
    let printed_body = example.split("BODY='").nth(1).unwrap().split("'\n").next().unwrap();
    assert_eq!(printed_body, String::from_utf8(body.clone()).unwrap(), "the body PayBridge sends");
    let key = paybridge::secret::Secret::new(EXAMPLE_KEY);
    assert_eq!(printed, [webhook::signature(&key, 1_795_764_673, &body)]);
    assert_eq!(webhook::verify(&key, "1795764673", &printed[0], &body, 1_795_764_700), Ok(()));
}

/// The worked result: PayBridge's own signer makes the printed `pbr1`
/// text, its verifier reads back the printed claims, and the shell recipe
/// that checks it prints the signature twice and the JSON.
#[test]
fn the_manuals_result_example_is_what_paybridge_signs() {
    use paybridge::platform::token::{self, ResultClaims};
    let printed = run_worked_example("checking a result");
    assert_eq!(printed.len(), 3, "{printed:?}");
    assert_eq!(printed[0], printed[1], "the recomputed signature is the one it carries");
    let claims = ResultClaims {
        platform: "shop-a".into(),
        order_id: "A-20261127-0001".into(),
        out_trade_no: "PB20261127153005Xk2m9Qa7Lc".into(),
        status: "PAID".into(),
        amount: 1990,
        transaction_id: Some("4200000475426856964606091033".into()),
        at: 1_795_764_680,
    };
    let key = paybridge::secret::Secret::new(EXAMPLE_KEY);
    let signed = token::sign_result(&key, &claims);
    let manual = std::fs::read_to_string(MANUAL).unwrap();
    assert!(manual.contains(&format!("RESULT={signed}\n")), "the printed result is PayBridge's: {signed}");
    assert_eq!(token::verify_result(&key, &signed), Some(claims.clone()));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&printed[2]).unwrap(), serde_json::to_value(&claims).unwrap());
    let other_key = paybridge::secret::Secret::new("another-key-another-key-another-key");
    assert_eq!(token::verify_result(&other_key, &signed), None, "another key's check fails");
}

/// What platform-a.md promises A's developer beyond the worked examples,
/// against a running PayBridge: a token nobody used is revoked by taking its
/// `orderId` and closing that order; a repeated create with another
/// `expiresIn` keeps the first expiry; an unknown field is `INVALID_JSON`;
/// the change feed's items carry `change` and its `limit` stops at 200.
#[tokio::test]
async fn the_manuals_platform_promises_hold_against_a_running_paybridge() {
    use paybridge::platform::token::{self, TokenClaims};
    use serde_json::json;
    let extra = platform_a::platform_toml(platform_a::PLATFORM, platform_a::KEY, "http://127.0.0.1:9/unused");
    let env = Env::start(Opts { accept_client_amount: false, extra, ..Opts::default() }).await;
    let a = platform_a::Backend::new(&env.base);
    let openid = env.openid("manual").await;

    // Revoking an unused token: create its order by the API with the same
    // fields, close it; the token then names a closed order.
    let claims = TokenClaims {
        platform: platform_a::PLATFORM.into(),
        order_id: "A-REVOKE-1".into(),
        amount: 990,
        description: "Ticket".into(),
        attach: "seat 12".into(),
        expires_at: platform_a::now_secs() + 3600,
        nonce: platform_a::nonce(),
    };
    let signed = token::sign(&paybridge::secret::Secret::new(platform_a::KEY), &claims);
    let body = json!({ "orderId": "A-REVOKE-1", "amount": 990, "description": "Ticket", "attach": "seat 12" });
    let (status, created) = a.call("POST", "/platform/v1/orders", body.to_string().as_bytes()).await;
    assert_eq!(status, 201, "{created}");
    let no = created["outTradeNo"].as_str().unwrap();
    let (status, closed) = a.call("POST", &format!("/platform/v1/orders/{no}/close"), b"").await;
    assert_eq!((status, closed["status"].as_str()), (200, Some("CLOSED")), "{closed}");
    let (status, refused) = env.post_json("/pay/unifiedOrder", &json!({ "token": signed, "openid": openid })).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("ORDER_CLOSED")), "{refused}");

    // A repeat with another expiresIn: the same order, its first expiry.
    let first = json!({ "orderId": "A-EXPIRY-1", "amount": 100, "description": "Coffee", "expiresIn": 600 });
    let (status, made) = a.call("POST", "/platform/v1/orders", first.to_string().as_bytes()).await;
    assert_eq!(status, 201, "{made}");
    let again = json!({ "orderId": "A-EXPIRY-1", "amount": 100, "description": "Coffee", "expiresIn": 3600 });
    let (status, repeated) = a.call("POST", "/platform/v1/orders", again.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{repeated}");
    assert_eq!(
        (repeated["outTradeNo"].clone(), repeated["expiresAt"].clone()),
        (made["outTradeNo"].clone(), made["expiresAt"].clone())
    );
    assert!(made["expiresAt"].as_str().unwrap().ends_with('Z'), "RFC 3339 in orders: {made}");

    // A misspelt field is refused, not defaulted.
    let misspelt = json!({ "orderId": "A-SPELL-1", "amount": 100, "description": "Coffee", "expires_in": 600 });
    let (status, refused) = a.call("POST", "/platform/v1/orders", misspelt.to_string().as_bytes()).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("INVALID_JSON")), "{refused}");

    // The change feed: defaults, each item's cursor, the page limit.
    let (status, feed) = a.call("GET", "/platform/v1/changes", b"").await;
    assert_eq!(status, 200, "{feed}");
    let items = feed["items"].as_array().unwrap();
    assert!(items.len() >= 3 && items.iter().all(|i| i["change"].is_string()), "{feed}");
    assert_eq!(feed["next"], items.last().unwrap()["change"], "{feed}");
    let (status, refused) = a.call("GET", "/platform/v1/changes?after=0&limit=201", b"").await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("INVALID_REQUEST")), "{refused}");
    env.stop().await;
}
