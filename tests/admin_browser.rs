//! The admin page in a real headless Chromium (Debian `chromium` and
//! `chromium-driver`), driven over WebDriver with fantoccini. Screenshots
//! of every view are saved under `target/screenshots/` for review.

mod common;
#[path = "common/platform_a.rs"]
mod platform_a;
#[path = "common/process.rs"]
mod process;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{notify_fields, signed_xml, Env, Opts, ADMIN_PASSWORD};
use fantoccini::{Client, ClientBuilder, Locator};
use paybridge::wechat::sign::SignType;
use process::{free_tcp_port, ChildGuard};
use serde_json::{json, Value};

/// chromedriver and a browser session, closed when dropped.
struct Browser {
    client: Client,
    _driver: ChildGuard,
}

/// A browser with a 360-px phone viewport (`mobile`) or a 1280-px desktop one.
async fn browser(lang: &str, mobile: bool) -> Browser {
    let port = free_tcp_port();
    let driver = ChildGuard::spawn(Command::new("chromedriver").arg(format!("--port={port}")));
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start: {}", driver.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().unwrap().keep();
    let mut options = json!({
        "binary": "/usr/bin/chromium",
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--window-size=1280,900", format!("--lang={lang}"),
            format!("--user-data-dir={}", profile.display()),
        ],
        "prefs": { "intl.accept_languages": lang },
    });
    if mobile {
        // A window cannot be made narrower than ~500 px; device emulation can.
        options["mobileEmulation"] = json!({ "deviceMetrics": { "width": 360, "height": 740, "pixelRatio": 2 } });
    }
    let capabilities = json!({ "goog:chromeOptions": options });
    let Value::Object(capabilities) = capabilities else { unreachable!() };
    let client = ClientBuilder::rustls().unwrap().capabilities(capabilities).connect(&url).await.unwrap();
    Browser { client, _driver: driver }
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    /// Waits until the page has rendered `route` (the hash, without `#/`).
    async fn wait_view(&self, route: &str) {
        self.wait(&format!("body[data-view=\"{route}\"]")).await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
    }

    async fn script(&self, js: &str) -> Value {
        self.client.execute(js, vec![]).await.unwrap()
    }

    /// A 360-px phone must not scroll sideways.
    async fn assert_no_horizontal_scroll(&self, what: &str) {
        let widths = self.script("return [document.documentElement.scrollWidth, window.innerWidth];").await;
        assert_eq!(widths[1], 360, "the viewport is a 360-px phone");
        assert!(widths[0].as_u64() <= widths[1].as_u64(), "{what} scrolls sideways: {widths}");
    }

    async fn text(&self, css: &str) -> String {
        self.wait(css).await.text().await.unwrap()
    }

    async fn go(&self, base: &str, route: &str) {
        self.client.goto(&format!("{base}/admin#/{route}")).await.unwrap();
        self.wait_view(route).await;
    }

    async fn login(&self, base: &str, password: &str) {
        self.client.goto(&format!("{base}/admin")).await.unwrap();
        let field = self.wait("#password").await;
        field.send_keys(password).await.unwrap();
        self.wait("#login-submit").await.click().await.unwrap();
        self.wait_view("overview").await;
    }
}

