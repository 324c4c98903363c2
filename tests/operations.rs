//! Operating PayBridge: backup and restore while it runs, /metrics, request
//! ids, JSON logs, and a graceful stop that lets requests finish.

mod common;
#[path = "common/process.rs"]
mod process;
#[path = "common/tmpfs.rs"]
mod tmpfs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{config_text, notify_fields, signed_xml, start_simulator, Env, Opts};
use paybridge::config::Mode;
use paybridge::store::{OrderFilter, Store};
use paybridge::wechat::sign::SignType;
use serde_json::json;

/// Runs the real binary off the runtime's thread (it talks to this runtime's server).
async fn paybridge(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_paybridge")).args(args).output().unwrap())
        .await
        .unwrap()
}

async fn some_business(env: &Env) {
    let openid = env.openid("code-ops").await;
    for no in ["OPS0000001", "OPS0000002"] {
        assert_eq!(env.order(no, 250, &openid).await.0, 200);
    }
    env.sim_pay(json!({ "out_trade_no": "OPS0000001" })).await;
    env.wait_acknowledged("OPS0000001").await;
    let forged =
        signed_xml(notify_fields("OPS0000002", 250, "4200000000000000000000000055"), &"f".repeat(32), SignType::Md5);
    assert_eq!(env.notify(forged).await.1["return_code"], "FAIL", "a forged notify is refused");
}

/// The in-process server on a tmpfs of `disk_mib`, with some business and
/// an archive month of `month_mib` (made up: backups copy it as it is), and
/// its config file for the command line. Returns the disk, the server, its
/// data directory and its config.
async fn on_tmpfs_with_a_month(disk_mib: u32, month_mib: usize) -> (tmpfs::Tmpfs, Env, PathBuf, PathBuf) {
    let disk = tmpfs::Tmpfs::mount(disk_mib);
    let env =
        Env::start_in(tempfile::tempdir_in(disk.dir.path()).unwrap(), start_simulator().await, Opts::default()).await;
    some_business(&env).await;
    let data = env.dir.path().join("data");
    put_archive_month(&data, month_mib);
    let config = env.dir.path().join("paybridge.toml");
    std::fs::write(&config, config_text(&data, &env.app.addr.to_string(), &env.sim.url(), &env.opts)).unwrap();
    (disk, env, data, config)
}

/// Puts a made-up archive month of `mib` MiB into `data`.
fn put_archive_month(data: &Path, mib: usize) {
    std::fs::create_dir_all(data.join("archive")).unwrap();
    std::fs::write(data.join("archive/2020-01.pba"), vec![0x5au8; mib << 20]).unwrap();
}

/// A backup never takes the room payments need: on a 400 MiB data disk
/// holding a 100 MiB archive month, the running server's spool stops
/// part-way once less than `DISK_RESERVE` would be left (the server says
/// why, gives the room back at once and keeps taking orders); with
/// PayBridge stopped, a backup onto that disk stops part-way too and leaves
/// no file (and removes what a killed one left), and one to another disk is
/// written and restores.
#[tokio::test]
async fn a_backup_leaves_room_for_payments_on_the_data_disk() {
    use paybridge::store::backup::DISK_RESERVE;
    let (disk, env, data, config) = on_tmpfs_with_a_month(400, 100).await;
    let free = fs_free(disk.dir.path());
    assert!(free > DISK_RESERVE && free < DISK_RESERVE + (100 << 20), "{free}: the spool must cross the reserve");
    let elsewhere = tempfile::tempdir().unwrap();
    let backup_to = |to: &std::path::Path| -> Vec<String> {
        vec!["backup".into(), "--config".into(), config.display().to_string(), "--to".into(), to.display().to_string()]
    };
    let says = format!("a backup leaves at least {} MiB free (room for payments)", DISK_RESERVE >> 20);

    let out = paybridge(backup_to(&elsewhere.path().join("running.pb"))).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&says) && stderr.contains(&data.display().to_string()), "{stderr}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "no file, no temporary file");
    assert!(fs_free(disk.dir.path()) + (4 << 20) >= free, "the spool's room is given back");
    let openid = env.openid("code-after").await;
    assert_eq!(env.order("OPS0000003", 100, &openid).await.0, 200, "the server goes on");
    let (dir, _sim) = env.stop().await;

    let onto = disk.dir.path().join("onto-data-disk.pb");
    let killed = disk.dir.path().join("onto-data-disk.pb.0123456789abcdef.tmp");
    std::fs::write(&killed, b"what a killed backup left").unwrap();
    let out = paybridge(backup_to(&onto)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&says), "{stderr}");
    let on_disk: Vec<_> = std::fs::read_dir(disk.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(on_disk, [dir.path().file_name().unwrap()], "nothing but the data");

    let file = elsewhere.path().join("stopped.pb");
    let out = paybridge(backup_to(&file)).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = elsewhere.path().join("restored");
    Store::restore(&restored, std::io::BufReader::new(std::fs::File::open(&file).unwrap())).unwrap();
    let orders = Store::open(&restored, Mode::Live).unwrap().list_orders(&OrderFilter::default(), None, 10).unwrap();
    assert_eq!(orders.items.len(), 3);
    assert_eq!(std::fs::metadata(restored.join("archive/2020-01.pba")).unwrap().len(), 100 << 20);
}

