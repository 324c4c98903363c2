//! The System view's "Check credentials": `paybridge doctor` for the
//! running configuration. The admin layer cannot import the doctor (it sits
//! above); the wiring hands it a function that runs one and returns the
//! ground-layer [`Report`]. Each run calls WeChat, so it is bounded: one at
//! a time, and at most one every [`MIN_INTERVAL`].

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::checkup::Report;

/// Runs one checkup of the running configuration.
pub type RunCheckup = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Report> + Send>> + Send + Sync>;

/// The least time between the starts of two runs.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// Why a run was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Another run is under way.
    #[error("a check is running already: wait for its result")]
    Running,
    /// The last run started less than [`MIN_INTERVAL`] ago.
    #[error("the last check started less than 10 s ago: try again in {0} s")]
    TooSoon(u64),
}

/// The checkup function and its bounds.
pub struct Checkups {
    run: RunCheckup,
    /// When the last run started; locked for as long as a run lasts.
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl Checkups {
    /// Bounds `run`.
    pub fn new(run: RunCheckup) -> Checkups {
        Checkups { run, last: tokio::sync::Mutex::new(None) }
    }

    /// Runs a checkup, unless one runs or one started within [`MIN_INTERVAL`].
    pub async fn run(&self) -> Result<Report, Refused> {
        let Ok(mut last) = self.last.try_lock() else {
            return Err(Refused::Running);
        };
        if let Some(since) = last.map(|at| at.elapsed()).filter(|since| *since < MIN_INTERVAL) {
            return Err(Refused::TooSoon((MIN_INTERVAL - since).as_secs().max(1)));
        }
        *last = Some(Instant::now());
        Ok((self.run)().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkup::Check;

    #[tokio::test]
    async fn one_run_at_a_time_and_one_per_interval() {
        let (entered, release) = (tokio::sync::Notify::new(), std::sync::Arc::new(tokio::sync::Notify::new()));
        let entered = std::sync::Arc::new(entered);
        let (e, r) = (entered.clone(), release.clone());
        let checkups = std::sync::Arc::new(Checkups::new(Box::new(move || {
            let (e, r) = (e.clone(), r.clone());
            Box::pin(async move {
                e.notify_one();
                r.notified().await;
                Report { checks: vec![Check::passed("login", "login", "ok")] }
            })
        })));
        let first = tokio::spawn({
            let checkups = checkups.clone();
            async move { checkups.run().await }
        });
        entered.notified().await;
        assert_eq!(checkups.run().await, Err(Refused::Running));
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().checks.len(), 1);
        assert!(matches!(checkups.run().await, Err(Refused::TooSoon(s)) if (1..=10).contains(&s)));
    }
}
