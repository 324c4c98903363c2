//! Replies that cannot be written. An HTTP/2 client that sets its window to 0
//! and answers pings once held a connection (and its place under the caps)
//! forever: its reply never finished, so the connection never counted as
//! idle. Now every reply has a deadline, over plain HTTP and TLS alike, and 64
//! such addresses at their cap still leave places for everyone else.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Env, Opts};
use paybridge::server::{ConnectionLimits, STALLING_ADDRESSES};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

/// The 64-address test loads the machine: these tests run one at a time.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// The admin page's script (about 42 KiB): far more than a window of 0 lets through.
const LARGE: &str = "/admin/static/admin.js";

async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// One HTTP/2 connection whose reply cannot move: the client announced a
/// window of 0, never grants more and never reads, and its connection task
/// answers the server's pings. Holding the handles keeps the stream open.
struct Stalled {
    /// Resolves, with when, once the server has closed the connection.
    closed: tokio::task::JoinHandle<Instant>,
    /// When the reply's headers arrived: the reply exists, its body is stuck.
    replied: Instant,
    _send: h2::client::SendRequest<Bytes>,
    _body: h2::RecvStream,
}

/// Opens a stalled request for `path` over `io`; `None` if the server refused
/// the connection (it closes before answering).
async fn stall<T>(io: T, path: &str) -> Option<Stalled>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, connection) = h2::client::Builder::new().initial_window_size(0).handshake(io).await.ok()?;
    let closed = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    let request = warp::http::Request::get(format!("https://paybridge.test{path}")).body(()).unwrap();
    let (response, _) = send.send_request(request, true).ok()?;
    // HEADERS are not flow-controlled: they come, the body cannot.
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.ok()?.ok()?;
    assert_eq!(response.status(), 200, "{path}");
    let replied = Instant::now();
    Some(Stalled { closed, replied, _send: send, _body: response.into_body() })
}

impl Stalled {
    /// How long the connection lived after its reply began; panics if it is
    /// still open after `limit`.
    async fn lifetime(self, limit: Duration) -> Duration {
        match tokio::time::timeout(limit, self.closed).await {
            Ok(closed) => closed.unwrap().duration_since(self.replied),
            Err(_) => panic!("a stalled connection is still open after {limit:?}"),
        }
    }

    fn is_open(&self) -> bool {
        !self.closed.is_finished()
    }
}

/// A reply the client never lets move is cut at `write_timeout_secs`, not
/// before, and counted; the connection is closed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_held_at_window_zero_is_closed_at_the_write_timeout() {
    let _serial = serial().await;
    let env = Env::start(Opts { http_extra: "write_timeout_secs = 2", ..Opts::default() }).await;
    let io = connect_from("127.0.0.1".parse().unwrap(), env.app.addr).await.unwrap();
    let stalled = stall(io, LARGE).await.expect("the server answers");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(stalled.is_open(), "closed before its deadline");
    let lived = stalled.lifetime(Duration::from_secs(10)).await;
    println!("a stalled HTTP/2 reply (write_timeout_secs = 2, idle 60) lived {lived:?}");
    assert!(lived >= Duration::from_millis(1900) && lived < Duration::from_secs(4), "lived {lived:?}");
    assert_eq!(env.app.metrics.closed_count("write_timeout"), 1);
    assert_eq!(env.app.metrics.closed_count("reply_stalled"), 0);
    // The place is given back when the connection's task ends, just after its socket closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.app.metrics.connections_open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.app.metrics.connections_open(), 0, "its place is given back");
    env.stop().await;
}

