//! `[orders]` and `[[products]]`: the order policy (amounts, expiry, the
//! budgets per peer and towards WeChat) and the catalogue mini-program B
//! sells from by id.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::domain::Mode;

pub use crate::pay::settings::{Catalogue, OrdersConfig, Product};

/// The largest amount an order may have by default: ¥100,000.
pub const DEFAULT_MAX_TOTAL_FEE: u64 = 10_000_000;

/// The most products a catalogue holds (the admin page lists them all).
const MAX_PRODUCTS: usize = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrders {
    pub accept_client_amount: Option<bool>,
    pub max_total_fee: Option<u64>,
    pub expire_minutes: Option<u64>,
    pub queries_per_second: Option<u32>,
    pub unified_orders_per_peer_per_minute: Option<u32>,
    pub openid_per_peer_per_minute: Option<u32>,
    pub wechat_calls_per_second: Option<u32>,
    pub max_failed_prepays: Option<u32>,
}

impl RawOrders {
    /// `orders.max_total_fee` alone: the catalogue's prices are checked
    /// against it before the rest of the section.
    pub fn max_total_fee(&self) -> Result<u64, ConfigError> {
        match self.max_total_fee.unwrap_or(DEFAULT_MAX_TOTAL_FEE) {
            // WeChat's own ceiling for total_fee is far below this; a sum
            // of such orders still cannot overflow a u64.
            fen @ 1..=100_000_000_000 => Ok(fen),
            _ => Err(invalid("orders.max_total_fee", "must be from 1 to 100000000000 (fen)")),
        }
    }

    /// The section, with `max_total_fee` from [`RawOrders::max_total_fee`];
    /// client amounts are allowed by default only in the sandbox.
    pub fn validate(self, mode: Mode, max_total_fee: u64) -> Result<OrdersConfig, ConfigError> {
        Ok(OrdersConfig {
            accept_client_amount: self.accept_client_amount.unwrap_or(mode == Mode::Sandbox),
            max_total_fee,
            expire_after: match self.expire_minutes.unwrap_or(120) {
                // WeChat wants at least a few minutes; a prepay id lives 2 hours but
                // an order may stay payable longer (a new prepay is fetched).
                m @ 5..=10_080 => Duration::from_secs(m * 60),
                _ => return Err(invalid("orders.expire_minutes", "must be from 5 to 10080 (7 days)")),
            },
            queries_per_second: match self.queries_per_second.unwrap_or(5) {
                n @ 1..=100 => n,
                _ => return Err(invalid("orders.queries_per_second", "must be from 1 to 100")),
            },
            unified_orders_per_peer_per_minute: match self.unified_orders_per_peer_per_minute.unwrap_or(1200) {
                n @ 1..=1_000_000 => n,
                _ => return Err(invalid("orders.unified_orders_per_peer_per_minute", "must be from 1 to 1000000")),
            },
            openid_per_peer_per_minute: match self.openid_per_peer_per_minute.unwrap_or(1200) {
                n @ 1..=1_000_000 => n,
                _ => return Err(invalid("orders.openid_per_peer_per_minute", "must be from 1 to 1000000")),
            },
            wechat_calls_per_second: match self.wechat_calls_per_second.unwrap_or(400) {
                n @ 1..=10_000 => n,
                _ => return Err(invalid("orders.wechat_calls_per_second", "must be from 1 to 10000")),
            },
            max_failed_prepays: match self.max_failed_prepays.unwrap_or(10) {
                n @ 1..=1000 => n,
                _ => return Err(invalid("orders.max_failed_prepays", "must be from 1 to 1000")),
            },
        })
    }
}

/// One `[[products]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProduct {
    pub id: String,
    pub name: String,
    pub price: u64,
}

/// The `[[products]]` entries, each priced within `max_total_fee`.
pub(super) fn catalogue(raw: Vec<RawProduct>, max_total_fee: u64) -> Result<Catalogue, ConfigError> {
    if raw.len() > MAX_PRODUCTS {
        return Err(invalid("products", format!("at most {MAX_PRODUCTS} products")));
    }
    let mut products: Vec<Product> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("products[{i}].{field}");
        let id_ok =
            (1..=32).contains(&p.id.len()) && p.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(invalid(&key("id"), format!("{:?} must be 1 to 32 of A-Z a-z 0-9 - _", p.id)));
        }
        if products.iter().any(|q| q.id == p.id) {
            return Err(invalid(&key("id"), format!("{:?} is used twice", p.id)));
        }
        if p.name.trim().is_empty() || p.name.len() > 127 {
            return Err(invalid(&key("name"), "must be 1 to 127 bytes (WeChat's limit for the goods description)"));
        }
        if !(1..=max_total_fee).contains(&p.price) {
            return Err(invalid(&key("price"), format!("must be 1 to {max_total_fee} fen (orders.max_total_fee)")));
        }
        products.push(Product { id: p.id, name: p.name, price: p.price });
    }
    Ok(Catalogue::new(products))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{error, load, LIVE};

    #[test]
    fn products_are_checked() {
        let with = |products: &str| format!("{LIVE}\n{products}");
        let c = load(&with("[[products]]\nid = \"vip-month\"\nname = \"会员月卡\"\nprice = 1990\n"), &[]).unwrap();
        assert_eq!(c.products.get("vip-month").unwrap().price, 1990);
        assert!(c.describe().contains("[[products]]\nid = \"vip-month\""));
        for (bad, key) in [
            ("id = \"a b\"\nname = \"x\"\nprice = 1", "products[0].id"),
            ("id = \"a\"\nname = \"\"\nprice = 1", "products[0].name"),
            ("id = \"a\"\nname = \"x\"\nprice = 0", "products[0].price"),
            ("id = \"a\"\nname = \"x\"\nprice = 10000001", "products[0].price"),
        ] {
            let e = error(&with(&format!("[[products]]\n{bad}\n")), &[]);
            assert!(e.contains(key), "{bad}: {e}");
        }
        let twice =
            "[[products]]\nid = \"a\"\nname = \"x\"\nprice = 1\n[[products]]\nid = \"a\"\nname = \"y\"\nprice = 2\n";
        assert!(error(&with(twice), &[]).contains("used twice"));
    }
}
