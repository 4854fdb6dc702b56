//! Parallel time-window backfill (ThreatConnect).
//!
//! One skip-free keyset cursor ([`super::sweep`]) pulls at most `batch_size / latency` items per
//! second, and against a real ThreatConnect the latency is seconds per page. When a stream is far
//! behind (its first sweep, or a sweep more than `interval` late), the range
//! `[watermark, now - SETTLE)` is cut into windows, each swept by its own keyset cursor bounded
//! above by `lastModified LT "<window end>"`, and the windows are fetched concurrently.
//!
//! - **Edges come from the data:** one `count=true` probe gives N, then the items at
//!   `resultStart = i·N/K` (sorted by `lastModified`) give the K-quantile timestamps. Edges are
//!   whole seconds, so a second (however dense) lies in exactly one window.
//! - **Work stealing:** when a window is done while others remain, the one with the most items
//!   left is split at the timestamp of its middle item (another one-item probe).
//! - **The tail:** the cursor past the last window starts at the backfill's upper edge. Once every
//!   window is done it continues as today's single sweep, and picks up whatever changed during
//!   the backfill (a changed indicator leaves its window for a second after the upper edge).
//! - **Durable:** the whole set (windows with their keyset cursors, the tail) is the stream's one
//!   cursor value, committed in one transaction after each page is acknowledged. A cursor
//!   written before windows existed reads as a tail without windows.
//! - **Adaptive:** [`Aimd`] halves the number of windows fetched at once on a 429, a 5xx, a
//!   transport error or a latency spike, and adds one back after a round of clean pages.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::sweep::{self, SweepCursor, truncate_to_second};

/// The stream's cursor: the single sweep, and while a backfill runs, its windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcCursor {
    /// The single skip-free sweep. While windows remain it waits at the backfill's upper edge
    /// (the tail), and continues from there once they are done.
    #[serde(flatten)]
    pub sweep: SweepCursor,
    /// The backfill in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Backfill>,
}

impl From<SweepCursor> for TcCursor {
    fn from(sweep: SweepCursor) -> Self {
        Self {
            sweep,
            backfill: None,
        }
    }
}

/// A backfill in progress: windows still to sweep, and how far along it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    /// The windows not yet done, in time order.
    pub windows: Vec<Window>,
    /// Items estimated in the whole backfill when it was planned.
    pub estimated: u64,
    /// Items delivered by the windows so far.
    pub done: u64,
    /// The id the next window (from a split) gets.
    pub next_id: u32,
}

/// One window: a keyset cursor bounded above by `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Stable id (for logs and diagnostics).
    pub id: u32,
    /// Where the window's sweep stands (`lastModified GEQ`).
    pub cursor: SweepCursor,
    /// Exclusive upper bound (`lastModified LT`), a whole second.
    pub end: DateTime<Utc>,
    /// Items estimated in the window when it was made.
    pub estimated: u64,
    /// Items it has delivered.
    pub delivered: u64,
}

impl Window {
    /// Items probably left (never below zero; estimates are estimates).
    pub(crate) fn remaining(&self) -> u64 {
        self.estimated.saturating_sub(self.delivered)
    }
}

impl Backfill {
    /// Windows `[edges[i], edges[i+1])` with the items estimated in each; the first window
    /// continues `first` (its `seen` and anchor), the others start fresh at their edge.
    /// `None` when fewer than two windows would result (nothing to parallelise).
    pub(crate) fn plan(
        first: &SweepCursor,
        edges: &[DateTime<Utc>],
        estimates: &[u64],
    ) -> Option<Self> {
        if edges.len() < 3 {
            return None;
        }
        let windows: Vec<Window> = edges
            .windows(2)
            .zip(0u32..)
            .map(|(pair, id)| Window {
                id,
                cursor: if id == 0 {
                    first.clone()
                } else {
                    SweepCursor::starting_at(pair[0])
                },
                end: pair[1],
                estimated: estimates.get(id as usize).copied().unwrap_or(0),
                delivered: 0,
            })
            .collect();
        let next_id = u32::try_from(windows.len()).unwrap_or(u32::MAX);
        Some(Self {
            estimated: windows.iter().map(|w| w.estimated).sum(),
            done: 0,
            next_id,
            windows,
        })
    }

