//! PayBridge's HTTPS against nginx on the same machine, file and certificate.
//!
//! `cargo bench --bench https` starts the real binary (TLS from files) and
//! Debian's nginx (one worker per core), both with the same ECDSA P-256
//! certificate, both serving the admin page's HTML (about 2 KB), and loads
//! each with `wrk`: keep-alive connections, then a new TLS connection for
//! every request. It prints requests per second and PayBridge's ratio.
//! Both log every request (PayBridge to its non-blocking writer, nginx to
//! its access log). Needs `wrk` and `nginx` (`apt-get install wrk
//! nginx`); without them it says so and measures nothing.
//!
//! Under `cargo test` it runs each load for one second, checking that every
//! request was answered.

#[path = "common/wrk.rs"]
mod wrk;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx, stopped as nginx must be: SIGKILL ends only its master and leaves
/// the workers running (orphans that outlive the test run), so it gets
/// SIGTERM — the master then stops its workers — and SIGKILL only if it has
/// not exited within five seconds.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..250 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The load generator connects from one address, and the memory figure
/// holds 1,000 connections idle: lift the caps and timeouts meant for strangers.
const BENCH_LIMITS: &str = "max_connections = 8192\nmax_connections_per_ip = 8192\n\
                            first_request_timeout_secs = 600\nidle_timeout_secs = 600\n";

fn paybridge(dir: &Path, port: u16) -> Guard {
    let config = dir.join("paybridge.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{dir}/data\"\n[http]\nlisten = \"off\"\n{BENCH_LIMITS}[tls]\nmode = \"files\"\nlisten = \"127.0.0.1:{port}\"\n\
             domains = [\"bench.paybridge.test\"]\ncert_file = \"{dir}/chain.pem\"\nkey_file = \"{dir}/key.pem\"\n\
             [wechat]\nappid = \"wxd930ea5d5a258f4f\"\napp_secret = \"s\"\nmch_id = \"10000100\"\n\
             mch_key = \"192006250b4c09247ec02edce69f6a2d\"\nnotify_url = \"https://bench.paybridge.test/pay/notify\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_paybridge"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("PAYBRIDGE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Guard(child)
}

fn nginx(dir: &Path, port: u16) -> Option<Nginx> {
    let html = dir.join("admin.html");
    std::fs::write(&html, include_bytes!("../static/admin.html")).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes {workers};\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log;\ndaemon off;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log {dir}/nginx-access.log;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
               fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
               server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {dir}/chain.pem;\n\
                 ssl_certificate_key {dir}/key.pem;\n    location = /admin {{ default_type text/html; alias {html}; }}\n  }}\n}}\n",
            workers = std::thread::available_parallelism().map_or(1, |n| n.get()),
            dir = dir.display(),
            html = html.display(),
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .args(["-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Nginx(child))
}

async fn wait_for(url: &str) {
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    for _ in 0..250 {
        if client.get(url).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never answered");
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if !wrk::available() || Command::new("nginx").arg("-v").output().is_err() {
        println!("https: wrk or nginx is not installed (apt-get install wrk nginx); nothing measured");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = paybridge::tls::cert::self_signed(&["bench.paybridge.test".into()]).unwrap();
    std::fs::write(dir.path().join("chain.pem"), &cert.chain_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &cert.key_pem).unwrap();
    let (ours, theirs) = (free_port(), free_port());
    let _paybridge = paybridge(dir.path(), ours);
    let _nginx = nginx(dir.path(), theirs).expect("nginx starts");
    let urls = [format!("https://127.0.0.1:{ours}/admin"), format!("https://127.0.0.1:{theirs}/admin")];
    for url in &urls {
        wait_for(url).await;
    }
    let seconds = Duration::from_secs(if bench { 10 } else { 1 });
    println!("| HTTPS, 2 KB page, ECDSA P-256 | PayBridge req/s | nginx req/s | PayBridge ÷ nginx |");
    println!("|---|---:|---:|---:|");
    for (name, connections, headers) in [
        ("keep-alive, 64 connections", 64, &[][..]),
        ("new TLS connection per request", 16, &["Connection: close"][..]),
    ] {
        let [a, b] = [&urls[0], &urls[1]].map(|url| wrk::run(dir.path(), url, connections, seconds, None, headers));
        assert_eq!(a.errors + b.errors, 0, "every request answered");
        println!("| {name} | {:.0} | {:.0} | {:.2} |", a.per_second, b.per_second, a.per_second / b.per_second);
    }
}
