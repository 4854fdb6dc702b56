//! Skip-free paging through ThreatConnect indicators while they change (DESIGN §4).
//!
//! Offset paging over `lastModified asc` skips items when indicators change during a sweep: a
//! modified indicator leaves its position and everything behind it shifts left past the offset.
//! So the sweep pages by **keyset** instead: every request filters `lastModified GEQ <watermark>`
//! with `resultStart` counting only items *inside the watermark's second*. ThreatConnect
//! timestamps have second granularity, so we page with GEQ (never "+1 s", which loses
//! indicators modified later in the same second) and drop duplicates by (id, lastModified).
//!
//! Within the watermark second, `resultStart` is only trusted behind an **anchor**: we re-read
//! the last item we delivered and check its id. If anything ahead of it left the second, the
//! anchor moved, the check fails, and we re-read the second from its start, dropping what we
//! have already delivered. A second that can still gain items (it is too close to the server's
//! clock) is always re-read from its start. That keeps the sweep skip-free even when more than a
//! whole page shares one second, at the cost of re-reading a crowded second under churn.
//!
//! An item stamped in the future (a bad record, a server bug) must not become the watermark:
//! `GEQ <future>` would hide every later change while each sweep reports "caught up". Items
//! later than the [`future_horizon`] are delivered, but their keys are not used for paging.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// How long after a second ends we still expect new indicators stamped with it (commit lag,
/// clock granularity). Seconds younger than this are re-read from their start.
pub(crate) const SETTLE: TimeDelta = TimeDelta::seconds(5);

/// How far past the platform's clock a `lastModified` may be and still move the watermark.
/// It is also how far ahead of ours we believe the platform's clock to be: ThreatConnect
/// refuses requests whose HMAC timestamp is more than 5 minutes off its own.
pub(crate) const FUTURE_MARGIN: TimeDelta = TimeDelta::minutes(5);

/// The latest `lastModified` that may move the watermark: the platform's clock (its `Date`
/// header, else ours, and never more than [`FUTURE_MARGIN`] ahead of ours) plus
/// [`FUTURE_MARGIN`].
pub(crate) fn future_horizon(
    server_date: Option<DateTime<Utc>>,
    local_now: DateTime<Utc>,
) -> DateTime<Utc> {
    let ahead = |t: DateTime<Utc>| {
        t.checked_add_signed(FUTURE_MARGIN)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    };
    let platform_now = server_date.unwrap_or(local_now).min(ahead(local_now));
    ahead(platform_now)
}

/// Where a ThreatConnect sweep stands. Persisted as JSON in the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepCursor {
    /// The TQL lower bound: `lastModified GEQ watermark` (second precision).
    pub watermark: DateTime<Utc>,
    /// Ids already delivered whose `lastModified` equals the watermark.
    #[serde(default)]
    pub seen: BTreeSet<i64>,
    /// The last delivered item inside the watermark second and its position there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
}

/// The last delivered item of the watermark second, used to detect shifts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// 0-based position among the items of the watermark second, in server order.
    pub position: u32,
    /// The indicator id found there.
    pub id: i64,
}

impl SweepCursor {
    /// A fresh sweep starting at `start` (truncated to the second).
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            watermark: truncate_to_second(start),
            seen: BTreeSet::new(),
            anchor: None,
        }
    }

    /// The `resultStart` to request, and the id expected first if an anchor is trusted.
    /// `server_now` is the platform's clock (from its `Date` header), when known.
    pub(crate) fn plan(&self, server_now: DateTime<Utc>) -> Plan {
        match self.anchor {
            // A watermark at the end of time (a damaged cursor) must not overflow.
            Some(a)
                if self
                    .watermark
                    .checked_add_signed(SETTLE)
                    .is_some_and(|settled| settled < server_now) =>
            {
                Plan {
                    result_start: a.position,
                    expect_first: Some(a.id),
                }
            }
            _ => Plan {
                result_start: 0,
                expect_first: None,
            },
        }
    }
}

/// What to request next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `resultStart`.
    pub result_start: u32,
    /// The id the first item must have; otherwise the second shifted.
    pub expect_first: Option<i64>,
}

/// The paging keys of one returned item. `None` when the item lacks a usable id or timestamp
/// (it is still delivered; the mapping turns it into an error document).
pub(crate) type ItemKey = Option<(i64, DateTime<Utc>)>;