/// A backup goes through the running server a buffer at a time, from a
/// spool file: backing up 64 MiB of archive (one month file put there for
/// the test) raises the server's peak resident memory by far less than
/// that (it held the whole backup before). A reader that stops reading
/// holds neither the server (it keeps answering) nor the spool's disk
/// space for long: the server gives up after its stall bound (20 s).
#[tokio::test]
async fn a_backup_does_not_pass_through_the_servers_memory() {
    let sim = start_simulator().await;
    // A disk of its own: other tests' files do not bring it near the reserve.
    let disk = tmpfs::Tmpfs::mount(640);
    let dir = tempfile::tempdir_in(disk.dir.path()).unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("paybridge.toml");
    let addr = format!("127.0.0.1:{}", process::free_tcp_port());
    std::fs::write(&config, config_text(&data, &addr, &sim.url(), &Opts::default())).unwrap();
    let mut server = process::Proc::spawn(&["serve", "--config", config.to_str().unwrap()], "info");
    server.line("PayBridge listening").await;
    put_archive_month(&data, 64);
    let pid = server.child.id();
    let peak = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().to_owned();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() << 10
    };
    // The peak so far (start-up) is forgotten: only the backup's counts.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = peak();
    let mut copy = std::io::BufWriter::new(std::fs::File::create(dir.path().join("backup.pb")).unwrap());
    let len = paybridge::control::backup(&data, &mut copy).await.unwrap().unwrap();
    drop(copy);
    let after = peak();
    assert!(len > 64 << 20, "the month is in the backup: {len} bytes");
    assert!(after - before < 24 << 20, "peak resident memory went from {before} to {after} bytes");

    // A reader that stops after the first line.
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stuck =
        tokio::io::BufReader::new(tokio::net::UnixStream::connect(data.join("control.sock")).await.unwrap());
    stuck.get_mut().write_all(b"backup\n").await.unwrap();
    let mut line = String::new();
    stuck.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("ok "), "{line}");
    let spools = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            // The spool has no name: `data_dir/#<inode> (deleted)`.
            .filter(|target| target.starts_with(&data) && target.to_string_lossy().ends_with(" (deleted)"))
            .count()
    };
    assert_eq!(spools(), 1, "the spool is open while the reader is stuck");
    let http = reqwest::Client::new();
    let waited = std::time::Instant::now();
    while spools() > 0 {
        assert!(waited.elapsed() < Duration::from_secs(40), "the spool is still held after 40 s");
        let health = http.get(format!("http://{addr}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "the server answers while a backup's reader is stuck");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(waited.elapsed() > Duration::from_secs(15), "given up at the stall bound, not before");
    drop(stuck);
    assert_eq!(server.terminate().await.code(), Some(0));
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("the backup's reader stopped reading"), "{log}");

    let restored = dir.path().join("restored");
    Store::restore(&restored, std::fs::File::open(dir.path().join("backup.pb")).unwrap()).unwrap();
    assert_eq!(std::fs::read(restored.join("archive/2020-01.pba")).unwrap().len(), 64 << 20);
}

/// A reader that takes a backup a little at a time, each buffer within the
/// stall bound, is given up too: a backup must go at 1 MiB/s on average
/// after the first 20 s (2 MiB at 32 KiB/s would take a minute).
#[tokio::test]
async fn a_trickling_backup_reader_is_given_up() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let env = Env::start(Opts::default()).await;
    let data = env.dir.path().join("data");
    put_archive_month(&data, 2);
    let socket = tokio::net::UnixStream::connect(paybridge::control::socket_path(&data)).await.unwrap();
    let mut reader = tokio::io::BufReader::new(socket);
    reader.get_mut().write_all(b"backup\n").await.unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let len: u64 = line.trim().strip_prefix("ok ").unwrap().parse().unwrap();
    let started = std::time::Instant::now();
    let mut got = 0u64;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = reader.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n as u64;
        assert!(started.elapsed() < Duration::from_secs(50), "still sending after 50 s ({got} of {len} bytes)");
    }
    assert!(got < len, "given up before the end: {got} of {len} bytes");
    assert!(started.elapsed() > Duration::from_secs(20), "not before the first 20 s");
    assert_eq!(env.get("/healthz").await.0, 200);
    env.stop().await;
}

