//! The command line: `paybridge [serve | sandbox | check-config]`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, LogConfig, Mode};

/// PayBridge: WeChat Pay backend for mini-program jump payments, in one binary.
#[derive(Debug, Parser)]
#[command(name = "paybridge", version, about)]
pub struct Cli {
    /// What to do; with none, run the sandbox demo.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run PayBridge with a config file.
    Serve {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Run the local sandbox: PayBridge plus a WeChat Pay simulator, no credentials, no real money.
    Sandbox {
        /// PayBridge's address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// The simulator's address.
        #[arg(long)]
        simulator_listen: Option<SocketAddr>,
        /// Where sandbox data is kept.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a config file and print the effective settings (secrets masked).
    CheckConfig {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Write a consistent backup of the data, from the running server (or
    /// directly, when it is stopped).
    Backup {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG")]
        config: PathBuf,
        /// Where to write the backup.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into the (empty) data directory of the config.
    Restore {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG")]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// Admin page commands.
    Admin {
        /// What to do.
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// HTTPS certificate commands.
    Cert {
        /// What to do.
        #[command(subcommand)]
        action: CertCommand,
    },
}

/// `paybridge admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set the admin password: prompts for it (or reads one line from stdin),
    /// and writes its Argon2id hash into the config file as `[admin] password_hash`.
    SetPassword {
        /// The TOML config file to update.
        #[arg(long, env = "PAYBRIDGE_CONFIG")]
        config: PathBuf,
    },
}

/// `paybridge cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Print the certificate's domains, issuer, validity, next renewal and last error.
    Status {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG")]
        config: PathBuf,
    },
}

/// Sets up logging to stderr (journald keeps it): human-readable or JSON,
/// filtered by `PAYBRIDGE_LOG` or `RUST_LOG` (e.g. `info,paybridge=debug`).
/// Logs go to stderr through a writer thread, so a request never waits for
/// the terminal or the journal (the access log line alone cost more than a
/// `/healthz` answer). Keep the guard until exit: dropping it flushes.
fn init_tracing(format: LogConfig) -> tracing_appender::non_blocking::WorkerGuard {
    let filter =
        std::env::var("PAYBRIDGE_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| "info".into());
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).with_writer(writer);
    match format {
        LogConfig::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogConfig::Json => builder.json().with_current_span(true).init(),
    }
    guard
}

/// Runs the command line.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Sandbox { listen: None, simulator_listen: None, data_dir: None }) {
            Command::Serve { config } => {
                let config = Config::load(&config)?;
                let _logging = init_tracing(config.log);
                serve(config).await
            }
            Command::Sandbox { listen, simulator_listen, data_dir } => {
                let _logging = init_tracing(LogConfig::Human);
                serve(Config::sandbox_default().with_overrides(listen, simulator_listen, data_dir)).await
            }
            Command::CheckConfig { config } => {
                let config = Config::load(&config)?;
                print!("{}", config.describe());
                println!("\n# config OK");
                Ok(())
            }
            Command::Admin { action: AdminCommand::SetPassword { config } } => set_password(&config),
            Command::Backup { config, to } => backup(&Config::load(&config)?, &to).await,
            Command::Restore { config, from } => {
                let config = Config::load(&config)?;
                let file = std::fs::File::open(&from).with_context(|| format!("cannot open {}", from.display()))?;
                crate::store::Store::restore(&config.data_dir, std::io::BufReader::new(file))?;
                println!("Restored {} into {}. Start PayBridge to use it.", from.display(), config.data_dir.display());
                Ok(())
            }
            Command::Cert { action: CertCommand::Status { config } } => {
                let config = Config::load(&config)?;
                if !config.tls.enabled() {
                    println!("TLS is off ([tls] mode = \"off\"): PayBridge serves plain HTTP only.");
                    return Ok(());
                }
                match crate::tls::TlsStatus::read(&config.data_dir) {
                    Ok(status) => print!("{}", status.report()),
                    Err(_) => println!(
                        "no certificate status yet in {} (has PayBridge run with [tls] mode = \"{}\"?)",
                        config.data_dir.display(),
                        config.tls.mode.as_str()
                    ),
                }
                Ok(())
            }
        }
    });
    // Whatever still runs (a writer stuck on a dead disk, a blocking task)
    // must not keep the process from exiting: systemd waits for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Writes a backup: from the running server over its control socket, or
/// straight from the data directory when PayBridge is stopped. Never
/// creates a data directory: a wrong `data_dir` is an error naming it.
async fn backup(config: &Config, to: &std::path::Path) -> anyhow::Result<()> {
    let dir = &config.data_dir;
    anyhow::ensure!(
        crate::store::holds_data(dir),
        "no PayBridge data in {} (data_dir): is it the right config? Nothing was written",
        dir.display()
    );
    let bytes = match crate::control::backup(dir).await? {
        Some(bytes) => bytes,
        None => {
            // No server answers: open the directory ourselves, without waiting for its lock.
            let now = crate::store::StoreOptions { lock_wait: std::time::Duration::ZERO, ..config.storage };
            let store = match crate::store::Store::open_with(dir, config.mode, now) {
                Ok(store) => store,
                Err(e @ crate::store::StoreError::Locked { .. }) => anyhow::bail!(
                    "{e}, but its control socket {} does not answer; run `paybridge backup` as the service user \
                     (sudo -u paybridge ...) or root",
                    crate::control::socket_path(dir).display()
                ),
                Err(e) => return Err(e.into()),
            };
            let bytes = store.backup().await?;
            store.close(std::time::Duration::from_secs(30)).await;
            bytes
        }
    };
    // Customers' payments: owner-only, written atomically.
    crate::tls::cert::write_private(to, &bytes).with_context(|| format!("cannot write {}", to.display()))?;
    println!("Backup written to {} ({} bytes).", to.display(), bytes.len());
    Ok(())
}

/// Reads the new password, hashes it, and writes `[admin] password_hash`,
/// keeping the rest of the file (comments included) as it was.
fn set_password(path: &std::path::Path) -> anyhow::Result<()> {
    use crate::admin::auth::{hash_password, MIN_PASSWORD_LEN};
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New admin password: ")?;
        let again = rpassword::prompt_password("Repeat it: ")?;
        anyhow::ensure!(first == again, "the two passwords differ; nothing changed");
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    anyhow::ensure!(
        password.chars().count() >= MIN_PASSWORD_LEN,
        "the password must be at least {MIN_PASSWORD_LEN} characters; nothing changed"
    );
    if !doc.contains_key("admin") {
        doc["admin"] = toml_edit::table();
    }
    doc["admin"]["password_hash"] = toml_edit::value(hash_password(&password));
    // A temporary name of our own next to the file: the rename below is atomic.
    let tmp = PathBuf::from(format!("{}.{:016x}.tmp", path.display(), rand::random::<u64>()));
    std::fs::write(&tmp, doc.to_string())?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions())?;
    }
    std::fs::rename(&tmp, path)?;
    println!("Admin password set in {}. Restart PayBridge to use it.", path.display());
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = crate::app::start(config).await?;
    let base = match running.tls_addr {
        Some(addr) => format!("https://{addr}"),
        None => format!("http://{}", running.addr),
    };
    match (&running.config.mode, &running.simulator) {
        (Mode::Sandbox, Some(sim)) => {
            tracing::warn!(
                "SANDBOX mode: simulated WeChat Pay, no real money; data in {}",
                running.config.data_dir.display()
            );
            let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let code = format!("demo-{}", &crate::wechat::nonce_str()[..8]);
            println!("{}", crate::sandbox::walkthrough(running.addr, sim.addr, &code, &format!("DEMO{stamp}")));
            if let Some(password) = &running.sandbox_admin_password {
                println!("Admin page: {base}/admin  (SANDBOX password: {password})\n");
            }
            println!("PayBridge SANDBOX listening on {base}");
        }
        _ => {
            println!("PayBridge listening on {base} (live mode); admin page: {base}/admin");
            if let (Some(_), Some(http)) = (running.tls_addr, running.http_addr) {
                println!("plain HTTP on http://{http} (ACME challenges and redirects to HTTPS)");
            }
        }
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (systemd stop).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