/// The result of applying one response to a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The anchor moved: re-read the watermark second from its start. Nothing is delivered.
    Rewind,
    /// Deliver `deliver` (indexes into the page), then commit `cursor`.
    Advance {
        /// Indexes of the page's items to deliver, in order.
        deliver: Vec<usize>,
        /// The cursor after this page.
        cursor: SweepCursor,
        /// More pages follow right now.
        more: bool,
        /// Of the delivered items, those stamped after the horizon (not used for paging).
        future: usize,
    },
}

/// Applies one page (the keys of its items, in server order) requested with `plan` to `cursor`.
/// `server_has_more` is whether the response carried a `next` link. Items whose `lastModified`
/// is after `horizon` (see [`future_horizon`]) are delivered, but do not move the cursor.
pub(crate) fn step(
    cursor: &SweepCursor,
    plan: Plan,
    keys: &[ItemKey],
    server_has_more: bool,
    horizon: DateTime<Utc>,
) -> Step {
    let future = keys
        .iter()
        .flatten()
        .filter(|(_, lm)| *lm > horizon)
        .count();
    // A future item is treated like one without a usable key: delivered, never deduplicated,
    // never the watermark or the anchor. The API sorts by lastModified, so future items are
    // the page's tail and a page of nothing else makes no progress (which ends the sweep).
    let usable: Vec<ItemKey>;
    let keys = if future == 0 {
        keys
    } else {
        usable = keys
            .iter()
            .map(|k| k.filter(|(_, lm)| *lm <= horizon))
            .collect();
        &usable
    };
    if let Some(expected) = plan.expect_first {
        let first_id = keys.first().copied().flatten().map(|(id, _)| id);
        if first_id != Some(expected) {
            return Step::Rewind;
        }
    }
    let w = cursor.watermark;
    let deliver: Vec<usize> = keys
        .iter()
        .enumerate()
        .filter(|(_, key)| !matches!(key, Some((id, lm)) if *lm == w && cursor.seen.contains(id)))
        .map(|(i, _)| i)
        .collect();
    let max = keys.iter().flatten().map(|(_, lm)| *lm).max();
    let mut next = cursor.clone();
    match max {
        None => {}
        Some(m) if m > w => {
            next.watermark = m;
            next.seen = keys
                .iter()
                .flatten()
                .filter(|(_, lm)| *lm == m)
                .map(|(id, _)| *id)
                .collect();
            // Items at `m` are the tail of the page and the first items of that second.
            let first_at_m = keys
                .iter()
                .position(|k| matches!(k, Some((_, lm)) if *lm == m));
            next.anchor = match (keys.last().copied().flatten(), first_at_m) {
                (Some((id, lm)), Some(first)) if lm == m => Some(Anchor {
                    position: u32::try_from(keys.len() - 1 - first).unwrap_or(u32::MAX),
                    id,
                }),
                _ => None,
            };
        }
        Some(_) => {
            next.seen.extend(
                keys.iter()
                    .flatten()
                    .filter(|(_, lm)| *lm == w)
                    .map(|(id, _)| *id),
            );
            next.anchor = match keys.last().copied().flatten() {
                Some((id, lm)) if lm == w => Some(Anchor {
                    position: plan
                        .result_start
                        .saturating_add(u32::try_from(keys.len() - 1).unwrap_or(u32::MAX)),
                    id,
                }),
                _ => None,
            };
        }
    }
    // A full page of items we already had, in a second that may still grow, makes no progress:
    // call it caught up and look again next interval instead of spinning.
    let more = server_has_more && next != *cursor;
    Step::Advance {
        deliver,
        cursor: next,
        more,
        future,
    }
}

