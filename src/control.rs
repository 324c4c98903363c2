//! The control socket: operator actions on a running server, never on a
//! network listener.
//!
//! `<data_dir>/control.sock` is a Unix socket with mode 0600; the server also
//! checks that the connecting process runs as the socket's owner (or root)
//! with `SO_PEERCRED`. A same-host proxy, a port forward or a firewall
//! mistake cannot reach it. `paybridge backup` uses it.
//!
//! Protocol: the client sends one line and the server answers, then closes:
//! - `backup` → `ok <length>` and that many bytes;
//! - `reconcile <yyyy-MM-dd>` → `ok <length>` and the day's result as JSON
//!   (what the admin API returns);
//! - `archive` → moves the orders that are due to the archive now; `ok
//!   <length>` and what it did as JSON;
//! - `order <out_trade_no>` → `ok <length>` and the order as JSON (the
//!   admin API's detail, from the hot store or the archive), `ok 0` if none;
//!
//! or `error <message>`.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::store::backup::{KeepFree, DISK_RESERVE};
use crate::store::Store;

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";

/// The socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Binds the control socket in `data_dir` (replacing a stale one: the
/// caller holds the store's lock, so no other server uses this directory).
pub fn bind(data_dir: &Path) -> io::Result<UnixListener> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What the socket's requests act on.
#[derive(Clone)]
pub struct Control {
    /// For backups.
    pub store: Store,
    /// For `reconcile`.
    pub reconciler: std::sync::Arc<crate::pay::reconcile::Reconciler>,
    /// For `archive` and `order`.
    pub archive: crate::store::archive::Archive,
    /// `[storage] archive_after_days`.
    pub archive_after_days: u32,
    /// The schedules' clock: what "now" is for a move.
    pub clock: std::sync::Arc<crate::clock::Clock>,
}

/// Serves operator requests until the task is dropped.
pub async fn serve(listener: UnixListener, control: Control, socket: PathBuf) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (control, socket) = (control.clone(), socket.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &control, &socket).await {
                tracing::warn!(error = %e, "control socket request failed");
            }
        });
    }
}

async fn handle(stream: UnixStream, control: &Control, socket: &Path) -> io::Result<()> {
    let store = &control.store;
    let owner = std::fs::metadata(socket)?.uid();
    let caller = stream.peer_cred()?.uid();
    let mut stream = BufReader::new(stream);
    if caller != owner && caller != 0 {
        tracing::warn!(caller, owner, "control socket: refused a process of another user");
        return stream.get_mut().write_all(b"error only the service user or root may use this socket\n").await;
    }
    let mut line = String::new();
    let mut request = (&mut stream).take(64);
    let asked = tokio::time::timeout(std::time::Duration::from_secs(10), request.read_line(&mut line)).await;
    if asked.is_err() {
        return stream.get_mut().write_all(b"error no request within 10 seconds\n").await;
    }
    match line.trim() {
        "backup" => {
            let data_dir = socket.parent().unwrap_or(Path::new("."));
            match spool_backup(store, &control.archive, data_dir, DISK_RESERVE).await {
                Ok((spool, len)) => {
                    tracing::info!(bytes = len, "backup taken");
                    let out = stream.get_mut();
                    out.write_all(format!("ok {len}\n").as_bytes()).await?;
                    send(out, spool, len).await
                }
                Err(e) => {
                    tracing::error!(error = %e, "backup failed");
                    stream.get_mut().write_all(format!("error the backup failed: {e}\n").as_bytes()).await
                }
            }
        }
        other if other.starts_with("reconcile ") => {
            let day = other["reconcile ".len()..].trim();
            match control.reconciler.run_day(day).await {
                Ok(result) => {
                    let json = serde_json::to_vec(&crate::admin::BillDayView::from(&result)).unwrap_or_default();
                    let out = stream.get_mut();
                    out.write_all(format!("ok {}\n", json.len()).as_bytes()).await?;
                    out.write_all(&json).await
                }
                Err(e) => stream.get_mut().write_all(format!("error {e}\n").as_bytes()).await,
            }
        }
        "archive" => {
            let now = control.clock.now_ms();
            let cutoff = now - i64::from(control.archive_after_days) * 86_400_000;
            match control.archive.move_ended(store, cutoff, now).await {
                Ok(report) => ok_json(stream.get_mut(), &serde_json::to_vec(&report).unwrap_or_default()).await,
                Err(e) => stream.get_mut().write_all(format!("error the move failed: {e}\n").as_bytes()).await,
            }
        }
        other if other.starts_with("order ") => {
            let no = other["order ".len()..].trim().to_owned();
            let (store, archive) = (store.clone(), control.archive.clone());
            let found = tokio::task::spawn_blocking(move || crate::admin::order_detail(&store, &archive, &no)).await;
            match found {
                Ok(Ok(detail)) => {
                    let json = detail.map(|d| serde_json::to_vec(&d).unwrap_or_default()).unwrap_or_default();
                    ok_json(stream.get_mut(), &json).await
                }
                Ok(Err(e)) => stream.get_mut().write_all(format!("error {e}\n").as_bytes()).await,
                Err(e) => stream.get_mut().write_all(format!("error {e}\n").as_bytes()).await,
            }
        }
        other => {
            let reply = format!(
                "error unknown request {:?}; this server knows: backup, reconcile, archive, order\n",
                other.escape_debug()
            );
            stream.get_mut().write_all(reply.as_bytes()).await
        }
    }
}

