//! Page-body buffers, reused from one page to the next while a sweep runs.
//!
//! A backfill page is 10–35 MiB. Allocated fresh for every page, its buffer came from pages
//! the allocator had just handed back to the system, so every page was faulted in again as its
//! bytes arrived: 73 000 page faults in a 200 000-indicator run, 93% of them in the body copy.
//! The pool keeps a few spent buffers for the next pages instead. It holds at most [`KEEP`],
//! none larger than a page may be (`max_response_size`), and [`BodyPool::release`] drops them
//! when the sweep has caught up and while a failing API is waited for, so a resting or waiting
//! stream holds none.

use std::sync::{Arc, Mutex, PoisonError};

/// The most spent buffers kept: the pages a backfill has in flight at once.
pub(crate) const KEEP: usize = 4;

/// Spent page-body buffers, shared by an [`super::HttpClient`] and its clones.
#[derive(Debug)]
pub struct BodyPool {
    spare: Mutex<Vec<Vec<u8>>>,
    /// The page limit (`max_response_size`): a body buffer never outgrows it, so a larger one
    /// is not a page's and is not kept.
    largest: usize,
}

impl BodyPool {
    /// An empty pool for pages of up to `largest` bytes.
    pub(crate) fn new(largest: usize) -> Self {
        Self {
            spare: Mutex::default(),
            largest,
        }
    }

    /// An empty buffer with room for `capacity` bytes (`0`: not announced): the smallest spent
    /// one that holds it (the largest, for a page of unknown size), or a new one.
    ///
    /// A new buffer is made an eighth larger than the page, up to the page limit. The pages of
    /// a sweep differ in size by some percent (every association: 30 to 35 MiB), so a buffer
    /// made just for one page was too small for the next one half the time, and the pages
    /// were faulted in anew. The extra room is address space, not memory: it is touched only
    /// by a later, larger page.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        let mut spare = self.spare();
        let sizes = spare.iter().map(Vec::capacity).enumerate();
        let fitting = if capacity == 0 {
            sizes.max_by_key(|&(_, size)| size)
        } else {
            sizes
                .filter(|&(_, size)| size >= capacity)
                .min_by_key(|&(_, size)| size)
        }
        .map(|(i, _)| i);
        if let Some(i) = fitting {
            return spare.swap_remove(i);
        }
        // None holds the page. Growing one would copy its stale bytes for nothing; the smallest
        // is let go, so that the pool and the new buffer hold no more than before.
        if let Some(smallest) = (0..spare.len()).min_by_key(|&i| spare[i].capacity()) {
            spare.swap_remove(smallest);
        }
        drop(spare);
        let room = capacity
            .saturating_add(capacity / 8)
            .min(self.largest.max(capacity));
        Vec::with_capacity(room)
    }

    /// Keeps `buf` for a later page unless [`KEEP`] are kept already, or it is larger than a
    /// page may be.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.largest {
            return;
        }
        buf.clear();
        let mut spare = self.spare();
        if spare.len() < KEEP {
            spare.push(buf);
        }
    }

    /// Drops every kept buffer (a sweep has caught up: the memory goes back to the system).
    pub fn release(&self) {
        self.spare().clear();
    }

    /// How many buffers are kept.
    pub fn kept(&self) -> usize {
        self.spare().len()
    }

    fn spare(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding the lock leaves a list of plain buffers: still usable.
        self.spare.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A page body's text, its buffer given back to its pool when the last item of the page is
/// done with it.
#[derive(Debug, Default)]
pub struct PageText {
    text: String,
    pool: Option<Arc<BodyPool>>,
}

impl PageText {
    /// `text`, whose buffer goes back to `pool` when the page is done with.
    pub fn pooled(text: String, pool: Arc<BodyPool>) -> Self {
        Self {
            text,
            pool: Some(pool),
        }
    }
}

impl From<String> for PageText {
    /// A text that is not pooled (pages made up by tests).
    fn from(text: String) -> Self {
        Self { text, pool: None }
    }
}

impl std::ops::Deref for PageText {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl Drop for PageText {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give(std::mem::take(&mut self.text).into_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_page_text_gives_its_buffer_to_the_next_page() {
        let pool = Arc::new(BodyPool::new(1 << 21));
        let mut first = pool.take(1 << 20);
        first.extend_from_slice(b"{\"data\":[]}");
        let at = first.as_ptr();
        let text = String::from_utf8(first).expect("ascii");
        drop(PageText::pooled(text, Arc::clone(&pool)));
        assert_eq!(pool.kept(), 1);
        let second = pool.take(1 << 20);
        assert_eq!(second.as_ptr(), at, "the same allocation is reused");
        assert!(second.is_empty() && second.capacity() >= 1 << 20);
        assert_eq!(pool.kept(), 0);
        // A spent buffer smaller than the page announced is dropped, not grown.
        pool.give(Vec::with_capacity(64));
        assert!(pool.take(1 << 20).capacity() >= 1 << 20);
        assert_eq!(pool.kept(), 0);
    }

    #[test]
    fn a_page_takes_the_smallest_spent_buffer_that_holds_it() {
        let pool = Arc::new(BodyPool::new(1 << 24));
        for size in [3 << 20, 1 << 20, 2 << 20] {
            pool.give(Vec::with_capacity(size));
        }
        // Best fit: the 2 MiB buffer, not the 3 MiB one.
        let taken = pool.take((1 << 20) + 1);
        assert!(taken.capacity() >= 2 << 20 && taken.capacity() < 3 << 20);
        // A page of unknown size takes the largest.
        assert!(pool.take(0).capacity() >= 3 << 20);
        assert_eq!(pool.kept(), 1);
        // None holds a 4 MiB page: the smallest spent one is let go, and the new buffer has an
        // eighth more room, so that a slightly larger next page fits it.
        let new = pool.take(4 << 20);
        assert_eq!(pool.kept(), 0);
        assert!(new.capacity() >= (4 << 20) + (4 << 17));
        pool.give(new);
        assert!(pool.take((4 << 20) + (4 << 17)).capacity() >= (4 << 20) + (4 << 17));
        // The extra room never passes the page limit.
        assert!(pool.take(1 << 24).capacity() >= 1 << 24);
        assert!(pool.take((1 << 24) - 1).capacity() < (1 << 24) + (1 << 20));
    }

    #[test]
    fn the_pool_is_bounded_and_released_whole() {
        let pool = Arc::new(BodyPool::new(4096));
        for _ in 0..KEEP + 3 {
            pool.give(Vec::with_capacity(4096));
        }
        assert_eq!(pool.kept(), KEEP);
        // Larger than a page may be: not kept.
        pool.release();
        pool.give(Vec::with_capacity(8192));
        assert_eq!(pool.kept(), 0);
        pool.give(Vec::with_capacity(512));
        assert_eq!(pool.kept(), 1);
        pool.release();
        assert_eq!(pool.kept(), 0);
    }
}
