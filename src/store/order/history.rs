//! An order's history, bounded: a stranger can repeat a failing step for
//! as long as they like, so a repeat becomes a count on the entry before
//! it, each detail is at most [`MAX_DETAIL_BYTES`], and past
//! [`MAX_HISTORY`] entries the oldest are folded into one "N earlier
//! entries" line. The creation, the payment and the refunds are never
//! folded (the refunds are bounded by their own cap).

use super::{Order, OrderEvent};

/// The most history entries of the kinds a stranger or the lifecycle can
/// repeat (failed prepays, queries, closes, conflicts); older ones are folded.
pub const MAX_HISTORY: usize = 40;

/// The longest history detail (and `last_error`) kept, in bytes.
pub const MAX_DETAIL_BYTES: usize = 256;

/// The kind of the line that stands for folded entries.
pub const EARLIER: &str = "EARLIER";

/// History kinds never folded or merged: each happens a bounded number of
/// times and matters for money (refunds are capped per order by the refund code).
fn kept_whole(kind: &str) -> bool {
    matches!(kind, "CREATED" | "PAID" | "CLOSED" | EARLIER) || kind.starts_with("REFUND")
}

/// `text` cut to at most `max` bytes on a character boundary, marked with `…`.
pub fn bounded(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A detail and how many times it happened (`"3 times: timeout"`).
fn split_count(detail: &str) -> (u64, &str) {
    match detail.split_once(" times: ").and_then(|(n, rest)| Some((n.parse::<u64>().ok()?, rest))) {
        Some((n, rest)) => (n, rest),
        None => (1, detail),
    }
}

impl Order {
    /// Appends a step: a repeat of the last one (same kind and detail)
    /// becomes a count on it; then the history is folded to its bounds.
    pub(super) fn event(&mut self, now: i64, kind: &str, detail: String) {
        let detail = bounded(detail, MAX_DETAIL_BYTES);
        let same = |last: &OrderEvent| {
            // A merged detail may be cut shorter by its count's prefix.
            let rest = split_count(&last.detail).1;
            last.kind == kind && (rest == detail || rest.strip_suffix('…').is_some_and(|r| detail.starts_with(r)))
        };
        match self.history.last() {
            Some(last) if !kept_whole(kind) && same(last) => self.merge_last(now, detail),
            _ => self.push(now, kind, detail),
        }
    }

    fn push(&mut self, now: i64, kind: &str, detail: String) {
        self.updated_at = now;
        self.history.push(OrderEvent { at: now, kind: kind.into(), detail: bounded(detail, MAX_DETAIL_BYTES) });
        self.fold();
    }

    /// The last entry happened once more, now, with `detail`.
    fn merge_last(&mut self, now: i64, detail: String) {
        let last = self.history.last_mut().expect("a last entry");
        let times = split_count(&last.detail).0.saturating_add(1);
        last.at = now;
        last.detail = bounded(format!("{times} times: {detail}"), MAX_DETAIL_BYTES);
        self.updated_at = now;
    }

    /// Folds the oldest foldable entries into one [`EARLIER`] line (right
    /// after the creation) while there are more than [`MAX_HISTORY`].
    fn fold(&mut self) {
        let foldable = self.history.iter().filter(|e| !kept_whole(&e.kind)).count();
        if foldable <= MAX_HISTORY {
            return;
        }
        let mut excess = foldable - MAX_HISTORY;
        let mut folded = 0u64;
        let mut last_folded_at = 0;
        self.history.retain(|e| {
            if excess == 0 || kept_whole(&e.kind) {
                return true;
            }
            excess -= 1;
            folded += split_count(&e.detail).0;
            last_folded_at = e.at;
            false
        });
        let earlier = self.history.iter().position(|e| e.kind == EARLIER);
        let before = earlier.map_or(0, |i| {
            let n = self.history[i].detail.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0u64);
            self.history.remove(i);
            n
        });
        let at = self.history.iter().position(|e| e.kind != "CREATED").unwrap_or(self.history.len());
        let total = before.saturating_add(folded);
        self.history.insert(
            at,
            OrderEvent { at: last_folded_at, kind: EARLIER.into(), detail: format!("{total} earlier entries") },
        );
    }

    /// Adds a step to the history (a query's answer, a failed close).
    pub fn note(&mut self, now: i64, kind: &str, detail: String) {
        self.event(now, kind, detail);
    }

    /// Like [`Order::note`], but any repeat of the last step's kind replaces
    /// it (with a count and the newest detail), so a step retried every
    /// minute through a long outage keeps the history one entry long.
    pub fn note_latest(&mut self, now: i64, kind: &str, detail: String) {
        match self.history.last() {
            Some(last) if last.kind == kind && !kept_whole(kind) => self.merge_last(now, detail),
            _ => self.push(now, kind, detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::order::tests::{order, payment};
    use crate::store::order::MAX_ORDER_BYTES;

    /// However many steps a stranger repeats, the history stays bounded:
    /// repeats are counted, the oldest are folded, the creation and the
    /// money entries stay.
    #[test]
    fn history_is_bounded() {
        let mut o = order();
        for i in 0..5_000 {
            o.record_prepay_error("WeChat error PARAM_ERROR: appid和openid不匹配".into(), 2000 + i);
        }
        assert_eq!(o.history.len(), 2, "{:?}", o.history);
        assert_eq!(o.history[1].detail, "5000 times: WeChat error PARAM_ERROR: appid和openid不匹配");
        for i in 0..1_000 {
            o.note(10_000 + i, if i % 2 == 0 { "QUERIED" } else { "PAYMENT_CONFLICT" }, format!("answer {i}"));
        }
        o.apply_payment(&payment("42", 100), 20_000);
        for i in 0..100 {
            o.note(30_000 + i, "QUERIED", "x".repeat(10_000));
        }
        assert_eq!(o.history[0].kind, "CREATED");
        assert_eq!(o.history[1].kind, EARLIER);
        // 1,002 foldable entries (5,000 failures counted in one), 40 kept.
        assert_eq!(o.history[1].detail, format!("{} earlier entries", 5_000 + 1_002 - MAX_HISTORY - 1));
        assert!(o.history.iter().any(|e| e.kind == "PAID"), "the payment is never folded");
        assert_eq!(o.history.iter().filter(|e| !kept_whole(&e.kind)).count(), MAX_HISTORY);
        assert!(o.history.iter().all(|e| e.detail.len() <= MAX_DETAIL_BYTES));
        assert!(o.encode().len() < MAX_ORDER_BYTES / 2, "{} bytes", o.encode().len());
    }
}