/// Drops the fraction: ThreatConnect compares and returns whole seconds.
pub(crate) fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    /// A tiny model of the server: items (id, second), sorted by (second, id), GEQ + offset.
    fn serve(
        items: &[(i64, i64)],
        plan: Plan,
        w: DateTime<Utc>,
        limit: usize,
    ) -> (Vec<ItemKey>, bool) {
        let mut all: Vec<(i64, i64)> = items.iter().copied().filter(|(_, s)| t(*s) >= w).collect();
        all.sort_by_key(|(id, s)| (*s, *id));
        let start = plan.result_start as usize;
        let page: Vec<ItemKey> = all
            .iter()
            .skip(start)
            .take(limit)
            .map(|(id, s)| Some((*id, t(*s))))
            .collect();
        (page, all.len() > start + limit)
    }

    /// Runs a sweep to completion, mutating the data after every page with `mutate`.
    fn sweep(
        items: &mut Vec<(i64, i64)>,
        limit: usize,
        mut mutate: impl FnMut(&mut Vec<(i64, i64)>, usize),
    ) -> Vec<(i64, i64)> {
        let mut cursor = SweepCursor::starting_at(t(0));
        let mut delivered = Vec::new();
        let far_future = t(1_000_000);
        for round in 0..10_000 {
            let plan = cursor.plan(far_future);
            let (keys, more) = serve(items, plan, cursor.watermark, limit);
            match step(&cursor, plan, &keys, more, far_future) {
                Step::Rewind => {
                    cursor.anchor = None;
                    continue;
                }
                Step::Advance {
                    deliver,
                    cursor: next,
                    more,
                    ..
                } => {
                    for i in deliver {
                        let (id, lm) = keys[i].unwrap();
                        delivered.push((id, lm.timestamp() - 1_700_000_000));
                    }
                    cursor = next;
                    mutate(items, round);
                    if !more {
                        return delivered;
                    }
                }
            }
        }
        panic!("sweep did not finish");
    }

    #[test]
    fn delivers_everything_once_without_changes() {
        let mut items: Vec<(i64, i64)> = (0..100).map(|i| (i, i / 3)).collect();
        let delivered = sweep(&mut items, 7, |_, _| {});
        let mut ids: Vec<i64> = delivered.iter().map(|(id, _)| *id).collect();
        ids.sort();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn crowded_second_larger_than_a_page() {
        // 50 items share one second, page size 7.
        let mut items: Vec<(i64, i64)> = (0..50)
            .map(|i| (i, 10))
            .chain((50..60).map(|i| (i, 11)))
            .collect();
        let delivered = sweep(&mut items, 7, |_, _| {});
        assert_eq!(delivered.len(), 60, "no duplicates, nothing missing");
    }

    /// Regression for the offset-paging skip: items ahead of the cursor leave the crowded
    /// second (they are modified) while we page through it.
    #[test]
    fn crowded_second_with_items_leaving_is_skip_free() {
        let mut items: Vec<(i64, i64)> = (0..50).map(|i| (i, 10)).collect();
        let delivered = sweep(&mut items, 7, |items, round| {
            // Move an already-delivered item (the lowest id still at second 10) to second 500.
            if round < 5
                && let Some(it) = items
                    .iter_mut()
                    .filter(|(_, s)| *s == 10)
                    .min_by_key(|(id, _)| *id)
            {
                it.1 = 500 + round as i64;
            }
        });
        let final_versions: BTreeSet<(i64, i64)> = items.iter().copied().collect();
        let got: BTreeSet<(i64, i64)> = delivered.iter().copied().collect();
        let missing: Vec<_> = final_versions.difference(&got).collect();
        assert!(missing.is_empty(), "skipped {missing:?}");
    }

    #[test]
    fn mutations_during_sweep_deliver_every_final_version() {
        let mut items: Vec<(i64, i64)> = (0..200).map(|i| (i, i / 2)).collect();
        let mut clock = 1_000;
        let delivered = sweep(&mut items, 10, |items, round| {
            // Modify three indicators after each of the first pages, stamping them "now". (A
            // change after the last page is, by definition, for the next sweep.)
            if round >= 12 {
                return;
            }
            for id in [3, 50, 77, 3 + round as i64 * 7] {
                if let Some(it) = items.iter_mut().find(|(i, _)| *i == id)
                    && it.1 < clock
                {
                    clock += 1;
                    it.1 = clock;
                }
            }
        });
        let got: BTreeSet<(i64, i64)> = delivered.iter().copied().collect();
        for it in &items {
            assert!(got.contains(it), "final version {it:?} not delivered");
        }
    }

    #[test]
    fn young_second_is_reread_from_start_and_ends_the_sweep() {
        let cursor = SweepCursor {
            watermark: t(100),
            seen: [1, 2].into_iter().collect(),
            anchor: Some(Anchor { position: 1, id: 2 }),
        };
        let plan = cursor.plan(t(102));
        assert_eq!(
            plan,
            Plan {
                result_start: 0,
                expect_first: None
            }
        );
        let keys = vec![Some((1, t(100))), Some((2, t(100)))];
        match step(&cursor, plan, &keys, true, t(1_000)) {
            Step::Advance { deliver, more, .. } => {
                assert!(deliver.is_empty());
                assert!(!more, "no progress must not spin");
            }
            Step::Rewind => panic!("unexpected rewind"),
        }
    }

    #[test]
    fn anchor_mismatch_rewinds() {
        let cursor = SweepCursor {
            watermark: t(100),
            seen: [1, 2].into_iter().collect(),
            anchor: Some(Anchor { position: 1, id: 2 }),
        };
        let plan = cursor.plan(t(200));
        assert_eq!(
            plan,
            Plan {
                result_start: 1,
                expect_first: Some(2)
            }
        );
        assert_eq!(
            step(&cursor, plan, &[Some((3, t(100)))], false, t(1_000)),
            Step::Rewind
        );
    }

    fn year_2999() -> DateTime<Utc> {
        "2999-01-01T00:00:00Z".parse().unwrap()
    }

    /// Regression: one indicator stamped 2999-01-01 became the watermark, and every later sweep
    /// asked for `lastModified GEQ 2999-01-01`, delivered nothing and reported "caught up".
    #[test]
    fn future_last_modified_does_not_move_the_watermark() {
        let horizon = t(1_000);
        let cursor = SweepCursor::starting_at(t(0));
        let keys = vec![Some((1, t(10))), Some((2, t(20))), Some((3, year_2999()))];
        let plan = cursor.plan(t(1_000));
        let Step::Advance {
            deliver,
            cursor: next,
            more,
            future,
        } = step(&cursor, plan, &keys, false, horizon)
        else {
            panic!("unexpected rewind");
        };
        assert_eq!(deliver, vec![0, 1, 2], "the future item is still delivered");
        assert_eq!(future, 1);
        assert_eq!(next.watermark, t(20), "but it is not the watermark");
        assert_eq!(next.seen, [2].into_iter().collect());
        assert_eq!(next.anchor, None, "nor the anchor");
        assert!(!more);

        // The next sweep still sees what changed after t(20).
        let plan = next.plan(t(1_000));
        let later = vec![Some((2, t(20))), Some((4, t(30))), Some((3, year_2999()))];
        let Step::Advance {
            deliver,
            cursor: after,
            ..
        } = step(&next, plan, &later, false, horizon)
        else {
            panic!("unexpected rewind");
        };
        assert_eq!(deliver, vec![1, 2]);
        assert_eq!(after.watermark, t(30));
    }

    #[test]
    fn a_full_page_of_future_items_ends_the_sweep_instead_of_spinning() {
        let cursor = SweepCursor::starting_at(t(50));
        let keys: Vec<ItemKey> = (0..10).map(|id| Some((id, year_2999()))).collect();
        let plan = cursor.plan(t(1_000));
        match step(&cursor, plan, &keys, true, t(1_000)) {
            Step::Advance {
                cursor: next,
                more,
                future,
                deliver,
            } => {
                assert_eq!((deliver.len(), future), (10, 10));
                assert_eq!(next, cursor, "no progress");
                assert!(!more, "a page of only future items must not spin");
            }
            Step::Rewind => panic!("unexpected rewind"),
        }
    }

    #[test]
    fn the_horizon_trusts_the_server_clock_only_within_the_margin() {
        let local = t(0);
        assert_eq!(future_horizon(None, local), local + FUTURE_MARGIN);
        assert_eq!(future_horizon(Some(t(-60)), local), t(-60) + FUTURE_MARGIN);
        assert_eq!(
            future_horizon(Some(year_2999()), local),
            local + FUTURE_MARGIN + FUTURE_MARGIN,
            "a Date header in the far future is not believed either"
        );
        assert_eq!(
            future_horizon(None, DateTime::<Utc>::MAX_UTC),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn a_watermark_at_the_end_of_time_plans_without_overflow() {
        let cursor = SweepCursor {
            watermark: DateTime::<Utc>::MAX_UTC,
            seen: BTreeSet::new(),
            anchor: Some(Anchor { position: 4, id: 1 }),
        };
        assert_eq!(cursor.plan(DateTime::<Utc>::MAX_UTC).result_start, 0);
    }

    #[test]
    fn cursor_round_trips_through_json_with_large_ids() {
        let cursor = SweepCursor {
            watermark: t(5),
            seen: [9_007_199_254_740_993].into_iter().collect(),
            anchor: Some(Anchor {
                position: 3,
                id: 9_007_199_254_740_993,
            }),
        };
        let text = serde_json::to_string(&cursor).unwrap();
        assert!(text.contains("9007199254740993"));
        assert_eq!(serde_json::from_str::<SweepCursor>(&text).unwrap(), cursor);
    }
}
