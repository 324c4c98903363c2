//! Bounds for what anonymous senders can make PayBridge keep: a per-peer
//! budget with fixed memory, and log lines that summarise instead of flood.
//!
//! A peer is an IPv4 address or an IPv6 /64 (one customer's prefix: an
//! attacker gets millions of addresses inside it for free).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The address as a client on the wire sees it: IPv4-mapped IPv6
/// (`::ffff:127.0.0.1`, what a dual-stack `[::]` listener reports for IPv4
/// clients) becomes plain IPv4, so loopback and per-address limits see one
/// address, not two.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What per-peer limits count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// One IPv4 address.
    V4(u32),
    /// One IPv6 /64.
    V6(u64),
    /// Everyone, when the table of peers is full.
    Overflow,
}

impl PeerKey {
    /// The key of an address.
    pub fn of(ip: IpAddr) -> PeerKey {
        match canonical(ip) {
            IpAddr::V4(v4) => PeerKey::V4(v4.into()),
            IpAddr::V6(v6) => PeerKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per peer: `per_minute` events a minute, in bursts of up to
/// `per_minute`. At most `max_peers` peers are tracked; past that, idle ones
/// are forgotten and, if none is idle, newcomers share one bucket.
pub struct PeerBudget {
    per_minute: u32,
    max_peers: usize,
    peers: Mutex<HashMap<PeerKey, Bucket>>,
}

impl PeerBudget {
    /// A budget of `per_minute` events per peer.
    pub fn new(per_minute: u32, max_peers: usize) -> PeerBudget {
        PeerBudget { per_minute, max_peers, peers: Mutex::new(HashMap::new()) }
    }

    /// Takes one event from `ip`'s budget; false if it has none left.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, Instant::now())
    }

    fn allow_at(&self, ip: IpAddr, now: Instant) -> bool {
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        let mut peers = self.peers.lock().expect("budget lock");
        let mut key = PeerKey::of(ip);
        if !peers.contains_key(&key) && peers.len() >= self.max_peers {
            // A bucket that has refilled holds nothing worth keeping.
            peers.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < capacity);
            if peers.len() >= self.max_peers {
                key = PeerKey::Overflow;
            }
        }
        let bucket = peers.entry(key).or_insert(Bucket { tokens: capacity, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(capacity);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    /// How many peers are tracked (tests).
    pub fn tracked(&self) -> usize {
        self.peers.lock().expect("budget lock").len()
    }
}

/// Counts events that each deserve a log line, and lets one line through per
/// interval with the count since the last one.
pub struct Summary {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Summary {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Summary {
        Summary { every, state: Mutex::new((None, 0)) }
    }

    /// Counts one event; `Some(n)` when a line is due, `n` events since the
    /// last line (this one included).
    pub fn event(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("summary lock");
        state.1 += 1;
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => None,
            _ => {
                let n = state.1;
                *state = (Some(now), 0);
                Some(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(canonical(mapped).is_loopback());
        assert_eq!(canonical(mapped), "127.0.0.1".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        assert_eq!(PeerKey::of(mapped), PeerKey::of("127.0.0.1".parse().unwrap()));
        assert_eq!(PeerKey::of("2001:db8::1".parse().unwrap()), PeerKey::of("2001:db8::ffff:2".parse().unwrap()));
    }

    #[test]
    fn budget_refills_and_stays_bounded() {
        let budget = PeerBudget::new(60, 3);
        let start = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..60 {
            assert!(budget.allow_at(a, start));
        }
        assert!(!budget.allow_at(a, start), "the 61st in a minute is refused");
        assert!(budget.allow_at(a, start + Duration::from_secs(1)), "one a second comes back");
        assert!(budget.allow_at("192.0.2.2".parse().unwrap(), start), "other peers have their own");
        // Past max_peers, newcomers share one bucket and the table stops growing.
        for i in 0..1000u32 {
            budget.allow_at(IpAddr::V4((0x0a00_0000 + i).into()), start);
        }
        assert!(budget.tracked() <= 4, "{} peers tracked", budget.tracked());
        assert!(!budget.allow_at("10.9.9.9".parse().unwrap(), start), "the shared bucket is spent");
        // Once the first peers' buckets have refilled they are forgotten.
        assert!(budget.allow_at("10.9.9.9".parse().unwrap(), start + Duration::from_secs(120)));
    }

    #[test]
    fn summary_lets_one_line_through_per_interval() {
        let summary = Summary::new(Duration::from_secs(3600));
        assert_eq!(summary.event(), Some(1));
        assert_eq!(summary.event(), None);
        assert_eq!(summary.event(), None);
        let later = Summary { every: Duration::ZERO, state: Mutex::new((Some(Instant::now()), 4)) };
        assert_eq!(later.event(), Some(5));
    }
}
