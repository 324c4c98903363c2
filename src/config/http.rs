//! `[http]`: the plain-HTTP listener and the connection caps and deadlines
//! every listener shares.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, parse_addr, ConfigError};
use crate::server::ConnectionLimits;

/// `[http]`
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address of the plain-HTTP listener; `None` when set to `"off"`
    /// (possible with TLS on: ACME then uses TLS-ALPN-01 only).
    pub listen: Option<SocketAddr>,
    /// Connection caps, for each listener.
    pub limits: ConnectionLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub listen: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub reserved_connections: Option<usize>,
    pub reserved_connections_per_ip: Option<usize>,
    pub first_request_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub write_timeout_secs: Option<u64>,
}

impl RawHttp {
    /// The section; `tls_enabled` because the plain listener may be `"off"`
    /// only when HTTPS serves instead.
    pub fn validate(self, tls_enabled: bool) -> Result<HttpConfig, ConfigError> {
        let limits = self.limits()?;
        let listen = match self.listen.as_deref().unwrap_or("127.0.0.1:8080") {
            "off" if tls_enabled => None,
            "off" => return Err(invalid("http.listen", "cannot be \"off\" while [tls] mode is \"off\"")),
            addr => Some(parse_addr("http.listen", addr)?),
        };
        Ok(HttpConfig { listen, limits })
    }

    fn limits(&self) -> Result<ConnectionLimits, ConfigError> {
        let defaults = ConnectionLimits::default();
        let total = match self.max_connections.unwrap_or(defaults.total) {
            n @ 1..=1_000_000 => n,
            _ => return Err(invalid("http.max_connections", "must be from 1 to 1000000")),
        };
        let per_ip = match self.max_connections_per_ip.unwrap_or(defaults.per_ip.min(total)) {
            n if (1..=total).contains(&n) => n,
            _ => return Err(invalid("http.max_connections_per_ip", "must be from 1 to http.max_connections")),
        };
        // A quarter of the places by default, whatever max_connections is.
        let reserved = match self.reserved_connections.unwrap_or(total / 4) {
            n if n <= total => n,
            _ => return Err(invalid("http.reserved_connections", "must be from 0 to http.max_connections")),
        };
        let reserved_per_ip = match self.reserved_connections_per_ip.unwrap_or(defaults.reserved_per_ip.min(per_ip)) {
            n if (1..=per_ip).contains(&n) => n,
            _ => {
                return Err(invalid(
                    "http.reserved_connections_per_ip",
                    "must be from 1 to http.max_connections_per_ip",
                ))
            }
        };
        let secs = |key: &str, value: Option<u64>, default: Duration| match value {
            None => Ok(default),
            Some(n @ 1..=3600) => Ok(Duration::from_secs(n)),
            Some(_) => Err(invalid(key, "must be from 1 to 3600 (seconds)")),
        };
        Ok(ConnectionLimits {
            total,
            per_ip,
            reserved,
            reserved_per_ip,
            first_request: secs(
                "http.first_request_timeout_secs",
                self.first_request_timeout_secs,
                defaults.first_request,
            )?,
            idle: secs("http.idle_timeout_secs", self.idle_timeout_secs, defaults.idle)?,
            body: secs("http.body_timeout_secs", self.body_timeout_secs, defaults.body)?,
            write: secs("http.write_timeout_secs", self.write_timeout_secs, defaults.write)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{error, load, LIVE};
    use crate::server::ConnectionLimits;

    #[test]
    fn connection_limits_have_keys_overrides_and_a_warning() {
        let c = load(LIVE, &[]).unwrap();
        assert_eq!(c.http.limits, ConnectionLimits::default());
        assert_eq!(c.http.limits.write, Duration::from_secs(30));
        assert!(!c.warnings(None).iter().any(|w| w.contains("max_connections_per_ip")), "defaults leave room");
        let c = load(&LIVE.replace("[http]", "[http]\nwrite_timeout_secs = 7"), &[]).unwrap();
        assert_eq!(c.http.limits.write, Duration::from_secs(7));
        let c = load(LIVE, &[("PAYBRIDGE_HTTP_WRITE_TIMEOUT_SECS", "9")]).unwrap();
        assert_eq!(c.http.limits.write, Duration::from_secs(9));
        assert!(c.describe().contains("write_timeout_secs = 9"));
        let e = error(&LIVE.replace("[http]", "[http]\nwrite_timeout_secs = 0"), &[]);
        assert!(e.contains("http.write_timeout_secs") && e.contains("1 to 3600"), "{e}");
        let e = error(LIVE, &[("PAYBRIDGE_HTTP_WRITE_TIMEOUT_SECS", "soon")]);
        assert!(e.contains("PAYBRIDGE_HTTP_WRITE_TIMEOUT_SECS") && e.contains("seconds"), "{e}");
        assert!(c.describe().contains("reserved_connections = 512\nreserved_connections_per_ip = 4\n"));
        let c = load(
            LIVE,
            &[("PAYBRIDGE_HTTP_MAX_CONNECTIONS", "400"), ("PAYBRIDGE_HTTP_RESERVED_CONNECTIONS_PER_IP", "2")],
        )
        .unwrap();
        assert_eq!((c.http.limits.reserved, c.http.limits.reserved_per_ip), (100, 2), "a quarter by default");
        let e = error(&LIVE.replace("[http]", "[http]\nmax_connections = 10\nreserved_connections = 11"), &[]);
        assert!(e.contains("http.reserved_connections") && e.contains("0 to http.max_connections"), "{e}");
        let e =
            error(&LIVE.replace("[http]", "[http]\nmax_connections_per_ip = 3\nreserved_connections_per_ip = 4"), &[]);
        assert!(e.contains("http.reserved_connections_per_ip"), "{e}");
        // A reserve 64 addresses can fill protects nobody.
        let c = load(LIVE, &[("PAYBRIDGE_HTTP_RESERVED_CONNECTIONS", "0")]).unwrap();
        let warnings = c.warnings(None);
        assert!(warnings.iter().any(|w| w.contains("http.reserved_connections = 0")), "{warnings:?}");
    }
}
