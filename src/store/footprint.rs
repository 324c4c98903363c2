//! What each tree holds, in entries and bytes: the live data, beside which
//! sled's files on disk are measured (the store-cost bench, diagnostics),
//! and a digest of it (two stores compared, as after a migration).

use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// One tree's live contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFootprint {
    /// The tree's name.
    pub name: String,
    /// How many entries it holds.
    pub entries: u64,
    /// The bytes of their keys.
    pub key_bytes: u64,
    /// The bytes of their values.
    pub value_bytes: u64,
    /// SHA-256 over every entry in key order (each key and value
    /// length-prefixed): two trees with the same digest hold the same data.
    pub digest: [u8; 32],
}

impl Store {
    /// Every tree's entries, live bytes and digest, in name order. Reads every entry:
    /// for diagnostics and benchmarks, not for a request path.
    pub fn footprint(&self) -> Result<Vec<TreeFootprint>, StoreError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        let mut names = trees.db.tree_names();
        names.sort();
        for name in names {
            let tree = trees.db.open_tree(&name)?;
            let mut print = TreeFootprint {
                name: String::from_utf8_lossy(&name).into_owned(),
                entries: 0,
                key_bytes: 0,
                value_bytes: 0,
                digest: [0; 32],
            };
            let mut hash = Sha256::new();
            for entry in tree.iter() {
                let (key, value) = entry?;
                print.entries += 1;
                print.key_bytes += key.len() as u64;
                print.value_bytes += value.len() as u64;
                for part in [&key, &value] {
                    hash.update((part.len() as u64).to_be_bytes());
                    hash.update(part);
                }
            }
            print.digest = hash.finalize().into();
            out.push(print);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::{open, order};

    #[tokio::test]
    async fn counts_what_each_tree_holds() {
        let (_dir, store) = open();
        store.insert_order(order("FOOT0001", 1)).await.unwrap().unwrap();
        let prints = store.footprint().unwrap();
        let orders = prints.iter().find(|p| p.name == "orders").unwrap();
        assert_eq!((orders.entries, orders.key_bytes), (1, 8));
        assert_eq!(orders.value_bytes, store.order("FOOT0001").unwrap().unwrap().encode().len() as u64);
        assert!(prints.iter().any(|p| p.name == "orders_by_time" && p.entries == 1));
    }
}