/// With a generous write deadline, a reply that does not move at all is
/// closed like an idle connection, after `idle_timeout_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_never_moves_is_closed_like_an_idle_connection() {
    let _serial = serial().await;
    let env =
        Env::start(Opts { http_extra: "write_timeout_secs = 3600\nidle_timeout_secs = 2", ..Opts::default() }).await;
    let io = connect_from("127.0.0.1".parse().unwrap(), env.app.addr).await.unwrap();
    let stalled = stall(io, LARGE).await.expect("the server answers");
    let lived = stalled.lifetime(Duration::from_secs(10)).await;
    println!("a stalled HTTP/2 reply (write_timeout_secs = 3600, idle 2) lived {lived:?}");
    assert!(lived >= Duration::from_millis(1900) && lived < Duration::from_secs(4), "lived {lived:?}");
    assert_eq!(env.app.metrics.closed_count("reply_stalled"), 1);
    assert_eq!(env.app.metrics.closed_count("write_timeout"), 0);
    env.stop().await;
}

/// Accepts whatever certificate the server shows: the self-signed listener's
/// name is not what this test is about.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Over TLS (a self-signed listener, HTTP/2 by ALPN) the deadline holds the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_stalled_reply_is_closed_at_the_write_timeout() {
    let _serial = serial().await;
    let sim = common::start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = \"{data}\"\n[http]\nlisten = \"off\"\nwrite_timeout_secs = 2\n[tls]\nmode = \"self-signed\"\n\
         listen = \"127.0.0.1:0\"\ndomains = [\"stall.paybridge.test\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n{wechat}",
        data = dir.path().join("data").display(),
        wechat = common::wechat_toml(&sim.url()),
    );
    let config =
        paybridge::config::Config::from_toml(&text, std::path::Path::new("t.toml"), std::iter::empty()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = paybridge::app::start_with_listeners(config, None, Some(listener)).await.unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = connect_from("127.0.0.1".parse().unwrap(), app.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("stall.paybridge.test").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "HTTP/2 over TLS");
    let stalled = stall(tls, LARGE).await.expect("the server answers");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(stalled.is_open(), "closed before its deadline");
    let lived = stalled.lifetime(Duration::from_secs(10)).await;
    println!("a stalled HTTP/2 reply over TLS (write_timeout_secs = 2) lived {lived:?}");
    assert!(lived >= Duration::from_millis(1900) && lived < Duration::from_secs(4), "lived {lived:?}");
    assert_eq!(app.metrics.closed_count("write_timeout"), 1);
    app.stop().await;
    drop(sim);
}