#[tokio::test]
async fn merchant_sees_orders_and_notifies_in_chromium() {
    let env = Env::start(Opts::default()).await;
    let openid = env.openid("code-browser").await;
    assert_eq!(env.order("BROWSE0001", 1990, &openid).await.0, 200);
    let xss = "<img src=x onerror=\"window.__xss=1\">会员";
    let body = json!({ "outTradeNo": "BROWSE0002", "totalFee": 500, "body": xss, "openid": openid });
    assert_eq!(env.post_json("/pay/unifiedOrder", &body).await.0, 200);
    env.sim_pay(json!({ "out_trade_no": "BROWSE0001" })).await;
    env.wait_acknowledged("BROWSE0001").await;
    let forged =
        signed_xml(notify_fields("BROWSE0002", 500, "4200000000000000000000000077"), &"f".repeat(32), SignType::Md5);
    assert_eq!(env.notify(forged).await.1["return_code"], "FAIL", "a forged notify is refused");

    let b = browser("zh-CN", true).await;
    let base = &env.base;
    b.client.goto(&format!("{base}/admin")).await.unwrap();
    b.wait("#login-form").await;
    // The page follows the browser's language, and leaks nothing before login.
    assert_eq!(b.text("#login-form h1").await, "登录");
    let source = b.client.source().await.unwrap();
    assert!(!source.contains("BROWSE0001"));
    assert!(!b.wait("#nav").await.is_displayed().await.unwrap());
    b.screenshot("login-360-zh").await;
    b.wait("#lang").await.click().await.unwrap();
    assert_eq!(b.text("#login-form h1").await, "Sign in");

    // A wrong password is refused on the page.
    b.wait("#password").await.send_keys("not the password").await.unwrap();
    b.wait("#login-submit").await.click().await.unwrap();
    b.client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath("//p[@id='login-error' and text()!='']"))
        .await
        .unwrap();
    b.wait("#password").await.clear().await.unwrap();

    b.login(base, ADMIN_PASSWORD).await;
    let overview = b.text("#overview").await;
    assert!(overview.contains("¥19.90"), "{overview}");
    assert!(overview.contains("1 order\n") || overview.ends_with("1 order"), "one order, not \"1 orders\": {overview}");
    // The chart is drawn at the card's width, its labels at their real size, the last one inside.
    let chart = b
        .client
        .execute(
            "const s = document.getElementById('chart'); const r = s.getBoundingClientRect(); \
             const labels = [...s.querySelectorAll('text.axis')].map(t => t.getBoundingClientRect()); \
             return [r.width, s.parentElement.clientWidth, Math.min(...labels.map(l => l.height)), \
                     Math.max(...labels.map(l => l.right)) - r.right];",
            vec![],
        )
        .await
        .unwrap();
    let [svg_width, card_width, label_height, overflow] =
        serde_json::from_value::<[f64; 4]>(chart.clone()).unwrap_or_else(|_| panic!("{chart}"));
    assert!(svg_width >= card_width * 0.8, "the chart fills its card: {chart}");
    assert!(label_height >= 11.0, "labels are readable on a phone: {chart}");
    assert!(overflow <= 0.5, "no label is cut off at the right: {chart}");
    assert_eq!(b.script("return document.querySelectorAll('#chart rect.bar').length").await, 30);
    b.assert_no_horizontal_scroll("overview").await;
    b.screenshot("overview-360").await;

    b.go(base, "orders").await;
    let rows = b.client.find_all(Locator::Css("#orders-list .order")).await.unwrap();
    assert_eq!(rows.len(), 2);
    // The hostile order body is shown as text and runs nothing.
    assert_eq!(b.text(".order[data-no='BROWSE0002'] .desc").await, xss);
    assert_eq!(b.script("return typeof window.__xss").await, "undefined");
    assert_eq!(b.script("return document.querySelectorAll('#view img').length").await, 0);
    assert_eq!(b.text(".order[data-no='BROWSE0001'] .amount").await, "¥19.90");
    b.assert_no_horizontal_scroll("orders").await;
    b.screenshot("orders-360").await;

    // Detail: every field, history, and the notify with its raw XML.
    b.wait(".order[data-no='BROWSE0001']").await.click().await.unwrap();
    b.wait_view("orders/BROWSE0001").await;
    let fields = b.text("#order-fields").await;
    assert!(fields.contains("BROWSE0001") && fields.contains("19.90") && fields.contains(&openid), "{fields}");
    let history = b.text("#order-history").await;
    assert!(history.contains("CREATED") && history.contains("PREPAY") && history.contains("PAID"), "{history}");
    let notify = b.text("#order-notifies .notify").await;
    assert!(notify.contains("PAID") && notify.contains("<transaction_id>"), "{notify}");
    b.assert_no_horizontal_scroll("order detail").await;
    b.screenshot("order-detail-360").await;

    // Filter by status through the form.
    b.go(base, "orders").await;
    b.wait("#f-status").await.select_by_value("PAID").await.unwrap();
    b.wait("#f-apply").await.click().await.unwrap();
    b.wait_view("orders?status=PAID").await;
    let rows = b.client.find_all(Locator::Css("#orders-list .order")).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attr("data-no").await.unwrap().as_deref(), Some("BROWSE0001"));

    // Export what is filtered, with the browser's own session.
    let href = b.wait("#export").await.attr("href").await.unwrap().unwrap();
    assert!(href.contains("status=PAID"), "{href}");
    let script = "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.arrayBuffer())
        .then(b => done([Array.from(new Uint8Array(b).slice(0, 3)), new TextDecoder().decode(b)]));";
    let export = b.client.execute_async(script, vec![json!(href)]).await.unwrap();
    assert_eq!(export[0], json!([0xef, 0xbb, 0xbf]), "UTF-8 BOM so Excel reads Chinese");
    let csv = export[1].as_str().unwrap();
    assert!(csv.contains("BROWSE0001,PAID,19.90") && csv.contains("支付测试") && !csv.contains("BROWSE0002"), "{csv}");

    // The notify log shows the forged notify.
    b.go(base, "notifies").await;
    let log = b.text("#notifies-list").await;
    assert!(log.contains("REJECTED") && log.contains("signature"), "{log}");
    // Forged: it only claims its order, and the page says so instead of linking it.
    assert!(log.contains("claims order BROWSE0002 (unverified)"), "{log}");
    let links = b.client.find_all(Locator::Css("#notifies-list a[href='#/orders/BROWSE0002']")).await.unwrap();
    assert!(links.is_empty(), "an unverified notify is not linked to the order");
    b.assert_no_horizontal_scroll("notifies").await;
    b.screenshot("notifies-360").await;

    b.go(base, "system").await;
    let wechat = b.text("#system-wechat").await;
    assert!(wechat.contains(common::APPID) && wechat.contains(common::MCH_ID) && !wechat.contains(common::MCH_KEY));
    b.assert_no_horizontal_scroll("system").await;
    b.screenshot("system-360").await;

    // The desktop layout, in a second browser (logged in separately).
    let desktop = browser("en-US", false).await;
    desktop.login(base, ADMIN_PASSWORD).await;
    desktop.screenshot("overview-desktop").await;
    desktop.go(base, "orders").await;
    desktop.screenshot("orders-desktop").await;
    desktop.go(base, "orders/BROWSE0001").await;
    desktop.screenshot("order-detail-desktop").await;
    desktop.client.close().await.unwrap();

    // Log out: the page locks, the API refuses.
    b.wait("#logout").await.click().await.unwrap();
    b.client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#login-view:not([hidden])"))
        .await
        .unwrap();
    let status = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; fetch('/admin/api/overview').then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, 401);
    b.client.close().await.unwrap();
    env.stop().await;
}