/// `paybridge backup` stopped by Ctrl-C or SIGTERM while the backup
/// arrives leaves no file: not the backup, not its temporary file.
#[tokio::test]
async fn an_interrupted_backup_leaves_no_file() {
    let (disk, env, _data, config) = on_tmpfs_with_a_month(1024, 256).await;
    let to_dir = tempfile::tempdir_in(disk.dir.path()).unwrap();
    let to = to_dir.path().join("backup.pb");
    let mut interrupted = 0;
    for signal in ["TERM", "INT", "TERM", "INT", "TERM", "INT"] {
        let mut cli = process::Proc::spawn(
            &["backup", "--config", config.to_str().unwrap(), "--to", to.to_str().unwrap()],
            "info",
        );
        // Once the backup is arriving (its temporary file has bytes), stop it.
        let arriving = || {
            std::fs::read_dir(to_dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".tmp") && e.metadata().is_ok_and(|m| m.len() > 0))
        };
        while !arriving() && cli.child.try_wait().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        cli.signal(signal);
        let status = cli.wait().await;
        if status.success() {
            std::fs::remove_file(&to).unwrap(); // it finished first: try again
            continue;
        }
        let stderr = cli.stderr.lock().unwrap().clone();
        assert!(stderr.contains("interrupted: no backup was written"), "SIG{signal}: {status:?} {stderr}");
        let left: Vec<_> = std::fs::read_dir(to_dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "SIG{signal} left {left:?}");
        interrupted += 1;
    }
    assert!(interrupted >= 2, "the signal landed while the backup arrived in {interrupted} of 6 runs");
    env.stop().await;
}

/// Free bytes on `path`'s file system, as `df` counts them.
fn fs_free(path: &std::path::Path) -> u64 {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
}

/// [`KeepFree`] asks the disk as the backup grows: on a 32 MiB disk with a
/// 16 MiB reserve, writing stops with a clear error once less than the
/// reserve is left, at most one check interval (4 MiB) past it.
#[test]
fn a_backup_stops_growing_at_the_reserve() {
    use paybridge::store::backup::KeepFree;
    use std::io::Write;
    let disk = tmpfs::Tmpfs::mount(32);
    let path = disk.dir.path().join("growing.pb");
    let mut out = KeepFree::new(std::fs::File::create(&path).unwrap(), disk.dir.path(), 16 << 20).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0u64;
    let error = loop {
        match out.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => break e,
        }
        assert!(written <= 32 << 20, "never stopped");
    };
    assert_eq!(error.kind(), std::io::ErrorKind::StorageFull, "{error}");
    assert!(error.to_string().contains("a backup leaves at least 16 MiB free (room for payments)"), "{error}");
    assert!(written >= 12 << 20, "it wrote until the reserve: {written}");
    let free = fs_free(disk.dir.path());
    assert!(free >= 12 << 20, "at most 4 MiB past the reserve: {free} bytes free");
}

