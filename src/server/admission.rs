//! Connection admission: a place for each accepted connection, within the
//! total, per-address and reserved caps of [`ConnectionLimits`], given back
//! when the connection ends.

use std::collections::HashMap;
use std::sync::Arc;

use super::ConnectionLimits;
use crate::limit::PeerKey;
use crate::metrics::Metrics;

/// Open connections, in total and per peer.
pub(super) struct Admission {
    limits: ConnectionLimits,
    open: std::sync::Mutex<(usize, HashMap<PeerKey, usize>)>,
    /// Where the open-connections gauge is kept (`None` for the simulator).
    metrics: Option<Arc<Metrics>>,
}

/// One admitted connection; leaving gives its place back.
pub(super) struct Permit {
    admission: Arc<Admission>,
    key: PeerKey,
}

impl Admission {
    pub(super) fn new(limits: ConnectionLimits, metrics: Option<Arc<Metrics>>) -> Admission {
        Admission { limits, open: std::sync::Mutex::new((0, HashMap::new())), metrics }
    }

    /// A place for a connection from `ip`, or the `paybridge_refused_total`
    /// reason it gets none.
    pub(super) fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Result<Permit, &'static str> {
        let key = PeerKey::of(ip);
        let mut open = self.open.lock().expect("admission lock");
        let (total, peers) = &mut *open;
        let mine = peers.get(&key).copied().unwrap_or(0);
        let limits = &self.limits;
        if *total >= limits.total {
            return Err("connection_limit");
        }
        if mine >= limits.per_ip {
            return Err("connection_limit_per_ip");
        }
        // Every open place taken outside the reserve was taken while fewer
        // than `total - reserved` were open, and an address holds at most
        // `reserved_per_ip` places taken inside it: what N addresses can
        // hold is bounded whatever order they connect in.
        if *total >= limits.total.saturating_sub(limits.reserved) && mine >= limits.reserved_per_ip {
            return Err("connection_limit_reserved");
        }
        *total += 1;
        peers.insert(key, mine + 1);
        if let Some(m) = &self.metrics {
            m.connections(1);
        }
        Ok(Permit { admission: self.clone(), key })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock().expect("admission lock");
        let (total, peers) = &mut *open;
        *total -= 1;
        if let Some(m) = &self.admission.metrics {
            m.connections(-1);
        }
        if let Some(n) = peers.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::STALLING_ADDRESSES;
    use super::*;
    use std::net::IpAddr;

    /// Takes places for `addresses` in turn until none gets another: one
    /// address at a time to its cap, or one place per address per round.
    fn fill(admission: &Arc<Admission>, addresses: &[IpAddr], one_at_a_time: bool) -> Vec<Permit> {
        let mut held = Vec::new();
        loop {
            let before = held.len();
            for &ip in addresses {
                while let Ok(permit) = admission.admit(ip) {
                    held.push(permit);
                    if !one_at_a_time {
                        break;
                    }
                }
            }
            if held.len() == before {
                return held;
            }
        }
    }

    #[test]
    fn sixty_four_addresses_leave_reserved_places_in_any_order() {
        let limits = ConnectionLimits::default();
        let bound = limits.total - limits.reserved + STALLING_ADDRESSES * limits.reserved_per_ip;
        assert!(bound <= limits.total - limits.reserved / 2, "the defaults leave half the reserve");
        let attackers: Vec<IpAddr> = (0..STALLING_ADDRESSES).map(|i| IpAddr::from([10, 0, 0, i as u8])).collect();
        for one_at_a_time in [true, false] {
            let admission = Arc::new(Admission::new(limits, None));
            let held = fill(&admission, &attackers, one_at_a_time);
            assert!(held.len() >= limits.total - limits.reserved, "the open places are all taken: {}", held.len());
            assert!(held.len() <= bound, "{} held (one at a time: {one_at_a_time})", held.len());
            assert_eq!(admission.admit(attackers[STALLING_ADDRESSES - 1]).err(), Some("connection_limit_reserved"));
            // Newcomers get reserved places, a few each, until none is left.
            let newcomer = IpAddr::from([192, 0, 2, 1]);
            let mine: Vec<_> = (0..limits.reserved_per_ip).map(|_| admission.admit(newcomer).unwrap()).collect();
            assert_eq!(admission.admit(newcomer).err(), Some("connection_limit_reserved"));
            let others: Vec<IpAddr> = (0..=255u8).map(|i| IpAddr::from([192, 0, 3, i])).collect();
            let rest = fill(&admission, &others, true);
            assert_eq!(held.len() + mine.len() + rest.len(), limits.total);
            assert_eq!(admission.admit(IpAddr::from([192, 0, 4, 1])).err(), Some("connection_limit"));
            drop(rest);
            assert!(admission.admit(IpAddr::from([192, 0, 4, 1])).is_ok(), "places come back");
        }
    }

    #[test]
    fn the_per_address_cap_holds_below_the_reserve() {
        let limits =
            ConnectionLimits { total: 100, per_ip: 10, reserved: 20, reserved_per_ip: 2, ..Default::default() };
        let admission = Arc::new(Admission::new(limits, None));
        let ip = IpAddr::from([10, 0, 0, 1]);
        let held: Vec<_> = (0..10).map(|_| admission.admit(ip).unwrap()).collect();
        assert_eq!(admission.admit(ip).err(), Some("connection_limit_per_ip"));
        drop(held);
        assert!(admission.admit(ip).is_ok());
    }
}