#[tokio::test]
async fn sandbox_is_unmistakable_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let config = paybridge::config::Config::sandbox_default().with_overrides(
        Some("127.0.0.1:0".parse().unwrap()),
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.path().join("sandbox")),
    );
    let app = paybridge::app::start(config).await.unwrap();
    let password = app.sandbox_admin_password.clone().expect("the sandbox makes up a password");
    let base = format!("http://{}", app.addr);
    let b = browser("en-US", true).await;
    // Even the login screen says SANDBOX.
    b.client.goto(&format!("{base}/admin")).await.unwrap();
    b.client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(
            "#login-view:not([hidden]) ~ * #sandbox-badge:not([hidden]), #sandbox-badge:not([hidden])",
        ))
        .await
        .unwrap();
    assert!(b.wait("#sandbox-banner").await.is_displayed().await.unwrap(), "the banner on the login screen");
    b.screenshot("login-sandbox-360").await;
    b.login(&base, &password).await;
    assert!(b.wait("#sandbox-banner").await.is_displayed().await.unwrap());
    assert_eq!(b.text("#sandbox-badge").await, "SANDBOX");
    b.assert_no_horizontal_scroll("sandbox overview").await;
    b.screenshot("overview-sandbox-360").await;
    b.client.close().await.unwrap();
    app.stop().await;
}