/// Writes a backup into a spool file in `data_dir`, then rewinds it: the
/// store's copy is taken at the writer's pace, not the reader's, and a
/// backup of any size is never in memory. The file has no name (Linux's
/// `O_TMPFILE`; elsewhere it is unlinked as soon as it is made), so nothing
/// is left behind, whatever stops the process; it leaves `reserve` bytes
/// free on the disk (a backup fails rather than take the room payments
/// need).
async fn spool_backup(
    store: &Store,
    archive: &crate::store::archive::Archive,
    data_dir: &Path,
    reserve: u64,
) -> Result<(std::fs::File, u64), crate::store::StoreError> {
    use std::io::Seek;
    let failed = crate::store::StoreError::Backup;
    let file = tempfile::tempfile_in(data_dir).map_err(failed)?;
    let out = KeepFree::new(file, data_dir, reserve).map_err(failed)?;
    let (out, len) = store.backup(archive, out).await?;
    let mut spool = out.into_inner();
    spool.rewind().map_err(failed)?;
    Ok((spool, len))
}

/// How long the reader of a backup may take for each buffer of it before
/// the server gives up (and the spool's disk space is given back).
const SEND_STALL: std::time::Duration = std::time::Duration::from_secs(20);

/// The slowest a reader may take a backup on average, in bytes a second:
/// one that reads a little every few seconds is given up too.
const SEND_AT_LEAST: u64 = 1 << 20;

/// Sends `file` (`len` bytes) from where it is to its end, within
/// [`SEND_STALL`] for each buffer and [`SEND_STALL`] plus a second per
/// [`SEND_AT_LEAST`] bytes in all.
async fn send(out: &mut UnixStream, file: std::fs::File, len: u64) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + SEND_STALL + std::time::Duration::from_secs(len / SEND_AT_LEAST);
    let mut file = tokio::fs::File::from_std(file);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let until = deadline.min(tokio::time::Instant::now() + SEND_STALL);
        match tokio::time::timeout_at(until, out.write_all(&buf[..n])).await {
            Ok(written) => written?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "the backup's reader stopped reading")),
        }
    }
}

/// Sends `ok <length>` and `bytes`.
async fn ok_json(out: &mut UnixStream, bytes: &[u8]) -> io::Result<()> {
    out.write_all(format!("ok {}\n", bytes.len()).as_bytes()).await?;
    out.write_all(bytes).await
}

/// Asks the server using `data_dir` to move what is due to the archive;
/// returns what it did as JSON. `Ok(None)`: no server answers.
pub async fn archive(data_dir: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    ask(data_dir, "archive").await
}

/// Asks the server using `data_dir` for an order by number (hot store or
/// archive): its JSON, empty if there is none. `Ok(None)`: no server answers.
pub async fn order(data_dir: &Path, out_trade_no: &str) -> anyhow::Result<Option<Vec<u8>>> {
    anyhow::ensure!(!out_trade_no.contains('\n') && out_trade_no.len() <= 50, "an order number is one short line");
    ask(data_dir, &format!("order {out_trade_no}")).await
}

/// Whether a server answers on `data_dir`'s control socket.
pub async fn is_serving(data_dir: &Path) -> bool {
    UnixStream::connect(socket_path(data_dir)).await.is_ok()
}

/// Asks the server using `data_dir` for a backup and writes it to `out`
/// as it arrives; returns its length. `Ok(None)`: no server answers on
/// the socket.
pub async fn backup(data_dir: &Path, out: &mut impl io::Write) -> anyhow::Result<Option<u64>> {
    ask_into(data_dir, "backup", out).await
}

/// Asks the server using `data_dir` to reconcile `day`; returns the
/// result as JSON. `Ok(None)`: no server answers on the socket.
pub async fn reconcile(data_dir: &Path, day: &str) -> anyhow::Result<Option<Vec<u8>>> {
    anyhow::ensure!(!day.contains('\n'), "a day is one line");
    ask(data_dir, &format!("reconcile {day}")).await
}

/// Sends one request; returns the answer's bytes.
async fn ask(data_dir: &Path, request: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    Ok(ask_into(data_dir, request, &mut bytes).await?.map(|_| bytes))
}

/// Sends one request; writes the answer's bytes to `out` as they arrive
/// and returns how many there were.
async fn ask_into(data_dir: &Path, request: &str, out: &mut impl io::Write) -> anyhow::Result<Option<u64>> {
    let path = socket_path(data_dir);
    let Ok(stream) = UnixStream::connect(&path).await else { return Ok(None) };
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(format!("{request}\n").as_bytes()).await?;
    let mut line = String::new();
    (&mut stream).take(4096).read_line(&mut line).await?;
    let line = line.trim_end();
    if let Some(message) = line.strip_prefix("error ") {
        anyhow::bail!("the server at {} refused: {message}", path.display());
    }
    let length: u64 = line
        .strip_prefix("ok ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected answer {line:?} on {}", path.display()))?;
    let mut answer = (&mut stream).take(length);
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0;
    loop {
        let n = answer.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        got += n as u64;
    }
    anyhow::ensure!(got == length, "the answer from {} ended early", path.display());
    Ok(Some(length))
}
