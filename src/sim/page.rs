//! Page bodies written from pre-rendered JSON, shared by both simulators.
//!
//! Building an indicator as a `serde_json::Value` and serialising it costs far more than sending
//! it, which made the simulators, not the client under test, the bottleneck of every benchmark.
//! So each simulator renders an indicator's blocks (base fields, tags, attributes, …) to bytes
//! once, keeps them in a [`RenderCache`], and writes a page by concatenating bytes. The blocks are
//! still built by the same `serde_json` code as before, so their content cannot drift; only the
//! order of an indicator's keys changes (base fields first, then the requested blocks).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// The members of a JSON object, rendered: `"a":1,"b":"x"` without the braces; empty when the
/// block contributes nothing.
pub(crate) type Members = Box<[u8]>;

/// Renders the members of `map` once.
pub fn members(map: &Map<String, Value>) -> Members {
    let mut bytes = serde_json::to_vec(map).unwrap_or_else(|_| b"{}".to_vec());
    // `{…}` → `…`: an object always serialises with one brace at each end.
    bytes.pop();
    bytes.remove(0);
    bytes.into_boxed_slice()
}

/// Renders the single member `"key":value`.
pub fn member(key: &str, value: &Value) -> Members {
    let mut out = serde_json::to_vec(key).unwrap_or_default();
    out.push(b':');
    // Writing a `Value` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.into_boxed_slice()
}

/// Appends `{` + the non-empty `parts` joined by `,` + `}`.
pub fn write_object(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.push(b'{');
    let mut first = true;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(part);
        first = false;
    }
    out.push(b'}');
}

/// A JSON array written element by element: `[` on creation, `,` between elements, `]` on
/// [`JsonArray::finish`].
pub(crate) struct JsonArray<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonArray<'a> {
    /// Opens the array at the end of `out`.
    pub fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'[');
        Self { out, empty: true }
    }

    /// Appends one object assembled from member fragments (see [`write_object`]).
    pub fn object(&mut self, parts: &[&[u8]]) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_object(self.out, parts);
    }

    /// Closes the array.
    pub fn finish(self) {
        self.out.push(b']');
    }
}

/// Appends `"key":` (with a leading `,` when `comma`).
pub(crate) fn write_key(out: &mut Vec<u8>, key: &str, comma: bool) {
    if comma {
        out.push(b',');
    }
    // A `&str` always serialises.
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

/// Appends a JSON string.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(out, s);
}

/// An `application/json` response with an already rendered body.
pub(crate) fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// An `application/json` response from a DOM (error bodies and other small answers).
pub(crate) fn json_value(status: StatusCode, body: &Value) -> Response {
    // serde_json writes i64 ids digit for digit; nothing here goes through f64.
    json_bytes(status, serde_json::to_vec(body).unwrap_or_default())
}

/// The rendered blocks of every indicator, filled on first use and dropped when the indicator
/// changes (`--mutate-per-page`, `stamp`), so a page never shows a stale render.
///
/// Blocks are numbered `0..blocks` by each simulator. Memory is one slot per (indicator, block)
/// plus the bytes of what clients actually requested.
pub(crate) struct RenderCache {
    blocks: usize,
    slots: Vec<Option<Members>>,
}

impl RenderCache {
    /// An empty cache for `items` indicators of `blocks` blocks each.
    pub fn new(items: usize, blocks: usize) -> Self {
        Self {
            blocks,
            slots: vec![None; items.saturating_mul(blocks)],
        }
    }

    fn slot(&self, item: usize, block: usize) -> usize {
        debug_assert!(block < self.blocks);
        item * self.blocks + block
    }

    /// Renders block `block` of `item` with `render` unless it is cached.
    pub(crate) fn fill(&mut self, item: usize, block: usize, render: impl FnOnce() -> Members) {
        let at = self.slot(item, block);
        if let Some(slot) = self.slots.get_mut(at)
            && slot.is_none()
        {
            *slot = Some(render());
        }
    }