/// A day of ordinary orders, as the README's screenshot shows it: one date
/// format in the list and the filters, amounts in yuan, statuses in words.
#[tokio::test]
async fn an_ordinary_day_reads_the_same_everywhere() {
    let env = Env::start(Opts::default()).await;
    let day = [
        ("M20261127001", 1990, "会员月卡", true),
        ("M20261127002", 19800, "年度会员", false),
        ("M20261127003", 990, "单次体验课", true),
    ];
    for (i, (no, fee, body, pay)) in day.iter().enumerate() {
        let openid = env.openid(&format!("code-day-{i}")).await;
        let order = json!({ "outTradeNo": no, "totalFee": fee, "body": body, "openid": openid });
        assert_eq!(env.post_json("/pay/unifiedOrder", &order).await.0, 200);
        if *pay {
            env.sim_pay(json!({ "out_trade_no": no })).await;
            env.wait_acknowledged(no).await;
        }
    }
    let b = browser("en-US", true).await;
    b.login(&env.base, ADMIN_PASSWORD).await;
    b.go(&env.base, "orders").await;
    let list = b.text(".list").await;
    for (no, _, body, _) in &day {
        assert!(list.contains(no) && list.contains(body), "{list}");
    }
    assert!(list.contains("¥198.00") && list.contains("¥19.90"), "{list}");
    // Dates as YYYY-MM-DD HH:MM:SS, the format the filters take.
    let dated = list.lines().filter(|l| l.contains(" 20") && l.matches('-').count() >= 2).count();
    assert_eq!(dated, 3, "one date per order, as YYYY-MM-DD: {list}");
    assert_eq!(b.wait("#f-from").await.attr("placeholder").await.unwrap().as_deref(), Some("YYYY-MM-DD"));
    b.assert_no_horizontal_scroll("orders").await;
    b.screenshot("readme-orders-360").await;

    // In Chinese the header fits a 360-px phone in two rows.
    b.wait("#lang").await.click().await.unwrap();
    b.go(&env.base, "orders").await;
    let rows = b
        .client
        .execute(
            "const mids = [...document.querySelectorAll('.top .brand, .top .tools button:not([hidden]), .top nav a')] \
             .map(e => { const r = e.getBoundingClientRect(); return (r.top + r.bottom) / 2; }).sort((a, b) => a - b); \
             let rows = 0, last = -1e9; for (const m of mids) { if (m - last > 20) { rows++; last = m; } } return rows;",
            vec![],
        )
        .await
        .unwrap();
    b.screenshot("orders-360-zh").await;
    assert!(rows.as_u64().unwrap() <= 2, "the zh header takes {rows} rows");
    b.client.close().await.unwrap();
    env.stop().await;
}

