//! Delivers the simulator's payment notifies the way WeChat does: POST the
//! signed message, wait up to 5 s for an acknowledgement (v2:
//! `return_code=SUCCESS`; v3: any 2xx), and otherwise retry on WeChat's
//! schedule (15 s, 15 s, 30 s, 3 min ... 24 h in all).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::wechat::xml;

/// WeChat's waits between notify attempts (the first attempt is immediate).
pub const WECHAT_SCHEDULE: [Duration; 15] = [
    Duration::from_secs(15),
    Duration::from_secs(15),
    Duration::from_secs(30),
    Duration::from_secs(180),
    Duration::from_secs(600),
    Duration::from_secs(1200),
    Duration::from_secs(1800),
    Duration::from_secs(1800),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(3 * 3600),
    Duration::from_secs(3 * 3600),
    Duration::from_secs(3 * 3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(6 * 3600),
];

/// How WeChat considers a notify reply: within 5 s, or it is a failure.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The state of one order's notify delivery, as the control API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivery {
    /// Attempts made so far (each may send several concurrent copies).
    pub attempts: u32,
    /// Whether a reply said SUCCESS.
    pub acknowledged: bool,
    /// The last reply or error, for a person.
    pub last_reply: Option<String>,
    /// True once the schedule is exhausted without an acknowledgement.
    pub given_up: bool,
}

/// One notify as sent: v2's XML, or v3's signed JSON.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `Wechatpay-*` headers (v3), none in v2.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// v3: any 2xx acknowledges; v2 needs `return_code=SUCCESS`.
    pub v3: bool,
}

/// Sends what `make` builds (again for each attempt: v3 signs each one
/// afresh) to `url` until acknowledged or the schedule runs out, `copies`
/// concurrent copies on the first attempt (WeChat's several servers
/// sometimes deliver the same notify at once).
pub async fn deliver(
    http: reqwest::Client,
    url: String,
    make: impl Fn() -> Outgoing + Send,
    copies: usize,
    schedule: Vec<Duration>,
    status: Arc<Mutex<Delivery>>,
) {
    let mut waits = schedule.into_iter();
    let mut copies = copies.max(1);
    loop {
        let outgoing: Vec<Outgoing> = (0..copies).map(|_| make()).collect();
        let sends = outgoing.iter().map(|o| attempt(&http, &url, o));
        let results = futures_util::future::join_all(sends).await;
        let acknowledged = results.iter().any(|r| r.is_ok());
        {
            let mut s = status.lock().expect("delivery status lock");
            s.attempts += 1;
            s.acknowledged |= acknowledged;
            s.last_reply = Some(match results.iter().find(|r| r.is_err()).or(results.first()) {
                Some(Ok(reply)) | Some(Err(reply)) => reply.clone(),
                None => String::new(),
            });
        }
        if acknowledged {
            return;
        }
        copies = 1;
        match waits.next() {
            Some(wait) => tokio::time::sleep(wait).await,
            None => {
                status.lock().expect("delivery status lock").given_up = true;
                tracing::warn!(target: "sandbox", url, "SANDBOX notify never acknowledged; giving up as WeChat does");
                return;
            }
        }
    }
}

/// One POST; `Ok` with the reply text when it acknowledges, else `Err` with why.
async fn attempt(http: &reqwest::Client, url: &str, outgoing: &Outgoing) -> Result<String, String> {
    let content_type = if outgoing.v3 { "application/json" } else { "text/xml" };
    let mut request = http.post(url).header(reqwest::header::CONTENT_TYPE, content_type).timeout(REPLY_TIMEOUT);
    for (name, value) in &outgoing.headers {
        request = request.header(*name, value);
    }
    let reply =
        request.body(outgoing.body.clone()).send().await.map_err(|e| format!("no reply: {}", e.without_url()))?;
    let status = reply.status();
    let text = reply.text().await.map_err(|e| format!("unreadable reply: {}", e.without_url()))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {text}"));
    }
    if outgoing.v3 {
        // The status decides, whatever the body says.
        return Ok(format!("HTTP {status}"));
    }
    match xml::parse(text.as_bytes()) {
        Ok(f) if f.get("return_code").map(String::as_str) == Some("SUCCESS") => Ok(text),
        _ => Err(text),
    }
}
