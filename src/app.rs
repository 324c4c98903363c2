//! Wiring: from a validated [`Config`] to running listeners.
//!
//! [`start`] binds, opens the store and spawns the servers, returning a
//! [`Running`] handle, so the binary and the tests start PayBridge the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use url::Url;

use crate::config::{Config, Mode};
use crate::pay::Payments;
use crate::sandbox::{self, Simulator, SimulatorConfig, SimulatorHandle};
use crate::store::Store;

/// A running PayBridge.
pub struct Running {
    /// The plain-HTTP listener's address.
    pub addr: SocketAddr,
    /// The simulator, in sandbox mode.
    pub simulator: Option<SimulatorHandle>,
    /// The configuration in force (with the bound addresses filled in).
    pub config: Config,
    /// The store, for read-only views (tests, later the admin page).
    pub store: Store,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets open requests finish, flushes and closes the store.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        if let Some(sim) = self.simulator {
            sim.stop().await;
        }
    }
}

/// Binds `config.http.listen` and starts.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
    start_with_listener(config, listener).await
}

/// Starts on an already bound listener (tests bind `127.0.0.1:0` first).
pub async fn start_with_listener(mut config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    config.http.listen = addr;

    let simulator = match config.mode {
        Mode::Live => None,
        Mode::Sandbox => {
            let sim_listener = TcpListener::bind(config.sandbox.simulator_listen).await.with_context(|| {
                format!("cannot listen on {} (sandbox.simulator_listen)", config.sandbox.simulator_listen)
            })?;
            let w = &config.wechat;
            let sim = Simulator::new(SimulatorConfig::new(&w.appid, &w.app_secret, &w.mch_id, &w.mch_key));
            let handle = sandbox::serve_simulator(sim, sim_listener)?;
            // The real ports are known only now.
            let sim_url = Url::parse(&handle.url())?;
            config.wechat.pay_base_url = sim_url.clone();
            config.wechat.sns_base_url = sim_url;
            config.wechat.notify_url = Url::parse(&format!("http://{addr}/pay/notify"))?;
            config.sandbox.simulator_listen = handle.addr;
            Some(handle)
        }
    };

    let store = Store::open(&config.data_dir, config.mode)
        .with_context(|| format!("cannot open the data directory {} (data_dir)", config.data_dir.display()))?;
    let payments = Arc::new(Payments::new(&config, store.clone()).context("cannot build the WeChat client")?);
    let routes = crate::http::routes(payments);
    let store_view = store.clone();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        crate::server::run(listener, routes, async {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    });
    tracing::info!(%addr, mode = config.mode.as_str(), "PayBridge listening");
    Ok(Running { addr, simulator, config, store: store_view, stop, task })
}
