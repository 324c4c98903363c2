//! The trees: one handle on each sled tree, opened once, and the one
//! transaction that spans them all.
//!
//! The table of what each tree holds is in [`super`]'s module doc (and in
//! [`super::platform`], [`super::refund`] and [`super::bill`] for theirs);
//! opening them and bringing their indexes up to date is in `open.rs`.

use sled::transaction::Transactional;
use sled::Tree;

use super::tx::{Tx, TxResult};
use super::{Order, StoreError};

/// The trees and the database they live in. Readers use them directly;
/// only the writer thread changes them.
pub(crate) struct Trees {
    pub(super) db: sled::Db,
    pub(super) orders: Tree,
    pub(super) orders_by_time: Tree,
    pub(super) orders_by_status: Tree,
    pub(super) orders_by_tx: Tree,
    pub(super) orders_by_openid: Tree,
    pub(super) orders_due: Tree,
    pub(super) stats: Tree,
    pub(super) notifies: Tree,
    pub(super) notifies_by_order: Tree,
    pub(super) platform_orders: Tree,
    pub(super) platform_changes: Tree,
    pub(super) nonces: Tree,
    pub(super) outbox: Tree,
    pub(super) outbox_pending: Tree,
    pub(super) outbox_by_order: Tree,
    pub(super) wechat_certificates: Tree,
    pub(super) refunds: Tree,
    pub(super) refunds_by_order: Tree,
    pub(super) refunds_processing: Tree,
    pub(super) bills: Tree,
    pub(super) bill_files: Tree,
    /// sled's data file, opened again so the writer can `fdatasync` it.
    pub(super) data_file: std::fs::File,
    /// Added to sled's id generator so that ids never go back below
    /// [`NEXT_ID`] (see [`Trees::next_id`]).
    pub(super) id_offset: u64,
}

/// The key in `stats` that holds a floor above every id handed out: a
/// batch whose ids reach it raises it to the next multiple of
/// [`NEXT_ID_STEP`], so one batch in thousands writes it. Ids key the
/// notify log, the outbox and platform changes, and order sequence numbers:
/// sled keeps its id generator outside every tree, so a backup restored, or
/// a store copied into a new format, starts it again from 0, and new ids
/// would overwrite old records (and a platform's change cursor would skip
/// new changes). Ids are therefore sled's plus an offset that keeps them
/// above this floor.
pub(super) const NEXT_ID: &[u8] = b"i";

/// How far [`NEXT_ID`] is raised at a time. Each change written costs sled
/// a compressed log entry (see static/docs/engineering.md, "What the store
/// costs"); ids are only ordered and unique, so skipping up to this many
/// after a restore loses nothing.
pub(super) const NEXT_ID_STEP: u64 = 1 << 16;

/// The floor to record after a batch whose highest id is `highest`, if the
/// recorded one, `recorded`, does not already cover it.
pub(super) fn raised_floor(recorded: u64, highest: u64) -> Option<u64> {
    let next = highest.checked_add(1)?;
    (next > recorded).then(|| next.checked_next_multiple_of(NEXT_ID_STEP).unwrap_or(u64::MAX))
}

/// The trees whose keys end with an id (8 bytes, big-endian): the notify log,
/// the outbox, platform changes, and the time index (created ‖ seq).
pub(super) const TREES_KEYED_BY_ID: [&str; 4] = ["notifies", "outbox", "platform_changes", "orders_by_time"];

/// The id after every id the keys of `db` use: the floor for a copy of it.
pub(super) fn ids_in_use(db: &sled::Db) -> Result<u64, sled::Error> {
    let mut floor = 0;
    for name in TREES_KEYED_BY_ID {
        for entry in db.open_tree(name)?.iter().keys() {
            let key = entry?;
            if let Some(id) = key.len().checked_sub(8).map(|at| &key[at..]) {
                floor = floor.max(u64::from_be_bytes(id.try_into().expect("8 bytes")).saturating_add(1));
            }
        }
    }
    let stats = db.open_tree("stats")?;
    Ok(floor.max(super::tx::read_u64(stats.get(NEXT_ID)?.as_deref(), 0)))
}

impl Trees {
    /// The order with this number (the readers' one way to an order).
    pub(super) fn order(&self, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
        match self.orders.get(out_trade_no.as_bytes())? {
            Some(bytes) => Ok(Some(Order::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A new id, above every id handed out before (see [`NEXT_ID`]); the
    /// batch that uses it records it in the same transaction.
    pub(super) fn next_id(&self) -> Result<u64, sled::Error> {
        Ok(self.db.generate_id()? + self.id_offset)
    }

    /// Runs `f` as one transaction over every tree. Only the writer thread
    /// (and [`super::Store::open`], before it starts) calls this, so transactions
    /// never conflict; sled may still run `f` again, so it must be pure.
    pub(super) fn transact<R>(&self, f: impl Fn(&Tx) -> TxResult<R>) -> Result<R, StoreError> {
        let trees: [&Tree; 21] = [
            &self.orders,
            &self.orders_by_time,
            &self.orders_by_status,
            &self.orders_by_tx,
            &self.orders_by_openid,
            &self.stats,
            &self.notifies,
            &self.notifies_by_order,
            &self.platform_orders,
            &self.platform_changes,
            &self.nonces,
            &self.outbox,
            &self.outbox_pending,
            &self.outbox_by_order,
            &self.wechat_certificates,
            &self.refunds,
            &self.refunds_by_order,
            &self.refunds_processing,
            &self.bills,
            &self.bill_files,
            &self.orders_due,
        ];
        let result = trees[..].transaction(|t| {
            f(&Tx {
                orders: &t[0],
                by_time: &t[1],
                by_status: &t[2],
                by_tx: &t[3],
                by_openid: &t[4],
                stats: &t[5],
                notifies: &t[6],
                notifies_by_order: &t[7],
                platform_orders: &t[8],
                platform_changes: &t[9],
                nonces: &t[10],
                outbox: &t[11],
                outbox_pending: &t[12],
                outbox_by_order: &t[13],
                wechat_certificates: &t[14],
                refunds: &t[15],
                refunds_by_order: &t[16],
                refunds_processing: &t[17],
                bills: &t[18],
                bill_files: &t[19],
                due: &t[20],
            })
        })?;
        Ok(result)
    }

    /// Makes every write so far durable: sled writes out its buffers, then
    /// the data file is `fdatasync`ed (sled alone only `sync_file_range`s).
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data().map_err(sled::Error::Io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_floor_is_raised_in_steps_and_only_when_reached() {
        assert_eq!(raised_floor(0, 0), Some(NEXT_ID_STEP));
        assert_eq!(raised_floor(NEXT_ID_STEP, 5), None, "covered: nothing to write");
        assert_eq!(raised_floor(NEXT_ID_STEP, NEXT_ID_STEP - 1), None);
        assert_eq!(raised_floor(NEXT_ID_STEP, NEXT_ID_STEP), Some(2 * NEXT_ID_STEP));
        // A floor recorded by an earlier release (exactly the next id) is raised the same way.
        assert_eq!(raised_floor(1_000_001, 1_000_001), Some(1_000_002u64.next_multiple_of(NEXT_ID_STEP)));
        assert_eq!(raised_floor(0, u64::MAX), None, "no id above the last");
        assert_eq!(raised_floor(0, u64::MAX - 1), Some(u64::MAX));
    }
}
