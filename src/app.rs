//! Wiring: from a validated [`Config`] to running listeners.
//!
//! [`start`] binds, opens the store, sets up certificates and spawns the
//! servers, returning a [`Running`] handle, so the binary and the tests start
//! PayBridge the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use url::Url;

use crate::admin::Admin;
use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::pay::Payments;
use crate::sandbox::{self, Simulator, SimulatorConfig, SimulatorHandle};
use crate::secret::Secret;
use crate::store::Store;
use crate::tls::{self, StatusHandle};

/// A running PayBridge.
pub struct Running {
    /// Where the API is served: the HTTPS listener when TLS is on, else the plain one.
    pub addr: SocketAddr,
    /// The plain-HTTP listener, if any.
    pub http_addr: Option<SocketAddr>,
    /// The HTTPS listener, if any.
    pub tls_addr: Option<SocketAddr>,
    /// The metrics listener, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// The certificate status, when TLS is on.
    pub tls_status: Option<Arc<StatusHandle>>,
    /// The simulator, in sandbox mode.
    pub simulator: Option<SimulatorHandle>,
    /// The admin password the sandbox made up (printed at start-up).
    pub sandbox_admin_password: Option<String>,
    /// The configuration in force (with the bound addresses filled in).
    pub config: Config,
    /// The store, for read-only views (tests, later the admin page).
    pub store: Store,
    /// The server's counters.
    pub metrics: Arc<Metrics>,
    /// The payment service (its catalogue is replaced on reload).
    pub payments: Arc<Payments>,
    /// The platform webhooks (tests move their clock).
    pub webhooks: Arc<crate::platform::webhook::Webhooks>,
    /// Expiry and reconciliation of open orders (tests move its clock).
    pub lifecycle: Arc<crate::pay::lifecycle::Lifecycle>,
    /// The daily bill.
    pub reconciler: Arc<crate::pay::reconcile::Reconciler>,
    /// Orders that ended long ago, out of the hot store.
    pub archive: crate::store::archive::Archive,
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets open requests finish, flushes and closes the store.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.background {
            task.abort();
        }
        self.webhooks.stop();
        for server in self.servers {
            let _ = server.await;
        }
        // Queued writes are finished and synced; a dead disk must not keep
        // the process from exiting: 10 s grace for requests, 10 s here, 5 s
        // for the writer thread at exit stay within the unit's TimeoutStopSec=30s.
        if !self.store.close(std::time::Duration::from_secs(10)).await {
            tracing::error!("the store did not finish its last writes in time; stopping anyway");
        }
        if let Some(sim) = self.simulator {
            sim.stop().await;
        }
    }
}

/// How often used nonces past the timestamp window are forgotten.
const NONCE_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Forgets platform request nonces whose timestamps are out of the window
/// (a request with them is refused by its timestamp anyway).
async fn forget_old_nonces(store: Store) {
    loop {
        let before = crate::clock::now_ms() / 1000 - crate::platform::auth::MAX_SKEW_SECS - 60;
        while let Ok(1024) = store.prune_nonces(before, 1024).await {}
        tokio::time::sleep(NONCE_CHECK).await;
    }
}

/// How often the notify log's retention is checked.
const NOTIFY_LOG_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} ({key})"))
}

/// Binds the configured listeners and starts.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let http = match config.http.listen {
        Some(addr) if config.mode == Mode::Sandbox => {
            Some(bind(addr, "--listen of `paybridge sandbox`, or http.listen").await?)
        }
        Some(addr) => Some(bind(addr, "http.listen").await?),
        None => None,
    };
    let tls = match config.tls.enabled() {
        true => Some(bind(config.tls.listen, "tls.listen").await?),
        false => None,
    };
    start_with_listeners(config, http, tls).await
}

/// Starts on one already bound plain-HTTP listener (TLS off).
pub async fn start_with_listener(config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    start_with_listeners(config, Some(listener), None).await
}

