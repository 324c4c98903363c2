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

/// The README's worked example, run as printed with openssl: the numbers in
/// its comments are what openssl prints (and what PayBridge computes: see
/// `platform::auth`'s unit test of the same example).
#[test]
fn the_readmes_signing_example_runs_as_printed() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let example = readme.split("**Worked example**").nth(1).expect("the example");
    let script = example.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let expected: Vec<&str> = script.lines().filter_map(|l| l.split("# ").nth(1)).filter(|c| c.len() == 64).collect();
    assert_eq!(expected.len(), 2, "the body hash and the signature: {script}");
    let out = std::process::Command::new("bash").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(printed, expected);
    let server_side = paybridge::platform::auth::sign(
        &paybridge::secret::Secret::new("3c9f0b6e2a4d8c1f7e5a9b3d6c0f2e4a8b1d7c5e9f3a6b0c2d4e8f1a3b5c7d9e"),
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