/// A platform's order in the browser: where its amount came from, its
/// webhook's attempts, a re-send that delivers it; and the Integration view
/// with this server's values, on a phone.
#[tokio::test]
async fn webhooks_and_the_integration_kit_in_chromium() {
    let receiver = platform_a::Receiver::start(platform_a::KEY).await;
    receiver.status.store(503, std::sync::atomic::Ordering::Relaxed);
    let extra = platform_a::platform_toml(platform_a::PLATFORM, platform_a::KEY, &receiver.url());
    let env = Env::start(Opts { accept_client_amount: false, extra, ..Opts::default() }).await;
    let a = platform_a::Backend::new(&env.base);
    let (_, created) = a.create("A-WEB-1", 4200, "Concert ticket").await;
    let no = created["outTradeNo"].as_str().unwrap().to_owned();
    let openid = env.openid("browser-platform").await;
    assert_eq!(env.post_json("/pay/unifiedOrder", &json!({ "outTradeNo": no, "openid": openid })).await.0, 200);
    env.sim_pay(json!({ "out_trade_no": no })).await;
    env.wait_acknowledged(&no).await;
    receiver.wait_for(1).await;

    let b = browser("en-US", true).await;
    b.login(&env.base, ADMIN_PASSWORD).await;
    b.go(&env.base, &format!("orders/{no}")).await;
    assert!(b.text("#order-fields").await.contains("platform shop-a order A-WEB-1"));
    let card = b.text("#order-deliveries").await;
    assert!(card.contains("order.paid to shop-a") && card.contains("HTTP 503"), "{card}");
    receiver.status.store(200, std::sync::atomic::Ordering::Relaxed);
    b.wait("#order-deliveries .resend").await.click().await.unwrap();
    receiver.wait_for(2).await;
    assert!(receiver.received().iter().all(|r| r.verified));
    let mut delivered = false;
    for _ in 0..50 {
        // Away and back: the same hash again would not render anew.
        b.go(&env.base, "overview").await;
        b.go(&env.base, &format!("orders/{no}")).await;
        if b.text("#order-deliveries").await.contains("DELIVERED") {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered, "the re-sent webhook shows as delivered");
    b.assert_no_horizontal_scroll("order with webhooks").await;
    b.screenshot("order-webhooks-360").await;

    b.go(&env.base, "integration").await;
    let shown = b.text("main").await;
    assert!(shown.contains(&env.base) && shown.contains(common::APPID) && shown.contains("shop-a"), "{shown}");
    assert!(!shown.contains(platform_a::KEY), "no key on the page");
    assert_eq!(b.script("return document.querySelectorAll('.kit-file').length;").await, 4);
    b.assert_no_horizontal_scroll("integration").await;
    b.screenshot("integration-360").await;
    b.client.close().await.unwrap();
    env.stop().await;
}

/// A v3 merchant during WeChat's migration: the System view shows the API
/// version, both keys, and a platform certificate that expires within 30
/// days, flagged, in English and in Chinese, on a phone.
#[tokio::test]
async fn a_v3_merchant_sees_its_keys_and_an_expiring_certificate() {
    use paybridge::sandbox::v3 as sim;
    let simulator = common::start_simulator().await;
    simulator.simulator.v3().set_key_mode(sim::KeyMode::Migrating);
    let serial = simulator.simulator.v3().rotate_certificate(time::Duration::days(20));
    let opts = Opts { api: common::Api::V3 { public_key: true, certificates: true }, ..Opts::default() };
    let env = Env::start_in(tempfile::tempdir().unwrap(), simulator, opts).await;
    let paid = "V3ADMIN001";
    let openid = env.openid("code-v3-admin").await;
    assert_eq!(env.order(paid, 1990, &openid).await.0, 200);
    let tx = env.sim_pay(json!({ "out_trade_no": paid })).await;
    env.wait_acknowledged(paid).await;
    // Another whose notify is lost: the lifecycle finds it by query.
    let found = "V3ADMIN002";
    assert_eq!(env.order(found, 500, &openid).await.0, 200);
    env.sim_pay(json!({ "out_trade_no": found, "lose_notify": true })).await;
    env.app.lifecycle.clock().advance(Duration::from_secs(6 * 60));
    env.app.lifecycle.tick().await.unwrap();
    for (lang, mode, warning, by_query) in [
        ("en-US", "Public key + platform certificates (migration)", "within 30 days", "found by query"),
        ("zh-CN", "微信支付公钥 + 平台证书（迁移中）", "不足 30 天", "查询所得"),
    ] {
        let b = browser(lang, true).await;
        b.login(&env.base, ADMIN_PASSWORD).await;
        b.go(&env.base, "system").await;
        let wechat = b.text("#system-wechat").await;
        for shown in ["v3", mode, sim::MERCHANT_SERIAL, sim::WECHATPAY_PUBLIC_KEY_ID] {
            assert!(wechat.contains(shown), "{lang}: {shown} in {wechat}");
        }
        assert!(!wechat.contains(sim::APIV3_KEY) && !wechat.contains("HMAC"), "{wechat}");
        let certificates = b.text("#system-wechat-certificates").await;
        assert!(certificates.contains(&serial), "{certificates}");
        let flagged = b.text("#system-wechat-certificates .cert-expiring").await;
        assert!(flagged.contains(warning), "{lang}: {flagged}");
        b.assert_no_horizontal_scroll("system, v3").await;
        // A paid v3 order's notify shows its event id and the decrypted transaction.
        b.go(&env.base, &format!("orders/{paid}")).await;
        let notify = b.text(".notify").await;
        assert!(notify.contains("EV-") && notify.contains("\"transaction_id\"") && notify.contains(&tx), "{notify}");
        b.go(&env.base, &format!("orders/{found}")).await;
        let source = b.text(".notify .by-query").await;
        assert!(source.contains(by_query), "{lang}: {source}");
        // A partial refund: a wrong amount is refused on the page; a right one asks to confirm first.
        let refund = if lang == "en-US" { "1.5" } else { "0.5" };
        b.wait("#refund-amount").await.send_keys("9999").await.unwrap();
        b.wait("#refund-submit").await.click().await.unwrap();
        assert!(!b.text("#refund-form .error").await.is_empty(), "{lang}: too much is refused before any request");
        b.wait("#refund-amount").await.clear().await.unwrap();
        b.wait("#refund-amount").await.send_keys(refund).await.unwrap();
        b.wait("#refund-submit").await.click().await.unwrap();
        let ask = b.text("#refund-confirm").await;
        assert!(ask.contains(&format!("¥{}", if lang == "en-US" { "1.50" } else { "0.50" })), "{lang}: {ask}");
        assert!(
            env.app.store.refunds_for_order(found).unwrap().len() < if lang == "en-US" { 1 } else { 2 },
            "nothing before the confirmation"
        );
        b.wait("#refund-yes").await.click().await.unwrap();
        b.wait(".refund").await;
        b.screenshot(&format!("order-refund-{lang}-360")).await;
        b.assert_no_horizontal_scroll("order with refund").await;
        b.screenshot(&format!("system-v3-{lang}-360")).await;
        b.client.close().await.unwrap();
    }
    // Both refunds went through; the order is partly refunded.
    for _ in 0..200 {
        if env.app.store.order(found).unwrap().unwrap().refunded_fee == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let order = env.app.store.order(found).unwrap().unwrap();
    assert_eq!((order.status, order.refunded_fee), (paybridge::store::OrderStatus::PartiallyRefunded, 200));
    env.stop().await;
}

/// The daily bill in the browser: a day reconciled from the page, its
/// differences, the overview's badge, a re-run; on a phone, in English and
/// Chinese.
#[tokio::test]
async fn the_daily_bill_in_chromium() {
    let env = Env::start(Opts::default()).await;
    let openid = env.openid("code-bill").await;
    let order = json!({ "outTradeNo": "RECON0000001", "totalFee": 1990, "body": "会员月卡", "openid": openid });
    assert_eq!(env.post_json("/pay/unifiedOrder", &order).await.0, 200);
    env.sim_pay(json!({ "out_trade_no": "RECON0000001" })).await;
    env.wait_acknowledged("RECON0000001").await;
    let today = paybridge::store::day_string(paybridge::store::beijing_day(paybridge::pay::now_ms()));
    let sim = &env.sim.simulator;
    sim.close_day(&today);
    sim.bill_extra_payment(&today, "STRANGER0009", 500);

    let b = browser("en-US", true).await;
    b.login(&env.base, ADMIN_PASSWORD).await;
    b.go(&env.base, "reconciliation").await;
    assert!(b.text("#view").await.contains("No day reconciled yet"));
    let day = b.wait("#r-day").await;
    day.clear().await.unwrap();
    day.send_keys(&today).await.unwrap();
    b.wait("#r-run").await.click().await.unwrap();
    b.wait_view(&format!("reconciliation/{today}")).await;
    let summary = b.text("#bill-day").await;
    assert!(summary.contains("Differences") && summary.contains("2 · ¥24.90"), "{summary}");
    let differences = b.text("#differences").await;
    assert!(differences.contains("Only at WeChat") && differences.contains("STRANGER0009"), "{differences}");
    assert!(differences.contains("¥5.00 SUCCESS"), "{differences}");
    b.assert_no_horizontal_scroll("a day's differences").await;
    b.screenshot("reconciliation-day-360").await;

    // The overview says a day needs a look, and leads there.
    b.go(&env.base, "overview").await;
    let badge = b.text("#reconciliation-badge").await;
    assert!(badge.contains("Days to check (对账)\n1\n1 of the last 30 days differ or failed"), "{badge}");
    b.wait("#reconciliation-badge").await.click().await.unwrap();
    b.wait_view("reconciliation").await;
    assert!(b.text("#bill-days").await.contains(&today));

    // In Chinese, and run again from the day's page.
    b.wait("#lang").await.click().await.unwrap();
    b.go(&env.base, &format!("reconciliation/{today}")).await;
    assert!(b.text("#differences").await.contains("仅微信支付有"));
    b.wait("#r-again").await.click().await.unwrap();
    let start = Instant::now();
    while env.app.store.bill_day(&today).unwrap().unwrap().runs < 2 {
        assert!(start.elapsed() < Duration::from_secs(15), "the re-run never happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.assert_no_horizontal_scroll("对账").await;
    b.screenshot("reconciliation-day-360-zh").await;
    b.client.close().await.unwrap();
    env.stop().await;
}

/// Issue 21's loose ends, in both languages, on a desktop and a phone: the
/// overview shows refunds next to the paid totals and counts days to check;
/// an order reads in yuan and Beijing time everywhere, its amount source in
/// the page's language, its 32-character number on one line on a desktop.
#[tokio::test]
async fn money_times_and_words_read_right_in_both_languages() {
    let opts = Opts { api: common::Api::V3 { public_key: true, certificates: false }, ..Opts::default() };
    let env = Env::start(opts).await;
    // As long as WeChat lets an order number be.
    let no = "PB20261207LOOSEENDS0000000000021";
    assert_eq!(no.len(), 32);
    let openid = env.openid("code-loose-ends").await;
    assert_eq!(env.order(no, 1990, &openid).await.0, 200);
    env.sim_pay(json!({ "out_trade_no": no })).await;
    env.wait_acknowledged(no).await;
    let admin = common::login(&env).await;
    let refund = admin
        .http
        .post(format!("{}/admin/api/orders/{no}/refunds", env.base))
        .header("x-csrf-token", &admin.csrf)
        .json(&json!({ "amount": 500, "reason": "部分退款" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refund.status(), 201);
    env.refunds_settled(no).await;
    let time_end = env.stored_order(no).time_end.unwrap();
    assert_eq!(time_end.len(), 14, "{time_end}");
    let shown_time_end = format!(
        "{}-{}-{} {}:{}:{}",
        &time_end[0..4],
        &time_end[4..6],
        &time_end[6..8],
        &time_end[8..10],
        &time_end[10..12],
        &time_end[12..14]
    );
    let base = &env.base;

    let (en, zh) = (["Paid today", "refunded ¥5.00", "net ¥14.90"], ["今日收款", "退款 ¥5.00", "净收 ¥14.90"]);
    for (lang, mobile) in [("en-US", false), ("zh-CN", true)] {
        let b = browser(lang, mobile).await;
        b.login(base, ADMIN_PASSWORD).await;
        for round in 0..2 {
            if round == 1 {
                // The other language, in the same browser.
                b.wait("#lang").await.click().await.unwrap();
                b.go(base, "overview").await;
            }
            let zh_now = b.script("return document.documentElement.lang").await == "zh-CN";
            let shot = format!("loose-ends-{}-{}", if zh_now { "zh" } else { "en" }, if mobile { 360 } else { 1280 });
            let [paid, refunded, net] = if zh_now { zh } else { en };

            // Paid, refunded and what is left, today and this month.
            for card in ["#stat-today", "#stat-month"] {
                let text = b.text(card).await;
                assert!(text.contains("¥19.90") && text.contains(refunded) && text.contains(net), "{shot}: {text}");
            }
            assert!(b.text("#stat-today").await.contains(paid));
            // The reconciliation card counts days to check; none compared yet.
            let badge = b.text("#reconciliation-badge").await;
            let (title, none) = match zh_now {
                true => ("待核对天数（对账）", "近 30 天尚未对账"),
                false => ("Days to check (对账)", "no day reconciled in the last 30 days"),
            };
            assert_eq!(badge, format!("{title}\n0\n{none}"), "{shot}");
            if mobile {
                b.assert_no_horizontal_scroll("overview with refunds").await;
            }
            b.screenshot(&format!("{shot}-overview")).await;

            // The order number stays on one line in the list on a desktop.
            b.go(base, "orders").await;
            let lines = b
                .client
                .execute(
                    "const e = document.querySelector(`.order[data-no='${arguments[0]}'] .main`); \
                     const r = document.createRange(); r.selectNodeContents(e); \
                     return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size;",
                    vec![json!(no)],
                )
                .await
                .unwrap();
            if mobile {
                b.assert_no_horizontal_scroll("orders with a long number").await;
            } else {
                assert_eq!(lines, 1, "{shot}: the order number wraps onto {lines} lines");
            }
            b.screenshot(&format!("{shot}-orders")).await;

            // The order: WeChat's time formatted, the source in words, the history in yuan.
            b.go(base, &format!("orders/{no}")).await;
            let fields = b.text("#order-fields").await;
            let (source, paid_at) = match zh_now {
                true => ("金额来源\n客户端金额\n", "微信支付完成时间\n"),
                false => ("Amount from\nclient\n", "WeChat payment time\n"),
            };
            assert!(fields.contains(&format!("{paid_at}{shown_time_end}\n")), "{shot}: {fields}");
            assert!(fields.contains(source), "{shot}: {fields}");
            let history = b.text("#order-history").await;
            assert!(history.contains("¥19.90") && history.contains("¥5.00"), "{shot}: {history}");
            assert!(
                !history.contains(" fen") && history.contains(&format!("at {shown_time_end}")),
                "{shot}: {history}"
            );
            if mobile {
                b.assert_no_horizontal_scroll("order detail").await;
            }
            b.screenshot(&format!("{shot}-order")).await;
        }
        b.client.close().await.unwrap();
    }

    // Once today's bill is compared and matches, the card says so.
    let today = paybridge::store::day_string(paybridge::store::beijing_day(paybridge::pay::now_ms()));
    env.sim.simulator.close_day(&today);
    let run = admin
        .http
        .post(format!("{}/admin/api/reconciliation/{today}/run", env.base))
        .header("x-csrf-token", &admin.csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let ran: Value = run.json().await.unwrap();
    assert_eq!(ran["state"], "MATCHED", "{ran}");
    let b = browser("en-US", false).await;
    b.login(base, ADMIN_PASSWORD).await;
    let badge = b.text("#reconciliation-badge").await;
    assert_eq!(badge, "Days to check (对账)\n0\nall bills of the last 30 days match");
    b.wait("#lang").await.click().await.unwrap();
    b.go(base, "overview").await;
    assert!(b.text("#reconciliation-badge").await.contains("近 30 天的账单全部一致"));
    b.client.close().await.unwrap();
    env.stop().await;
}

/// The System view's "Check credentials" runs the doctor for the running
/// configuration and shows its lines, named in the page's language; a
/// second click within 10 s is refused, and says so.
#[tokio::test]
async fn the_system_view_checks_the_credentials_in_both_languages() {
    for (lang, mobile, login, notify_url, summary, refused, not_https, fix) in [
        (
            "en-US",
            false,
            "Mini-program login",
            "Notify URL",
            "passed",
            "Something went wrong",
            "is not https://",
            "Fix: set wechat.notify_url to https://",
        ),
        (
            "zh-CN",
            true,
            "小程序登录",
            "支付通知地址",
            "通过",
            "出错了",
            "不是 https://",
            "修改方法: 把 wechat.notify_url 设为 https://",
        ),
    ] {
        let env = Env::start(Opts { client_cert: common::ClientCert::Pem, ..Opts::default() }).await;
        let b = browser(lang, mobile).await;
        b.login(&env.base, ADMIN_PASSWORD).await;
        b.go(&env.base, "system").await;
        b.wait("#checkup-run").await.click().await.unwrap();
        let result = b.text("#checkup-summary").await;
        assert!(result.contains(summary), "{lang}: {result}");
        let line = b.text("li[data-code=\"login\"]").await;
        assert!(line.starts_with(&format!("✓ {login}: ")) && line.contains("40029"), "{lang}: {line}");
        let line = b.text("li[data-code=\"v2_key\"]").await;
        assert!(line.starts_with("✓ ") && line.contains("ORDERNOTEXIST"), "{lang}: {line}");
        // The test's PayBridge serves plain HTTP on loopback: WeChat could not use it.
        let line = b.text("li[data-code=\"notify_url\"]").await;
        assert!(line.starts_with(&format!("✗ {notify_url}: ")) && line.contains(not_https), "{lang}: {line}");
        // The fix in the page's language: the doctor's Chinese in 中文.
        let shown = b.text("li[data-code=\"notify_url\"] .fix").await;
        assert!(shown.starts_with(fix), "{lang}: a failure shows its fix: {shown}");
        let login_detail = b.text("li[data-code=\"login\"]").await;
        assert_eq!(login_detail.contains("微信接受了"), lang == "zh-CN", "{lang}: {login_detail}");
        let page = b.client.source().await.unwrap();
        assert!(!page.contains(common::APP_SECRET) && !page.contains(common::MCH_KEY), "{lang}: no secret");
        if mobile {
            b.assert_no_horizontal_scroll("system, checkup").await;
        }
        b.script("document.getElementById('system-checkup').scrollIntoView(); return null;").await;
        b.screenshot(&format!("system-checkup-{lang}")).await;
        // Once per 10 s: the second click is refused, in the page's language.
        b.wait("#checkup-run").await.click().await.unwrap();
        let alert = b.text("#checkup-result [role=\"alert\"]").await;
        assert!(alert.contains(refused) && alert.contains("10 s"), "{lang}: {alert}");
        assert_eq!(env.sim.simulator.calls().values().sum::<u64>(), 3, "{lang}: one call per credential, one run");
        // Closing the session ends Chromium; killing chromedriver alone left it running.
        b.client.close().await.unwrap();
        env.stop().await;
    }
}