    /// Completion in percent (of the estimate), 0–100.
    pub(crate) fn percent(&self) -> u64 {
        crate::telemetry::BackfillProgress {
            done: self.done,
            estimated: self.estimated,
        }
        .percent()
    }

    /// The window with the most items left, if it is worth splitting (more than `min_items`).
    pub(crate) fn largest(&self, min_items: u64) -> Option<&Window> {
        self.windows
            .iter()
            .filter(|w| w.remaining() > min_items)
            .max_by_key(|w| w.remaining())
    }

    /// Window `id` cannot be split where its estimate said: it counts as having nothing left
    /// to steal, so [`largest`](Self::largest) never picks it again.
    pub(crate) fn unsplittable(&mut self, id: u32) {
        if let Some(w) = self.windows.iter_mut().find(|w| w.id == id) {
            w.estimated = w.delivered;
        }
    }

    /// Splits window `id` at `at` (a whole second strictly inside it): the window keeps
    /// `[its cursor, at)`, a new window takes `[at, end)`. Returns whether it split.
    pub(crate) fn split(&mut self, id: u32, at: DateTime<Utc>) -> bool {
        let at = truncate_to_second(at);
        let Some(i) = self.windows.iter().position(|w| w.id == id) else {
            return false;
        };
        let w = &self.windows[i];
        if at <= w.cursor.watermark || at >= w.end {
            return false;
        }
        let half = w.remaining() / 2;
        let new = Window {
            id: self.next_id,
            cursor: SweepCursor::starting_at(at),
            end: w.end,
            estimated: half,
            delivered: 0,
        };
        let old = &mut self.windows[i];
        old.end = at;
        old.estimated = old.delivered + (old.remaining() - half);
        self.next_id = self.next_id.saturating_add(1);
        self.windows.insert(i + 1, new);
        true
    }
}

/// Window edges from K-quantile probes: `lower`, the timestamps found at `resultStart = i·N/K`
/// (whole seconds, strictly increasing; duplicates from a dense second collapse), and `upper`.
pub(crate) fn edges(
    lower: DateTime<Utc>,
    quantiles: &[DateTime<Utc>],
    upper: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut out = vec![truncate_to_second(lower)];
    let mut sorted: Vec<DateTime<Utc>> = quantiles.iter().map(|t| truncate_to_second(*t)).collect();
    sorted.sort_unstable();
    for t in sorted {
        if t > *out.last().unwrap_or(&lower) && t < upper {
            out.push(t);
        }
    }
    out.push(upper);
    out
}

/// The upper edge of a backfill planned at `server_now`: seconds younger than
/// [`sweep::SETTLE`] can still gain items, so they are left to the tail.
pub(crate) fn upper_edge(server_now: DateTime<Utc>) -> DateTime<Utc> {
    truncate_to_second(
        server_now
            .checked_sub_signed(sweep::SETTLE)
            .unwrap_or(server_now),
    )
}

/// Additive-increase / multiplicative-decrease of the number of windows fetched at once.
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
    limit: usize,
    max: usize,
    clean: usize,
    /// The fastest page latency seen: the baseline a spike is measured against.
    baseline: Option<Duration>,
}

/// A page slower than this many times the baseline counts as pushback.
const LATENCY_SPIKE: u32 = 4;