/// 64 addresses (127.0.0.2 to 127.0.0.65) each stall as many HTTP/2
/// connections as they are given, and keep trying until refused four times
/// in a row. With the default caps they take the open places but not the
/// reserve: throughout, `/healthz` on a new connection and a new payer at
/// another address are served; then every stalled connection is closed by
/// its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_stalling_addresses_leave_room_for_healthz_and_a_new_payer() {
    let _serial = serial().await;
    rlimit::increase_nofile_limit(16_384).unwrap();
    let limits = ConnectionLimits::default();
    // Every limit is the default, the 30 s write deadline included.
    let env = Env::start(Opts::default()).await;
    let addr = env.app.addr;
    let refusals_in_a_row = 4;
    let attack = |addresses: std::ops::Range<usize>| {
        addresses
            .map(|i| {
                tokio::spawn(async move {
                    let source = IpAddr::from([127, 0, 0, 2 + i as u8]);
                    let (mut mine, mut refused) = (Vec::new(), 0);
                    for _ in 0..limits.per_ip + refusals_in_a_row {
                        // A refused connection may be reset before or after connect returns.
                        let stalled = match connect_from(source, addr).await {
                            Ok(io) => stall(io, LARGE).await,
                            Err(_) => None,
                        };
                        match stalled {
                            Some(s) => {
                                mine.push(s);
                                refused = 0;
                            }
                            None if refused + 1 == refusals_in_a_row => break,
                            None => refused += 1,
                        }
                    }
                    mine
                })
            })
            .collect::<Vec<_>>()
    };
    // The worst order for the reserve: eight addresses take every open
    // place, then 56 others come for the reserved ones.
    let started = Instant::now();
    let mut stalled = Vec::new();
    for wave in [0..8, 8..STALLING_ADDRESSES] {
        for a in attack(wave) {
            stalled.extend(a.await.unwrap());
        }
    }
    let opened_in = started.elapsed();
    let held_now = stalled.iter().filter(|s| s.is_open()).count();
    let server_open = env.app.metrics.connections_open();
    println!(
        "{STALLING_ADDRESSES} addresses stalled {} connections in {opened_in:?}; {held_now} still open, the server counts \
         {server_open}",
        stalled.len()
    );
    assert!(opened_in < Duration::from_secs(24), "opening took {opened_in:?}: the deadline would end some first");
    assert_eq!(held_now, stalled.len(), "all still stalled");
    assert_eq!(server_open, stalled.len() as u64);
    let bound = limits.total - limits.reserved + STALLING_ADDRESSES * limits.reserved_per_ip;
    assert!(stalled.len() >= limits.total - limits.reserved, "the open places are taken: {}", stalled.len());
    assert!(stalled.len() <= bound, "{} held, more than {bound}", stalled.len());
    let refused = env.app.metrics.refused_count("connection_limit_reserved");
    assert!(refused >= (STALLING_ADDRESSES * refusals_in_a_row) as u64, "{refused} refused for the reserve");
    assert_eq!(env.app.metrics.refused_count("connection_limit"), 0, "the overall cap is never reached");

    // Meanwhile: a monitor on a new connection each time, and a new payer.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let payer_at = "127.0.0.66".parse::<IpAddr>().unwrap();
    let payer = reqwest::Client::builder().local_address(payer_at).pool_max_idle_per_host(0).build().unwrap();
    let mut latencies = Vec::new();
    let probing = Instant::now();
    let mut paid = 0;
    while probing.elapsed() < Duration::from_secs(4) && latencies.len() < 200 {
        let asked = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), fresh.get(format!("{}/healthz", env.base)).send())
            .await
            .expect("/healthz answers within 2 s")
            .expect("/healthz is served");
        assert_eq!(r.status(), 200);
        latencies.push(asked.elapsed());
        if latencies.len() % 10 == 1 {
            let r = payer.get(format!("{}/pay/openid?code=code-stall-{paid}", env.base)).send().await.unwrap();
            assert_eq!(r.status(), 200, "a new payer logs in");
            let body: serde_json::Value = r.json().await.unwrap();
            let openid = body["openid"].as_str().expect("an openid").to_owned();
            let no = format!("STALL{paid:05}");
            let order = serde_json::json!({ "outTradeNo": no, "totalFee": "100", "body": "b", "openid": openid });
            let r = payer.post(format!("{}/pay/unifiedOrder", env.base)).json(&order).send().await.unwrap();
            assert_eq!(r.status(), 200, "the payer's order is placed: {}", r.text().await.unwrap());
            let r = payer.get(format!("{}/pay/orders/{no}?openid={openid}", env.base)).send().await.unwrap();
            assert_eq!(r.status(), 200, "the payer reads the order");
            paid += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still = stalled.iter().filter(|s| s.is_open()).count();
    assert_eq!(still, stalled.len(), "the stalls lasted the whole check");
    latencies.sort();
    let (median, max) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    println!(
        "{} /healthz on new connections during the stall: median {median:?}, max {max:?}; {paid} payers served",
        latencies.len()
    );
    assert!(paid >= 2);

    // Then the deadline ends every one of them, and the places come back.
    let held = stalled.len();
    let mut longest = Duration::ZERO;
    for s in stalled {
        longest = longest.max(s.lifetime(Duration::from_secs(40)).await);
    }
    println!("the longest stalled connection lived {longest:?} (write_timeout_secs = 30)");
    assert!(longest >= limits.write - Duration::from_millis(100), "lived only {longest:?}");
    assert!(longest < limits.write + Duration::from_secs(3), "lived {longest:?}");
    assert_eq!(env.app.metrics.closed_count("write_timeout"), held as u64);
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.app.metrics.connections_open() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(env.app.metrics.connections_open() <= 1, "{} still open", env.app.metrics.connections_open());
    env.stop().await;
}