/// Starts on already bound listeners (tests bind `127.0.0.1:0` first).
pub async fn start_with_listeners(
    mut config: Config,
    http: Option<TcpListener>,
    https: Option<TcpListener>,
) -> anyhow::Result<Running> {
    // One crypto provider for every rustls user (ACME client, HTTPS server).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http_addr = http.as_ref().map(TcpListener::local_addr).transpose()?;
    let tls_addr = https.as_ref().map(TcpListener::local_addr).transpose()?;
    config.http.listen = http_addr;
    if let Some(addr) = tls_addr {
        config.tls.listen = addr;
    }
    anyhow::ensure!(http_addr.is_some() || tls_addr.is_some(), "no listener: set http.listen or [tls]");

    let simulator = match config.mode {
        Mode::Live => None,
        Mode::Sandbox => {
            let Some(addr) = http_addr else { anyhow::bail!("sandbox mode needs http.listen") };
            let sim_listener = bind(
                config.sandbox.simulator_listen,
                "--simulator-listen of `paybridge sandbox`, or sandbox.simulator_listen",
            )
            .await?;
            let w = &config.wechat;
            // The simulator serves both versions of the sandbox merchant.
            let v2_key = crate::secret::Secret::new(crate::sandbox::keys::MCH_KEY);
            let mut sim_config = SimulatorConfig::new(&w.appid, &w.app_secret, &w.mch_id, &v2_key);
            // The demo can reconcile today's payments without waiting a day.
            sim_config.bills_ready_at_once = true;
            let sim = Simulator::new(sim_config);
            let handle = sandbox::serve_simulator(sim, sim_listener)?;
            // The real ports are known only now.
            let sim_url = Url::parse(&handle.url())?;
            if matches!(config.wechat.api, crate::wechat::settings::PayApi::V2 { .. }) {
                // v2 refunds: the simulator's merchant certificate, over its mutual-TLS port.
                let tls = handle.simulator.merchant_tls();
                config.wechat.refund_tls = Some(crate::config::RefundTls {
                    identity_pem: crate::secret::Secret::new(format!("{}{}", tls.client_cert_pem, tls.client_key_pem)),
                    base_url: Url::parse(&handle.secapi_url())?,
                    ca_pem: Some(tls.ca_pem.clone()),
                });
            }
            config.wechat.pay_base_url = sim_url.clone();
            config.wechat.sns_base_url = sim_url;
            config.wechat.notify_url = Url::parse(&format!("http://{addr}/pay/notify"))?;
            let demo = crate::sandbox::keys::DEMO_PLATFORM;
            let demo_webhook =
                Url::parse(&format!("http://{}{}", handle.addr, crate::sandbox::keys::DEMO_WEBHOOK_PATH))?;
            config.platforms = std::mem::take(&mut config.platforms).with_webhook(demo, demo_webhook);
            config.sandbox.simulator_listen = handle.addr;
            Some(handle)
        }
    };

    let store = Store::open_with(&config.data_dir, config.mode, config.storage)
        .with_context(|| format!("cannot open the data directory {} (data_dir)", config.data_dir.display()))?;
    // Who holds the directory, for the error another process gets.
    let pid_file = config.data_dir.join(crate::store::PID_FILE);
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!(error = %e, path = %pid_file.display(), "cannot write the pid file");
    }
    let metrics = Arc::new(Metrics::default());
    let payments = Arc::new(
        Payments::new(config.pay_settings(), store.clone(), metrics.clone())
            .context("cannot build the WeChat client")?,
    );
    let tls = match https.is_some() {
        true => Some(tls::start(&config.tls, &config.data_dir, http.is_some())?),
        false => None,
    };
    let tls_status = tls.as_ref().map(|t| t.status.clone());

    let mut password_hash = config.admin.password_hash.clone();
    let mut sandbox_admin_password = None;
    if config.mode == Mode::Sandbox && password_hash.is_none() {
        // The sandbox makes up a password and prints it (never in live mode).
        let password = crate::wechat::nonce_str()[..16].to_owned();
        password_hash = Some(Secret::new(crate::admin::auth::hash_password(&password)));
        sandbox_admin_password = Some(password);
    }
    if password_hash.is_none() {
        tracing::warn!("no admin password set: the admin page is locked; run `paybridge admin set-password`");
    }
    let webhooks = crate::platform::webhook::Webhooks::new(store.clone(), payments.clone(), metrics.clone());
    let archive = crate::store::archive::Archive::new(&config.data_dir);
    let reconciler = crate::pay::reconcile::Reconciler::new(
        payments.clone(),
        webhooks.shared_clock(),
        config.reconcile.keep_bills_days,
        archive.clone(),
    );
    // The System view's "Check credentials": the doctor, for this config.
    let doctor_config = Arc::new(config.clone());
    let checkup: crate::admin::checkup::RunCheckup = Box::new(move || {
        let config = doctor_config.clone();
        Box::pin(async move { crate::doctor::check(&config, crate::doctor::Scope::Everything).await })
    });
    let admin = Arc::new(
        Admin::new(
            config.admin_settings(),
            store.clone(),
            password_hash,
            tls_status.clone(),
            payments.clone(),
            webhooks.clone(),
            reconciler.clone(),
        )
        .with_checkups(checkup),
    );
    let ops = crate::http::ops::Ops {
        metrics: metrics.clone(),
        store: store.clone(),
        tls_status: tls_status.clone(),
        token: config.metrics.token.clone(),
    };
    let sandbox = config.mode == Mode::Sandbox;
    let api = crate::http::routes(payments.clone(), admin, store.clone(), metrics.clone());
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(bind(addr, "metrics.listen").await?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(TcpListener::local_addr).transpose()?;
    config.metrics.listen = metrics_addr;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let serving = crate::server::Serving { metrics: Some(metrics.clone()), limits: config.http.limits };
    let mut servers = Vec::new();
    let mut background = Vec::new();
    background.push(tokio::spawn(store.clone().keep_notify_log(config.notifies.retention, NOTIFY_LOG_CHECK)));
    background.push(tokio::spawn(forget_old_nonces(store.clone())));
    background.push(tokio::spawn(webhooks.clone().run()));
    let lifecycle = crate::pay::lifecycle::Lifecycle::new(
        payments.clone(),
        config.orders.queries_per_second,
        webhooks.shared_clock(),
    );
    background.push(tokio::spawn(lifecycle.clone().run()));
    if config.reconcile.enabled {
        background.push(tokio::spawn(reconciler.clone().run()));
    }
    background.push(tokio::spawn(archive.clone().keep_moving(
        store.clone(),
        config.archive_after_days,
        webhooks.shared_clock(),
    )));
    if payments.uses_platform_certificates() {
        payments.start_certificates().await;
        background.push(tokio::spawn(payments.clone().run_certificate_refresh()));
    }
    match crate::control::bind(&config.data_dir) {
        Ok(listener) => {
            let socket = crate::control::socket_path(&config.data_dir);
            let control = crate::control::Control {
                store: store.clone(),
                reconciler: reconciler.clone(),
                archive: archive.clone(),
                archive_after_days: config.archive_after_days,
                clock: webhooks.shared_clock(),
            };
            background.push(tokio::spawn(crate::control::serve(listener, control, socket)));
        }
        // A data_dir path too long for a Unix socket, say: serving goes on.
        Err(e) => tracing::warn!(
            error = %e, path = %crate::control::socket_path(&config.data_dir).display(),
            "cannot create the control socket; `paybridge backup` will not reach this server"
        ),
    }
    if let Some(listener) = metrics_listener {
        let routes = crate::http::ops::routes(Arc::new(ops), sandbox);
        let internal = crate::server::Serving { metrics: None, limits: crate::server::ConnectionLimits::default() };
        servers.push(tokio::spawn(crate::server::run(listener, routes, internal, stop_signal())));
    }
    match (https, tls) {
        (Some(https), Some(tls)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(tls.resolver.clone()));
            servers.push(tokio::spawn(crate::server::run_tls(https, acceptor, api, serving.clone(), stop_signal())));
            if let Some(listener) = http {
                let plain = crate::http::plain::routes(tls.http_challenges.clone(), config.tls.listen.port());
                servers.push(tokio::spawn(crate::server::run(listener, plain, serving.clone(), stop_signal())));
            }
            background.extend(tls.task);
        }
        _ => {
            let listener = http.expect("checked above");
            servers.push(tokio::spawn(crate::server::run(listener, api, serving.clone(), stop_signal())));
        }
    }
    let addr = tls_addr.or(http_addr).expect("checked above");
    tracing::info!(
        %addr, mode = config.mode.as_str(), tls = config.tls.mode.as_str(),
        metrics = %metrics_addr.map_or("off".to_owned(), |a| a.to_string()), "PayBridge listening"
    );
    Ok(Running {
        addr,
        http_addr,
        tls_addr,
        metrics_addr,
        tls_status,
        simulator,
        sandbox_admin_password,
        config,
        store,
        metrics,
        payments,
        webhooks,
        lifecycle,
        reconciler,
        archive,
        stop,
        servers,
        background,
    })
}
