//! The command line: `paybridge serve | sandbox | check-config | doctor |
//! backup | restore | reconcile | order | archive run|verify |
//! admin set-password | cert status`.
//!
//! Longer than the usual file on purpose: it is the clap definition of every
//! command and one short function per command, read together when a command
//! is added; the work itself is in the modules each function calls.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
        /// The WeChat Pay API to simulate: v2 (XML, MD5) or v3 (JSON, RSA, the WeChat Pay public key).
        #[arg(long, default_value = "v2", value_parser = ["v2", "v3"])]
        api: String,
    },
    /// Validate a config file and print the effective settings (secrets masked).
    CheckConfig {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Prove every credential against WeChat before the first real payment:
    /// one line per check (✓ / ✗ / !), what to fix and where; exits non-zero
    /// if any check failed. Creates no order and prints no secret.
    Doctor {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG")]
        config: PathBuf,
        /// Only the config and the credentials, not this machine's HTTPS,
        /// notify URL and DNS (run elsewhere than on the server).
        #[arg(long)]
        credentials_only: bool,
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
    /// Reconcile one day's WeChat Pay bill with the orders (对账), through
    /// the running server, or directly when it is stopped.
    Reconcile {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG", required_unless_present = "data_dir")]
        config: Option<PathBuf>,
        /// Or only the data directory of a running server (the sandbox's).
        #[arg(long, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// The Beijing day, YYYY-MM-DD.
        #[arg(long)]
        date: String,
    },
    /// Restore a backup into the data directory of the config (stop
    /// PayBridge first; run as root or the service user).
    Restore {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG")]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Replace the data that is there: it is kept beside, as
        /// `<data_dir>.before-restore-<time>`; certificates move over.
        #[arg(long)]
        replace: bool,
    },
    /// Show an order by number, from the hot store or the archive (JSON, as
    /// the admin API shows it), through the running server, or directly
    /// when it is stopped.
    Order {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG", required_unless_present = "data_dir")]
        config: Option<PathBuf>,
        /// Or only the data directory of a running server (the sandbox's).
        #[arg(long, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// The order number (out_trade_no).
        number: String,
    },
    /// The archive of orders that ended long ago (`[storage] archive_after_days`).
    Archive {
        /// What to do.
        #[command(subcommand)]
        action: ArchiveCommand,
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

/// `paybridge archive ...`
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Move the orders that are due to the archive now, through the running
    /// server, or directly when it is stopped (the server also does it daily).
    Run {
        /// The TOML config file.
        #[arg(long, env = "PAYBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Check every archive file: each frame's checksum, each record, the
    /// index against the file. Prints a summary; exits non-zero on damage.
    Verify {
        /// The TOML config file.
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

/// An error and its causes on one line, each cause once: many errors
/// already quote their cause, and printing it again says it twice
/// ("No such file or directory (os error 2): No such file or directory ...").
pub fn error_message(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// Runs the command line.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Sandbox {
            listen: None,
            simulator_listen: None,
            data_dir: None,
            api: "v2".into(),
        }) {
            Command::Serve { config: path } => {
                let config = Config::load(&path)?;
                let _logging = init_tracing(config.log);
                for warning in config.warnings(Some(&path)) {
                    tracing::warn!("config: {warning}");
                }
                serve(config, Some(path)).await
            }
            Command::Sandbox { listen, simulator_listen, data_dir, api } => {
                let _logging = init_tracing(LogConfig::Human);
                serve(Config::sandbox_with_api(&api).with_overrides(listen, simulator_listen, data_dir), None).await
            }
            Command::CheckConfig { config: path } => {
                // Every problem at once, so one run shows all there is to fix.
                let config = match Config::check(&path) {
                    Ok(config) => config,
                    Err(errors) if errors.len() == 1 => return Err(errors.into_iter().next().expect("one").into()),
                    Err(errors) => {
                        let list: Vec<String> = errors.iter().map(|e| format!("\n  - {e}")).collect();
                        anyhow::bail!("{} problems in {}:{}", errors.len(), path.display(), list.concat());
                    }
                };
                print!("{}", config.describe());
                let warnings = config.warnings(Some(&path));
                for warning in &warnings {
                    println!("\n# WARNING: {warning}");
                }
                match warnings.len() {
                    0 => println!("\n# config OK"),
                    n => println!("\n# config valid, with {n} warning(s) above"),
                }
                Ok(())
            }
            Command::Doctor { config: path, credentials_only } => {
                let scope = match credentials_only {
                    true => crate::doctor::Scope::Credentials,
                    false => crate::doctor::Scope::Everything,
                };
                let report = crate::doctor::check_file(&path, scope).await;
                print!("{}", report.text());
                match report.count(crate::checkup::Outcome::Failed) {
                    0 => Ok(()),
                    n => anyhow::bail!("{n} check(s) failed: fix each as its line says, then run the doctor again"),
                }
            }
            Command::Admin { action: AdminCommand::SetPassword { config } } => set_password(&config),
            Command::Backup { config, to } => backup(&Config::load(&config)?, &to).await,
            Command::Reconcile { config, data_dir, date } => {
                let config = config.map(|c| Config::load(&c)).transpose()?;
                let dir = data_dir.or_else(|| config.as_ref().map(|c| c.data_dir.clone())).expect("clap requires one");
                reconcile(config.as_ref(), &dir, &date).await
            }
            Command::Order { config, data_dir, number } => {
                let config = config.map(|c| Config::load(&c)).transpose()?;
                let dir = data_dir.or_else(|| config.as_ref().map(|c| c.data_dir.clone())).expect("clap requires one");
                show_order(config.as_ref(), &dir, &number).await
            }
            Command::Archive { action: ArchiveCommand::Run { config } } => archive_run(&Config::load(&config)?).await,
            Command::Archive { action: ArchiveCommand::Verify { config } } => {
                let config = Config::load(&config)?;
                let report = crate::store::archive::Archive::new(&config.data_dir).verify()?;
                print!("{}", report.summary());
                anyhow::ensure!(
                    !report.damaged(),
                    "the archive in {} is damaged (see above)",
                    config.data_dir.display()
                );
                Ok(())
            }
            Command::Restore { config, from, replace } => restore(&Config::load(&config)?, &from, replace).await,
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
    // Customers' payments: owner-only, under a temporary name until complete.
    use crate::tls::cert::{folder_of, PrivateFile};
    PrivateFile::remove_stale(to);
    let mut file = PrivateFile::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    let folder = folder_of(to).canonicalize().with_context(|| format!("cannot write {}", to.display()))?;
    // Wherever it goes (often the data directory's disk), a backup leaves room for payments.
    let out =
        crate::store::backup::KeepFree::new(file.file().try_clone()?, &folder, crate::store::backup::DISK_RESERVE)
            .with_context(|| format!("cannot write {}", to.display()))?;
    // Ctrl-C or SIGTERM: stop, and the temporary file goes with `file`.
    let len = tokio::select! {
        len = write_backup(config, out) => len?,
        () = shutdown_signal() => anyhow::bail!("interrupted: no backup was written to {}", to.display()),
    };
    file.commit().with_context(|| format!("cannot write {}", to.display()))?;
    println!("Backup written to {} ({len} bytes).", to.display());
    Ok(())
}

/// Writes the backup to `out`: from the running server over its control
/// socket, or, when none answers, from the data directory itself.
async fn write_backup(config: &Config, mut out: crate::store::backup::KeepFree<std::fs::File>) -> anyhow::Result<u64> {
    let dir = &config.data_dir;
    if let Some(len) = crate::control::backup(dir, &mut out).await? {
        return Ok(len);
    }
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
    let written = store.backup(&crate::store::archive::Archive::new(dir), out).await;
    store.close(std::time::Duration::from_secs(30)).await;
    Ok(written?.1)
}

/// Reconciles a day through the server on `dir`, or with `config` directly
/// when none runs; prints the result. Differences and failures are errors
/// (a non-zero exit), so a script notices.
async fn reconcile(config: Option<&Config>, dir: &std::path::Path, day: &str) -> anyhow::Result<()> {
    let json = match crate::control::reconcile(dir, day).await? {
        Some(json) => serde_json::from_slice::<serde_json::Value>(&json)?,
        None => {
            let Some(config) = config else {
                anyhow::bail!("no PayBridge answers on {}: start it, or pass --config", dir.display())
            };
            let now = crate::store::StoreOptions { lock_wait: std::time::Duration::ZERO, ..config.storage };
            let store = crate::store::Store::open_with(dir, config.mode, now)?;
            let metrics = Arc::new(crate::metrics::Metrics::default());
            let payments = Arc::new(crate::pay::Payments::new(config.pay_settings(), store.clone(), metrics)?);
            if payments.uses_platform_certificates() {
                payments.start_certificates().await;
            }
            let clock = Arc::new(crate::platform::webhook::Clock::default());
            let archive = crate::store::archive::Archive::new(dir);
            let reconciler =
                crate::pay::reconcile::Reconciler::new(payments, clock, config.reconcile.keep_bills_days, archive);
            let result = reconciler.run_day(day).await;
            store.close(std::time::Duration::from_secs(30)).await;
            serde_json::to_value(crate::admin::BillDayView::from(&result?))?
        }
    };
    let text = |k: &str| json[k].as_str().unwrap_or("").to_owned();
    let number = |k: &str| json[k].as_u64().unwrap_or(0);
    let yuan = |fen: u64| format!("¥{}", crate::wechat::bill::yuan(fen));
    println!(
        "{}: {} ({} payments, {}; {} refunds, {})",
        text("day"),
        text("state"),
        number("payments"),
        yuan(number("paymentFen")),
        number("refunds"),
        yuan(number("refundFen"))
    );
    for d in json["differences"].as_array().into_iter().flatten() {
        let field = |k: &str| d[k].as_str().map(str::to_owned).or(d[k].as_u64().map(|n| n.to_string()));
        println!(
            "  {:<16} order {} {}wechat: {} {} / here: {} {}",
            field("kind").unwrap_or_default(),
            field("outTradeNo").unwrap_or_default(),
            field("outRefundNo").map(|r| format!("refund {r} ")).unwrap_or_default(),
            field("wechatFen").map_or("-".into(), |f| format!("{f} fen")),
            field("wechatStatus").unwrap_or_default(),
            field("localFen").map_or("-".into(), |f| format!("{f} fen")),
            field("localStatus").unwrap_or_default(),
        );
    }
    if let Some(warning) = json["summaryWarning"].as_str() {
        println!("  warning: {warning}");
    }
    match text("state").as_str() {
        "MATCHED" | "NO_BILL" => Ok(()),
        "DIFFERENCES" => {
            anyhow::bail!("{} difference(s) between WeChat's bill and PayBridge", number("differenceCount"))
        }
        _ => anyhow::bail!("{}", json["error"].as_str().unwrap_or("the day could not be reconciled")),
    }
}

/// Opens the store of a stopped server directly, without waiting for its
/// lock (a running one holds it: then its control socket must answer).
fn open_stopped(config: &Config) -> anyhow::Result<crate::store::Store> {
    let dir = &config.data_dir;
    anyhow::ensure!(
        crate::store::holds_data(dir),
        "no PayBridge data in {} (data_dir): is it the right config?",
        dir.display()
    );
    let now = crate::store::StoreOptions { lock_wait: std::time::Duration::ZERO, ..config.storage };
    match crate::store::Store::open_with(dir, config.mode, now) {
        Ok(store) => Ok(store),
        Err(e @ crate::store::StoreError::Locked { .. }) => anyhow::bail!(
            "{e}, but its control socket {} does not answer; run this as the service user \
             (sudo -u paybridge ...) or root",
            crate::control::socket_path(dir).display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// Moves what is due to the archive: through the running server, or
/// directly when it is stopped. Prints what moved.
async fn archive_run(config: &Config) -> anyhow::Result<()> {
    let report = match crate::control::archive(&config.data_dir).await? {
        Some(json) => serde_json::from_slice::<crate::store::archive::MoveReport>(&json)?,
        None => {
            let store = open_stopped(config)?;
            let archive = crate::store::archive::Archive::new(&config.data_dir);
            let now = crate::clock::now_ms();
            let cutoff = now - i64::from(config.archive_after_days) * 86_400_000;
            let report = archive.move_ended(&store, cutoff, now).await;
            store.close(std::time::Duration::from_secs(30)).await;
            report?
        }
    };
    println!(
        "Moved {} order(s) that ended more than {} days ago to the archive ({} frame(s), {} bytes{}).",
        report.moved,
        config.archive_after_days,
        report.frames,
        report.bytes,
        if report.months.is_empty() { String::new() } else { format!(", months {}", report.months.join(" ")) }
    );
    if report.changed > 0 {
        println!("{} order(s) changed while moving; they stay and move next time.", report.changed);
    }
    anyhow::ensure!(
        report.failed_months.is_empty(),
        "the archive files of {} could not be written (see the log); their orders stay in the hot store",
        report.failed_months.join(" ")
    );
    Ok(())
}

/// Prints an order (hot store or archive) as JSON.
async fn show_order(config: Option<&Config>, dir: &std::path::Path, number: &str) -> anyhow::Result<()> {
    let json = match crate::control::order(dir, number).await? {
        Some(json) => json,
        None => {
            let Some(config) = config else {
                anyhow::bail!("no PayBridge answers on {}: start it, or pass --config", dir.display())
            };
            let store = open_stopped(config)?;
            let archive = crate::store::archive::Archive::new(dir);
            let found = crate::admin::order_detail(&store, &archive, number);
            store.close(std::time::Duration::from_secs(30)).await;
            found?.map(|d| serde_json::to_vec(&d)).transpose()?.unwrap_or_default()
        }
    };
    anyhow::ensure!(!json.is_empty(), "no order {number} in the hot store or the archive");
    let value: serde_json::Value = serde_json::from_slice(&json)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// Restores a backup into `data_dir`: into a new directory beside it first,
/// then swapped in, with the owner, group and mode of the directory it
/// replaces (so `sudo` leaves it usable by the service user).
async fn restore(config: &Config, from: &std::path::Path, replace: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = &config.data_dir;
    if crate::control::is_serving(dir).await {
        anyhow::bail!("PayBridge is running on {}: stop it first (systemctl stop paybridge)", dir.display());
    }
    let existing = std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    anyhow::ensure!(
        !existing || replace,
        "{} is not empty; add --replace to restore over it (the current data is kept beside it)",
        dir.display()
    );
    let file = std::fs::File::open(from).with_context(|| format!("cannot open the backup {}", from.display()))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    let staging = dir.with_file_name(format!(".{name}.restoring-{:08x}", rand::random::<u32>()));
    crate::store::Store::restore(&staging, std::io::BufReader::new(file))
        .with_context(|| format!("cannot restore {} into {}", from.display(), staging.display()))?;
    let owner = std::fs::metadata(dir).ok();
    let swap = || -> anyhow::Result<Option<PathBuf>> {
        if let Some(meta) = &owner {
            own_like(&staging, meta.uid(), meta.gid())?;
            std::fs::set_permissions(&staging, meta.permissions())
                .with_context(|| format!("cannot set the mode of {}", staging.display()))?;
        }
        let aside = match (existing, owner.is_some()) {
            (true, _) => {
                // Certificates and the ACME account are not in the backup: keep them.
                let tls = dir.join("tls");
                if tls.exists() {
                    std::fs::rename(&tls, staging.join("tls"))
                        .with_context(|| format!("cannot move {} into the restored data", tls.display()))?;
                }
                let aside = dir.with_file_name(format!("{name}.before-restore-{}", crate::clock::now_ms() / 1000));
                std::fs::rename(dir, &aside)
                    .with_context(|| format!("cannot move {} aside to {}", dir.display(), aside.display()))?;
                Some(aside)
            }
            (false, true) => {
                std::fs::remove_dir(dir).with_context(|| format!("cannot replace the empty {}", dir.display()))?;
                None
            }
            (false, false) => None,
        };
        std::fs::rename(&staging, dir)
            .with_context(|| format!("cannot move {} to {}", staging.display(), dir.display()))?;
        Ok(aside)
    };
    match swap() {
        Ok(aside) => {
            println!("Restored {} into {}. Start PayBridge to use it.", from.display(), dir.display());
            if let Some(aside) = aside {
                println!("The data that was there is kept in {}.", aside.display());
            }
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Gives `path` and everything under it to `uid:gid`.
fn own_like(path: &std::path::Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot give {} to {uid}:{gid}", path.display()))?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        for entry in std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))? {
            own_like(&entry.with_context(|| format!("cannot read {}", path.display()))?.path(), uid, gid)?;
        }
    }
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
    replace_keeping_owner(path, doc.to_string().as_bytes())?;
    println!("Admin password set in {}. Restart PayBridge to use it.", path.display());
    Ok(())
}

/// Replaces `path` atomically, keeping its owner, group and mode (run with
/// sudo, it must stay readable by the service user). The new content is
/// never readable by others, not even for a moment: the temporary file is
/// created 0600.
fn replace_keeping_owner(path: &std::path::Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    // A temporary name of our own next to the file: the rename below is atomic.
    let tmp = PathBuf::from(format!("{}.{:016x}.tmp", path.display(), rand::random::<u64>()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
        file.set_permissions(meta.permissions())?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
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
            let api = running.config.wechat.api.version();
            let (password, data) = (running.sandbox_admin_password.as_deref(), &running.config.data_dir);
            let no = format!("DEMO{stamp}");
            println!("{}", crate::sandbox::walkthrough(running.addr, sim.addr, &code, &no, api, password, data));
            if let Some(password) = &running.sandbox_admin_password {
                println!("Admin page: {base}/admin  (SANDBOX password: {password})\n");
            }
            // What `paybridge doctor` proves for a live merchant, proved here
            // against the simulator.
            let report = crate::doctor::check(&running.config, crate::doctor::Scope::Credentials).await;
            println!("`paybridge doctor` against the simulator:\n{}", report.text());
            println!("PayBridge SANDBOX listening on {base}");
        }
        _ => {
            println!("PayBridge listening on {base} (live mode); admin page: {base}/admin");
            if let (Some(_), Some(http)) = (running.tls_addr, running.http_addr) {
                println!("plain HTTP on http://{http} (ACME challenges and redirects to HTTPS)");
            }
        }
    }
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(()) = hangup.recv() => match &path {
                Some(path) => reload(&running, path),
                None => tracing::info!("SIGHUP: the sandbox has no config file to reload"),
            },
        }
    }
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// SIGHUP: reads the config again and takes the new catalogue and
/// platforms (a key rotation needs no restart); a config that does not load
/// changes nothing. Other settings need a restart.
fn reload(running: &crate::app::Running, path: &std::path::Path) {
    match Config::load(path) {
        Ok(config) => {
            let products = config.products.all().len();
            let platforms = config.platforms.all().len();
            running.payments.set_catalogue(config.products);
            running.payments.set_platforms(config.platforms);
            tracing::info!(
                products,
                platforms,
                "SIGHUP: catalogue and platforms reloaded from {}; other settings take effect on restart",
                path.display()
            );
        }
        Err(e) => tracing::error!(
            error = %e, "SIGHUP: the config does not load; nothing changed (the old catalogue and platforms stay)"
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let quoted = anyhow::Error::new(crate::config::ConfigError::Read { path: "/x.toml".into(), source: io });
        let message = error_message(&quoted.context("cannot start"));
        assert_eq!(message.matches("not found").count(), 1, "{message}");
        assert!(message.starts_with("cannot start: cannot read config file /x.toml"), "{message}");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_message(&plain), "outer: inner");
    }
}