    /// The cached render (empty if [`RenderCache::fill`] was not called for it).
    pub fn get(&self, item: usize, block: usize) -> &[u8] {
        self.slots
            .get(self.slot(item, block))
            .and_then(Option::as_deref)
            .unwrap_or_default()
    }

    /// A capacity guess for a page of `items` written from `blocks`: the renders of the first
    /// item once per item plus one, and `envelope` bytes for the rest.
    pub(crate) fn page_capacity(
        &self,
        items: &[usize],
        blocks: impl IntoIterator<Item = usize>,
        envelope: usize,
    ) -> usize {
        let per_item: usize = items.first().map_or(0, |&i| {
            blocks.into_iter().map(|b| self.get(i, b).len()).sum()
        });
        per_item.saturating_mul(items.len() + 1) + envelope
    }

    /// Forgets every block of `item` (it changed).
    pub(crate) fn invalidate(&mut self, item: usize) {
        let start = self.slot(item, 0);
        let end = start.saturating_add(self.blocks).min(self.slots.len());
        if let Some(slots) = self.slots.get_mut(start..end) {
            slots.fill(None);
        }
    }

    /// Renders `blocks` of every item now, on every core, so that the first pass through the
    /// data is as fast as the later ones (a one-shot client run sees no render cost). Blocking:
    /// call it from `spawn_blocking`.
    pub(crate) fn prerender(
        &mut self,
        blocks: &[usize],
        render: impl Fn(usize, usize) -> Members + Sync,
    ) {
        let stride = self.blocks.max(1);
        let items = self.slots.len() / stride;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_thread = items.div_ceil(threads).max(1);
        let render = &render;
        std::thread::scope(|scope| {
            for (chunk, slots) in self.slots.chunks_mut(per_thread * stride).enumerate() {
                scope.spawn(move || {
                    for (k, slot) in slots.iter_mut().enumerate() {
                        let (item, block) = (chunk * per_thread + k / stride, k % stride);
                        if slot.is_none() && blocks.contains(&block) {
                            *slot = Some(render(item, block));
                        }
                    }
                });
            }
        });
    }

    /// Forgets everything (e.g. the renders embed a base URL that changed).
    pub fn clear(&mut self) {
        self.slots.fill(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_and_objects_concatenate_to_valid_json() {
        let Value::Object(m) = json!({"b": 2, "a": "x\"y", "id": 9_007_199_254_740_993_i64}) else {
            unreachable!()
        };
        let base = members(&m);
        let tags = member("tags", &json!({"data": [1, 2]}));
        let empty = members(&Map::new());
        assert!(empty.is_empty());
        let mut out = Vec::new();
        let mut arr = JsonArray::open(&mut out);
        arr.object(&[&base, &empty, &tags]);
        arr.object(&[&empty]);
        arr.finish();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!([{"a": "x\"y", "b": 2, "id": 9_007_199_254_740_993_i64, "tags": {"data": [1, 2]}}, {}])
        );
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("\"id\":9007199254740993")
        );
    }

    #[test]
    fn cache_fills_once_and_invalidates_one_item() {
        let mut c = RenderCache::new(3, 2);
        let mut renders = 0;
        for _ in 0..2 {
            c.fill(1, 1, || {
                renders += 1;
                b"\"x\":1".to_vec().into_boxed_slice()
            });
        }
        assert_eq!(renders, 1);
        assert_eq!(c.get(1, 1), b"\"x\":1");
        assert_eq!(c.get(1, 0), b"");
        c.fill(2, 0, || b"\"y\":2".to_vec().into_boxed_slice());
        c.invalidate(1);
        assert_eq!(c.get(1, 1), b"");
        assert_eq!(c.get(2, 0), b"\"y\":2");
        c.clear();
        assert_eq!(c.get(2, 0), b"");
        c.prerender(&[0], |item, block| {
            format!("\"i{item}b{block}\":1")
                .into_bytes()
                .into_boxed_slice()
        });
        assert_eq!(c.get(0, 0), b"\"i0b0\":1");
        assert_eq!(c.get(1, 0), b"\"i1b0\":1");
        assert_eq!(c.get(1, 1), b"", "block 1 was not asked for");
    }
}