#[tokio::test]
async fn backup_while_running_and_restore_into_an_empty_directory() {
    let env = Env::start(Opts::default()).await;
    some_business(&env).await;
    let config = env.dir.path().join("paybridge.toml");
    std::fs::write(
        &config,
        config_text(&env.dir.path().join("data"), &env.app.addr.to_string(), &env.sim.url(), &env.opts),
    )
    .unwrap();
    let file = env.dir.path().join("backup.pb");
    let out = paybridge(vec![
        "backup".into(),
        "--config".into(),
        config.display().to_string(),
        "--to".into(),
        file.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let socket = paybridge::control::socket_path(&env.dir.path().join("data"));
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600, "owner-only socket");

    // A config naming the wrong data directory fails, names it, and creates nothing.
    let wrong_dir = env.dir.path().join("no-such-data");
    let wrong = env.dir.path().join("wrong.toml");
    std::fs::write(&wrong, config_text(&wrong_dir, "127.0.0.1:1", &env.sim.url(), &env.opts)).unwrap();
    let out = paybridge(vec![
        "backup".into(),
        "--config".into(),
        wrong.display().to_string(),
        "--to".into(),
        env.dir.path().join("wrong.pb").display().to_string(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&wrong_dir.display().to_string()) && stderr.contains("no PayBridge data"), "{stderr}");
    assert!(!wrong_dir.exists() && !env.dir.path().join("wrong.pb").exists());

    // Restore with a config whose data directory is new.
    let restored_dir = env.dir.path().join("restored");
    let config2 = env.dir.path().join("restored.toml");
    std::fs::write(&config2, config_text(&restored_dir, "127.0.0.1:1", &env.sim.url(), &env.opts)).unwrap();
    let restore = |cfg: &std::path::Path| -> Vec<String> {
        vec![
            "restore".into(),
            "--config".into(),
            cfg.display().to_string(),
            "--from".into(),
            file.display().to_string(),
        ]
    };
    let out = paybridge(restore(&config2)).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = paybridge(restore(&config2)).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not empty") && stderr.contains("--replace"), "not over data unasked: {stderr}");
    // Over a running server: refused, naming what to do.
    let mut over_running = restore(&config);
    over_running.push("--replace".into());
    let out = paybridge(over_running).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop it first"), "{}", String::from_utf8_lossy(&out.stderr));

    let restored = Store::open(&restored_dir, Mode::Live).unwrap();
    let all = OrderFilter::default();
    let original: Vec<_> = env.app.store.list_orders(&all, None, 100).unwrap().items;
    assert_eq!(restored.list_orders(&all, None, 100).unwrap().items, original);
    assert_eq!(original.len(), 2);
    assert_eq!(restored.list_notifies(None, 100).unwrap().items, env.app.store.list_notifies(None, 100).unwrap().items);
    assert_eq!(restored.status_counts().unwrap(), env.app.store.status_counts().unwrap(), "counters too");
    env.stop().await;
}

/// Operator endpoints are not on the public listeners at all, so no proxy in
/// front of them can expose the data (a same-host TLS terminator once made
/// every client "loopback" and handed out the whole database).
#[tokio::test]
async fn public_listeners_serve_no_operator_endpoint() {
    let env = Env::start(Opts::default()).await;
    some_business(&env).await;
    for path in ["/metrics", "/ops/backup"] {
        let r =
            env.http.get(format!("{}{path}", env.base)).header("x-forwarded-for", "127.0.0.1").send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} on the public listener");
    }
    let metrics = env.app.metrics_addr.unwrap();
    assert!(metrics.ip().is_loopback() && metrics.port() != env.app.addr.port());
    let r = env.http.get(format!("http://{metrics}/ops/backup")).send().await.unwrap();
    assert_eq!(r.status(), 404, "no backup over HTTP anywhere");
    env.stop().await;
}

#[tokio::test]
async fn metrics_count_what_happened_on_their_own_listener() {
    let env = Env::start(Opts::default()).await;
    some_business(&env).await;
    let r = env.http.get(format!("http://{}/metrics", env.app.metrics_addr.unwrap())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    for line in [
        "paybridge_unified_orders_total{outcome=\"prepaid\"} 2",
        "paybridge_notifies_total{verdict=\"PAID\"} 1",
        "paybridge_notifies_total{verdict=\"REJECTED\"} 1",
        "paybridge_http_requests_total{route=\"/pay/unifiedOrder\",status=\"200\"} 2",
        "paybridge_wechat_request_duration_seconds_count{api=\"unifiedorder\"} 2",
        "paybridge_wechat_request_duration_seconds_count{api=\"jscode2session\"} 1",
        "paybridge_orders{status=\"PAID\"} 1",
        "paybridge_orders{status=\"PREPAID\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("paybridge_sled_size_bytes ") && !l.ends_with(" 0")));

    // Every reply carries a request id.
    let a = env.http.get(format!("{}/healthz", env.base)).send().await.unwrap();
    let b = env.http.get(format!("{}/healthz", env.base)).send().await.unwrap();
    let (a, b) = (
        a.headers()["x-request-id"].to_str().unwrap().to_owned(),
        b.headers()["x-request-id"].to_str().unwrap().to_owned(),
    );
    assert_eq!(a.len(), 16);
    assert_ne!(a, b);
    env.stop().await;

    // With a token, the token is needed (loopback or not).
    let token_env = {
        let env = Env::start(Opts::default()).await;
        let (dir, sim) = env.stop().await;
        let text = config_text(&dir.path().join("data"), "127.0.0.1:0", &sim.url(), &Opts::default())
            .replace("[metrics]\n", "[metrics]\ntoken = \"scrape-me-9f2c\"\n");
        let config =
            paybridge::config::Config::from_toml(&text, std::path::Path::new("t"), std::iter::empty()).unwrap();
        (paybridge::app::start(config).await.unwrap(), dir, sim)
    };
    let (app, _dir, sim) = token_env;
    let url = format!("http://{}/metrics", app.metrics_addr.unwrap());
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 403);
    assert_eq!(http.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 403);
    assert_eq!(http.get(&url).bearer_auth("scrape-me-9f2c").send().await.unwrap().status(), 200);
    app.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_lets_the_request_in_flight_finish() {
    let env = Env::start(Opts::default()).await;
    let openid = env.openid("code-graceful").await;
    // WeChat answers slowly; the stop begins while the request waits for it.
    env.inject(json!([{ "kind": "delay", "ms": 800 }])).await;
    let http = env.http.clone();
    let url = format!("{}/pay/unifiedOrder", env.base);
    let in_flight = tokio::spawn(async move {
        http.post(url)
            .json(&json!({ "outTradeNo": "GRACE00001", "totalFee": 1, "body": "b", "openid": openid }))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // The stop begins once the request is being served (and waits on WeChat).
    while env.app.metrics.requests_in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let base = env.base.clone();
    let (dir, _sim) = env.stop().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), 200, "the request in flight finished");
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err(), "no new connections after the stop");
    let store = Store::open(&dir.path().join("data"), Mode::Live).unwrap();
    assert_eq!(
        store.order("GRACE00001").unwrap().unwrap().status,
        paybridge::store::OrderStatus::Prepaid,
        "and it was saved"
    );
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let env = Env::start(Opts::default()).await;
    let addr = format!("127.0.0.1:{}", process::free_tcp_port());
    let config = env.dir.path().join("json.toml");
    let text =
        config_text(&env.dir.path().join("json-data"), &addr, &env.sim.url(), &env.opts) + "[log]\nformat = \"json\"\n";
    std::fs::write(&config, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_paybridge"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut id = None;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("http://{addr}/healthz")).await {
            id = Some(r.headers()["x-request-id"].to_str().unwrap().to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = id.expect("the server answered");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success(), "SIGTERM exits 0");
    let logs = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> =
        logs.lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
    let access = lines.iter().find(|l| l["target"] == "paybridge::access").expect("an access log line");
    assert_eq!(access["fields"]["path"], "/healthz");
    assert_eq!(access["span"]["id"], id.as_str(), "{access}");
    env.stop().await;
}

/// `sudo paybridge admin set-password` once left the config `root:root 0600`,
/// unreadable by the service user. Owner, group and mode are kept.
#[tokio::test]
async fn set_password_keeps_the_config_readable_by_the_service_user() {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("paybridge.toml");
    let opts = Opts::default();
    std::fs::write(&config, config_text(&dir.path().join("data"), "127.0.0.1:1", "http://127.0.0.1:1", &opts)).unwrap();
    // As install.sh leaves it: root-owned, readable by the service's group.
    std::os::unix::fs::chown(&config, Some(0), Some(65534)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_paybridge"))
        .args(["admin", "set-password", "--config", config.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a brand new admin password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let meta = std::fs::metadata(&config).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.permissions().mode() & 0o777), (0, 65534, 0o640));
    let loaded = paybridge::config::Config::load(&config).unwrap();
    let hash = loaded.admin.password_hash.unwrap();
    assert!(paybridge::admin::auth::verify_password("a brand new admin password", &hash));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
}

/// The README's recipe, as root: the backup in a root-only directory, the
/// data directory owned by the service user with data and certificates in
/// it. `sudo paybridge restore --replace` swaps the backup in, keeps the old
/// data beside it, moves the certificates over and leaves everything owned
/// by the service user.
#[tokio::test]
async fn restore_over_existing_data_as_the_readme_says() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::start(Opts::default()).await;
    some_business(&env).await;
    let mut bytes = Vec::new();
    paybridge::control::backup(&env.dir.path().join("data"), &mut bytes).await.unwrap().unwrap();
    env.stop().await;

    let root_only = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root_only.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let backup = root_only.path().join("paybridge.backup");
    std::fs::write(&backup, &bytes).unwrap();

    // The service's data directory: other data, a certificate, owned by uid 65534.
    let host = tempfile::tempdir().unwrap();
    let data = host.path().join("paybridge");
    drop(Store::open(&data, Mode::Live).unwrap());
    std::fs::create_dir(data.join("tls")).unwrap();
    std::fs::write(data.join("tls/cert.pem"), "certificate").unwrap();
    for entry in [data.clone(), data.join("tls"), data.join("tls/cert.pem")] {
        std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();
    let config = host.path().join("paybridge.toml");
    std::fs::write(&config, config_text(&data, "127.0.0.1:1", "http://127.0.0.1:1", &Opts::default())).unwrap();

    let args = |more: &[&str]| -> Vec<String> {
        let mut args = vec!["restore", "--config", config.to_str().unwrap(), "--from", backup.to_str().unwrap()];
        args.extend_from_slice(more);
        args.into_iter().map(String::from).collect()
    };
    let out = paybridge(args(&["--replace"])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kept in"), "{stdout}");

    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.permissions().mode() & 0o777), (65534, 65534, 0o750));
    for file in std::fs::read_dir(&data).unwrap() {
        let path = file.unwrap().path();
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 65534, "{} is the service user's", path.display());
    }
    assert_eq!(std::fs::read_to_string(data.join("tls/cert.pem")).unwrap(), "certificate", "certificates moved over");
    let aside: Vec<_> = std::fs::read_dir(host.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("paybridge.before-restore-"))
        .collect();
    assert_eq!(aside.len(), 1, "the replaced data is kept beside");
    let restored = Store::open(&data, Mode::Live).unwrap();
    assert_eq!(restored.order_count().unwrap(), 2);

    // A backup that cannot be read names its path.
    let out = paybridge(vec![
        "restore".into(),
        "--config".into(),
        config.display().to_string(),
        "--from".into(),
        "/nonexistent/backup.pb".into(),
        "--replace".into(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("/nonexistent/backup.pb"), "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "the cause once: {stderr}");
}

/// A data directory in use names the process that holds it.
#[tokio::test]
async fn a_locked_data_directory_names_its_pid() {
    let env = Env::start(Opts::default()).await;
    let now = paybridge::store::StoreOptions { lock_wait: Duration::ZERO, ..Default::default() };
    let err = Store::open_with(&env.dir.path().join("data"), Mode::Live, now).err().expect("the server holds it");
    let message = err.to_string();
    assert!(message.contains("another PayBridge is probably running"), "{message}");
    assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
    assert!(message.contains(&env.dir.path().join("data").display().to_string()), "{message}");
    env.stop().await;
}
