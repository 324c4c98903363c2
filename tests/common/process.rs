//! Child processes for tests: killed when their guard drops (also when a
//! test fails), output collected for assertions and failure messages.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process that dies with its guard.
pub struct ChildGuard {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl ChildGuard {
    pub fn spawn(command: &mut Command) -> ChildGuard {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| {
            panic!("cannot start {command:?}: {e} (run the tests with `bash .ci/run`, which installs it)")
        });
        let output = Arc::new(Mutex::new(String::new()));
        collect_lines(child.stdout.take().unwrap(), output.clone());
        collect_lines(child.stderr.take().unwrap(), output.clone());
        ChildGuard { child, output }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends every line `pipe` gives to `sink`, on a thread of its own that
/// ends when the pipe closes.
fn collect_lines(pipe: impl std::io::Read + Send + 'static, sink: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    })
}

/// A port for a child process that must be told its port in advance (a
/// server restarted on the same address, Pebble, chromedriver).
///
/// Not "bind port 0, read it, release it": a port the kernel hands out is
/// in its ephemeral range, where every other test's connections and `:0`
/// listeners take ports too, so it can be gone by the time the child binds
/// it. These ports come from below that range (Linux's starts at 32768),
/// each one handed out once per test process (test binaries run one after
/// another), and are checked free first.
pub fn free_tcp_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 100) * 100;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        let port = u16::try_from(if port >= 32_000 { port - 12_000 } else { port }).expect("below 32768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child process, killed when dropped, whose output is collected.
pub struct Proc {
    pub child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    collectors: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// Runs the `paybridge` binary with `args` and `PAYBRIDGE_LOG=log`.
    pub fn spawn(args: &[&str], log: &str) -> Proc {
        Proc::spawn_program(env!("CARGO_BIN_EXE_paybridge"), args, log)
    }

    /// Runs `program` (a wrapper such as strace, or the binary itself).
    pub fn spawn_program(program: &str, args: &[&str], log: &str) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .env("PAYBRIDGE_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, stderr) = Default::default();
        let collectors = vec![
            collect_lines(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect_lines(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Proc { child, stdout, stderr, collectors }
    }

    /// Waits until stdout has a line containing `needle`; returns the line.
    pub async fn line(&mut self, needle: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(line) = self.stdout.lock().unwrap().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("paybridge exited with {status}: {}", self.stderr.lock().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no line with {needle:?} in: {}", self.stdout.lock().unwrap());
    }

    /// Waits until stderr (the log) has a line containing `needle`.
    pub async fn log_line(&mut self, needle: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(line) = self.stderr.lock().unwrap().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no line with {needle:?} in: {}", self.logs());
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait().await
    }

    /// Waits (up to 20 s) for the process to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no exit within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it has printed so far (it may still be printing).
    pub fn logs(&self) -> String {
        format!("{}\n{}", self.stdout.lock().unwrap(), self.stderr.lock().unwrap())
    }

    /// Everything it printed: waits for it to exit and for both pipes to be
    /// read to the end (after a SIGKILL the last lines may still be in them).
    pub async fn all_logs(&mut self) -> String {
        self.wait().await;
        for collector in self.collectors.drain(..) {
            tokio::task::spawn_blocking(move || collector.join().unwrap()).await.unwrap();
        }
        self.logs()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The word after `marker` in `line`.
pub fn after(line: &str, marker: &str) -> String {
    line.split(marker).nth(1).unwrap().split_whitespace().next().unwrap().to_owned()
}