impl Aimd {
    /// Starts at `max` (the configured `backfill_concurrency`).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            limit: max,
            max,
            clean: 0,
            baseline: None,
        }
    }

    /// How many windows may be fetched at once now.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A page arrived after `latency`; `pushback` says the HTTP client met a 429 or 5xx on the
    /// way (it retried them itself).
    pub(crate) fn on_page(&mut self, latency: Duration, pushback: bool) {
        let baseline = *self.baseline.get_or_insert(latency);
        self.baseline = Some(baseline.min(latency));
        let spike = latency > baseline.saturating_mul(LATENCY_SPIKE)
            && latency > Duration::from_millis(200);
        if pushback || spike {
            self.back_off();
            return;
        }
        self.clean += 1;
        if self.clean >= self.limit {
            self.clean = 0;
            self.limit = (self.limit + 1).min(self.max);
        }
    }

    /// A fetch failed after the HTTP client's retries.
    pub(crate) fn on_error(&mut self) {
        self.back_off();
    }

    fn back_off(&mut self) {
        self.clean = 0;
        self.limit = (self.limit / 2).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn an_old_single_cursor_reads_as_a_tail_without_windows() {
        let old =
            r#"{"watermark":"2023-11-14T22:13:20Z","seen":[5,7],"anchor":{"position":1,"id":7}}"#;
        let cursor: TcCursor = serde_json::from_str(old).unwrap();
        assert!(cursor.backfill.is_none());
        assert_eq!(cursor.sweep.seen.len(), 2);
        assert_eq!(
            serde_json::to_string(&cursor).unwrap(),
            old,
            "written back unchanged"
        );
        let sweep: SweepCursor = serde_json::from_str(old).unwrap();
        assert_eq!(TcCursor::from(sweep), cursor);
    }

    #[test]
    fn edges_are_whole_increasing_seconds_and_a_dense_second_is_never_cut() {
        let half = chrono::TimeDelta::milliseconds(500);
        // Quantiles 2 and 3 fall in the same dense second: one edge.
        let e = edges(t(0) + half, &[t(30), t(10) + half, t(30), t(50)], t(60));
        assert_eq!(e, [t(0), t(10), t(30), t(50), t(60)]);
        // Quantiles outside (lower, upper) are dropped.
        assert_eq!(edges(t(0), &[t(0), t(70)], t(60)), [t(0), t(60)]);
    }

    #[test]
    fn a_plan_keeps_the_first_cursor_and_estimates() {
        let mut first = SweepCursor::starting_at(t(0));
        first.seen.insert(42);
        let plan = Backfill::plan(&first, &[t(0), t(10), t(20)], &[5, 7]).unwrap();
        assert_eq!(plan.windows.len(), 2);
        assert_eq!(plan.windows[0].cursor, first);
        assert_eq!(plan.windows[1].cursor, SweepCursor::starting_at(t(10)));
        assert_eq!((plan.windows[0].end, plan.windows[1].end), (t(10), t(20)));
        assert_eq!((plan.estimated, plan.next_id), (12, 2));
        assert!(Backfill::plan(&first, &[t(0), t(20)], &[12]).is_none());
    }

    #[test]
    fn splitting_the_largest_window_halves_what_is_left() {
        let first = SweepCursor::starting_at(t(0));
        let mut plan = Backfill::plan(&first, &[t(0), t(10), t(100)], &[10, 1000]).unwrap();
        plan.windows[1].delivered = 200;
        let id = plan.largest(100).unwrap().id;
        assert_eq!(id, 1);
        assert!(!plan.split(id, t(10)), "not strictly inside");
        assert!(!plan.split(id, t(100)), "not strictly inside");
        assert!(plan.split(id, t(55)));
        let w: Vec<(u32, DateTime<Utc>, DateTime<Utc>, u64)> = plan
            .windows
            .iter()
            .map(|w| (w.id, w.cursor.watermark, w.end, w.remaining()))
            .collect();
        assert_eq!(
            w,
            [
                (0, t(0), t(10), 10),
                (1, t(10), t(55), 400),
                (2, t(55), t(100), 400)
            ]
        );
        assert!(plan.largest(1000).is_none());
        plan.unsplittable(1);
        assert_eq!(plan.largest(100).map(|w| w.id), Some(2));
        plan.unsplittable(2);
        assert!(
            plan.largest(10).is_none(),
            "a window that cannot be split is not probed again"
        );
    }

    #[test]
    fn aimd_halves_on_pushback_and_grows_back_by_one_per_clean_round() {
        let ms = Duration::from_millis;
        let mut a = Aimd::new(8);
        a.on_page(ms(100), false);
        assert_eq!(a.limit(), 8);
        a.on_page(ms(100), true);
        assert_eq!(a.limit(), 4);
        a.on_error();
        assert_eq!(a.limit(), 2);
        a.on_page(ms(900), false);
        assert_eq!(
            a.limit(),
            1,
            "a page 9x slower than the baseline is pushback"
        );
        a.on_page(ms(100), false);
        assert_eq!(a.limit(), 2);
        for _ in 0..2 {
            a.on_page(ms(110), false);
        }
        assert_eq!(a.limit(), 3);
        for _ in 0..100 {
            a.on_page(ms(110), false);
        }
        assert_eq!(a.limit(), 8, "never above the configured concurrency");
        let mut one = Aimd::new(0);
        one.on_error();
        assert_eq!(one.limit(), 1);
    }
}
