//! `--mutate-per-page`: which indicators a client has been served, and which of them change next.
//!
//! Both simulators change only indicators that have already appeared in a page, so that a client
//! paging through the data sees them again (or must come back for them), as it would when
//! analysts and feeds edit a live platform. How an indicator changes, and where it then sorts, is
//! the platform's: [`MutableStore::change`].

use chrono::{DateTime, Utc};
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;

/// Mixed into `--seed` for the mutation stream, so that it is independent of the data's.
const MUTATION_SEED: u64 = 0x0000_6d75_7461_7465;

/// The mutation stream of a simulator started with `--seed seed`.
pub(crate) fn seeded_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ MUTATION_SEED)
}

/// The indicators (by index) that have appeared in a served page, in the order they first did,
/// and the seeded random stream that picks and changes them.
#[derive(Debug, Clone)]
pub(crate) struct Mutation {
    seen: Vec<bool>,
    served: Vec<usize>,
    rng: ChaCha8Rng,
}

impl Mutation {
    /// Nothing served yet, out of `items` indicators; `rng` draws every pick and change.
    pub fn new(items: usize, rng: ChaCha8Rng) -> Self {
        Self {
            seen: vec![false; items],
            served: Vec::new(),
            rng,
        }
    }

    /// Records the indicators of a page just served.
    pub fn record(&mut self, page: &[usize]) {
        for &i in page {
            if let Some(seen) = self.seen.get_mut(i)
                && !*seen
            {
                *seen = true;
                self.served.push(i);
            }
        }
    }

    /// Draws up to `k` distinct served indicators (none, and no draw, when nothing was served).
    pub(crate) fn choose(&mut self, k: usize) -> Vec<usize> {
        let n = k.min(self.served.len());
        if n == 0 {
            return Vec::new();
        }
        rand::seq::index::sample(&mut self.rng, self.served.len(), n)
            .iter()
            .map(|pos| self.served[pos])
            .collect()
    }

    /// The stream a change draws its new values from.
    pub(crate) fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

/// A platform's indicator store, as `--mutate-per-page` sees it.
pub(crate) trait MutableStore {
    /// What has been served, and the stream that picks and changes indicators.
    fn mutation(&mut self) -> &mut Mutation;

    /// Changes indicator `idx` at `now` as an analyst or a feed would, drawing from
    /// [`Mutation::rng`].
    fn change(&mut self, idx: usize, now: DateTime<Utc>);

    /// Changes up to `k` served indicators at `now`; returns how many changed.
    fn mutate(&mut self, k: usize, now: DateTime<Utc>) -> usize {
        let chosen = self.mutation().choose(k);
        for &idx in &chosen {
            self.change(idx, now);
        }
        chosen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_each_indicator_once_in_first_served_order() {
        let mut m = Mutation::new(5, ChaCha8Rng::seed_from_u64(1));
        assert!(m.choose(2).is_empty());
        m.record(&[3, 1]);
        m.record(&[1, 4, 3, 99]);
        let mut all = m.choose(10);
        all.sort_unstable();
        assert_eq!(all, vec![1, 3, 4]);
        assert_eq!(m.choose(2).len(), 2);
    }
}
