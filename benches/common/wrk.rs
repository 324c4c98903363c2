//! Load from outside the process: Debian's `wrk`, driven by a Lua script,
//! its figures parsed. Shared by the benchmarks.

#![allow(dead_code)] // each benchmark uses a part

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What wrk measured.
pub struct Load {
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Replies that were not 2xx/3xx, and socket errors.
    pub errors: u64,
}

/// Whether `wrk` is installed (`apt-get install wrk`).
pub fn available() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

/// Runs wrk against `url` with `connections` connections for `duration`,
/// with an optional Lua `script` (written to `dir`) and extra `headers`.
pub fn run(
    dir: &Path,
    url: &str,
    connections: usize,
    duration: Duration,
    script: Option<&str>,
    headers: &[&str],
) -> Load {
    let mut command = Command::new("wrk");
    command.args([
        "--latency",
        "-t",
        &connections.clamp(1, 2).to_string(),
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{}s", duration.as_secs().max(1)),
    ]);
    if let Some(script) = script {
        let path = dir.join("wrk.lua");
        std::fs::write(&path, script).unwrap();
        command.args(["-s", path.to_str().unwrap()]);
    }
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command.arg(url).output().expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    parse(&text)
}

fn duration(text: &str) -> Duration {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len()));
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    Duration::from_secs_f64(match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => f64::NAN,
    })
}

fn parse(text: &str) -> Load {
    let field = |prefix: &str| {
        text.lines().map(str::trim).find(|l| l.starts_with(prefix)).map(|l| l[prefix.len()..].trim().to_owned())
    };
    let errors = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.contains(name))
            .and_then(|l| l.split(name).nth(1))
            .map(|rest| rest.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty()).unwrap_or("0"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let socket: u64 = text
        .lines()
        .find(|l| l.contains("Socket errors:"))
        .map(|l| l.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Load {
        per_second: field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
        p50: duration(&field("50%").unwrap_or_default()),
        p99: duration(&field("99%").unwrap_or_default()),
        errors: errors("Non-2xx or 3xx responses:") + socket,
    }
}
