//! A strict, single-pass walk of JSON text: where each value lies, checked as `serde_json`
//! checks it, with nothing built.
//!
//! A page of 10 000 indicators used to be read three times before mapping: `serde_json`
//! validated the envelope while it found each item (`&RawValue`), a walk of each item's
//! top-level members found its paging keys, and ThreatQ's `data` was parsed a second time
//! for its items. That was 17% of a run's CPU. With this walk, the envelope, the items' spans
//! and their keys come out of one pass over the body.
//!
//! The walk never decides an error. Whatever it does not accept (malformed text, nesting
//! deeper than [`MAX_DEPTH`], anything its caller does not model) ends it with `None`, and the
//! caller hands the text to `serde_json`, whose answer (and error message) stands. So the walk
//! must never accept text that `serde_json` rejects: a differential property test below holds
//! it to that, on generated documents and on the same documents with bytes cut, doubled and
//! replaced.

use std::borrow::Cow;

/// Nesting the walk leaves to `serde_json` (whose own limit is 128 levels).
pub(crate) const MAX_DEPTH: usize = 100;

/// A position in JSON text, moved forward by walking values.
pub(crate) struct Walk<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Walk<'a> {
    /// A walk from the start of `text`.
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    /// Where the next value starts (whitespace skipped).
    pub(crate) fn start(&mut self) -> usize {
        self.pos = skip_ws(self.text.as_bytes(), self.pos);
        self.pos
    }

    /// The next byte after whitespace, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        let at = self.start();
        self.text.as_bytes().get(at).copied()
    }

    /// The text walked since `start`. Every position the walk stops at is just before or after
    /// an ASCII byte, so the slice is always on character boundaries.
    pub(crate) fn since(&self, start: usize) -> Option<&'a str> {
        self.text.get(start..self.pos)
    }

    /// Consumes `byte` after whitespace.
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// Walks an object at nesting level `depth` (the outermost value is at 1). `member` is
    /// called with each key as written between its quotes (escapes left as they are), and must
    /// walk that member's value, at `depth + 1`.
    pub(crate) fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.sequence(depth, b'{', b'}', |walk| {
            let start = walk.start();
            if walk.text.as_bytes().get(start) != Some(&b'"') {
                return None;
            }
            walk.pos = string_end(walk.text.as_bytes(), start)?;
            let key = walk.text.get(start + 1..walk.pos - 1)?;
            walk.expect(b':')?;
            member(walk, key)
        })
    }

    /// Walks an array at nesting level `depth`; `element` must walk each element, at
    /// `depth + 1`.
    pub(crate) fn array(
        &mut self,
        depth: usize,
        element: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.sequence(depth, b'[', b']', element)
    }

    /// `open`, then `item`s separated by commas, then `close`: an object's members or an
    /// array's elements.
    fn sequence(
        &mut self,
        depth: usize,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(open)?;
        if self.peek()? == close {
            self.pos += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b if b == close => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Walks one value at nesting level `depth`; gives its text.
    pub(crate) fn value(&mut self, depth: usize) -> Option<&'a str> {
        let start = self.start();
        self.skip(depth)?;
        self.since(start)
    }

    /// Walks one value at nesting level `depth`.
    pub(crate) fn skip(&mut self, depth: usize) -> Option<()> {
        let bytes = self.text.as_bytes();
        let at = self.start();
        match *bytes.get(at)? {
            b'"' => self.pos = string_end(bytes, at)?,
            b'{' => self.object(depth, |walk, _| walk.skip(depth + 1))?,
            b'[' => self.array(depth, |walk| walk.skip(depth + 1))?,
            b'-' | b'0'..=b'9' => self.pos = number_end(bytes, at)?,
            first => {
                let word: &[u8] = match first {
                    b't' => b"true",
                    b'f' => b"false",
                    b'n' => b"null",
                    _ => return None,
                };
                if !bytes.get(at..)?.starts_with(word) {
                    return None;
                }
                self.pos = at + word.len();
            }
        }
        Some(())
    }

    /// Only whitespace is left.
    pub(crate) fn finish(mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }
}

/// Walks a response envelope: an object whose members named in `fields` `field` walks (given
/// the name's index), the others skipped. `None` (serde decides) for what a derived
/// `Deserialize` reads otherwise: a duplicate field, or an escaped key (which may spell one).
pub(crate) fn envelope<'a>(
    body: &'a str,
    fields: &[&str],
    mut field: impl FnMut(&mut Walk<'a>, usize) -> Option<()>,
) -> Option<()> {
    let mut seen = 0u64;
    let mut walk = Walk::new(body);
    walk.object(1, |walk, key| {
        if key.contains('\\') {
            return None;
        }
        let Some(i) = fields.iter().position(|f| *f == key) else {
            return walk.skip(2);
        };
        let bit = 1u64.checked_shl(u32::try_from(i).ok()?)?;
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        field(walk, i)
    })?;
    walk.finish()
}

/// A walked value read as serde reads an `Option<String>`: `Some(None)` for `null`,
/// `Some(Some(text))` for a string (borrowed when it has no escape), `None` for anything else
/// (serde's error).
pub(crate) fn nullable_str(value: &str) -> Option<Option<Cow<'_, str>>> {
    match value {
        "null" => Some(None),
        v if v.len() >= 2 && v.starts_with('"') && !v.contains('\\') => {
            Some(Some(Cow::Borrowed(&v[1..v.len() - 1])))
        }
        v => serde_json::from_str::<Option<String>>(v)
            .ok()
            .map(|s| s.map(Cow::Owned)),
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// The end (one past the closing quote) of the string whose opening quote is at `at`, eight
/// bytes at a time (most strings are short: a library search costs more than the scan). Like
/// `serde_json` skipping a string: no control bytes, and only JSON's escapes (`\u` with four
/// hex digits, whatever code point they spell). The text is already UTF-8.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        while let Some(word) = bytes.get(i..i + 8) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(word);
            // Flags quotes, backslashes and control bytes.
            let flagged = crate::ingest::json::escapes_in(u64::from_le_bytes(eight));
            if flagged != 0 {
                i += (flagged.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match *bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {
                i += match *bytes.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                    b'u' if bytes.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                    _ => return None,
                }
            }
            0..=0x1F => return None,
            _ => i += 1,
        }
    }
}

/// The end of the number starting at `at`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
/// What follows is for the caller to check (a delimiter).
fn number_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    match *bytes.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits_end(bytes, i + 1),
        _ => return None,
    }
    if bytes.get(i) == Some(&b'.') {
        i = some_digits_end(bytes, i + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = bytes.get(i) {
            i += 1;
        }
        i = some_digits_end(bytes, i)?;
    }
    Some(i)
}

fn digits_end(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// [`digits_end`] of at least one digit.
fn some_digits_end(bytes: &[u8], i: usize) -> Option<usize> {
    let end = digits_end(bytes, i);
    (end > i).then_some(end)
}

/// Strategies and checks shared by the differential tests of the walk's callers.
#[cfg(test)]
pub(crate) mod testing {
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    /// `text` with one edit (a byte cut, doubled, or replaced by a JSON-significant one), at a
    /// position picked by `at` (any `usize`); kept only where it is still UTF-8.
    pub(crate) fn mutated(text: &str, edit: u8, at: usize, with: u8) -> String {
        let mut bytes = text.as_bytes().to_vec();
        if bytes.is_empty() {
            return String::new();
        }
        let i = at % bytes.len();
        const SIGNIFICANT: &[u8] = b"\"\\{}[],:0-.eE+tfnu \x01\x1fa9";
        let b = SIGNIFICANT[usize::from(with) % SIGNIFICANT.len()];
        match edit % 4 {
            0 => {
                bytes.remove(i);
            }
            1 => bytes.insert(i, bytes[i]),
            2 => bytes[i] = b,
            _ => bytes.insert(i, b),
        }
        String::from_utf8(bytes).unwrap_or_else(|_| text.to_owned())
    }

    /// A mutation: `(edit, at, with)` for [`mutated`].
    pub(crate) fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
        prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..3)
    }

    /// Applies `edits` to `body`, then holds a walk to `serde_json`: what the walk reads must be
    /// what serde reads, it must not read what serde refuses, and it may leave to serde only
    /// an edited page or one with an escaped field name (`escaped`).
    pub(crate) fn check_walk<P, E>(
        mut body: String,
        edits: Vec<(u8, usize, u8)>,
        escaped: bool,
        walked: impl Fn(&str) -> Option<P>,
        by_serde: impl Fn(&str) -> Result<P, E>,
    ) -> Result<(), TestCaseError>
    where
        P: PartialEq + std::fmt::Debug,
        E: std::fmt::Display,
    {
        let clean = edits.is_empty();
        for (edit, at, with) in edits {
            body = mutated(&body, edit, at, with);
        }
        match (walked(&body), by_serde(&body)) {
            (Some(walked), Ok(by_serde)) => prop_assert_eq!(walked, by_serde, "{}", body),
            (Some(_), Err(e)) => prop_assert!(false, "walked what serde refuses ({}): {}", e, body),
            (None, by_serde) => prop_assert!(
                !(clean && !escaped && by_serde.is_ok()),
                "left a plain page to serde: {}",
                body
            ),
        }
        Ok(())
    }

    /// Strings that exercise the walk: escapes, structure inside strings, control bytes.
    pub(crate) const STRINGS: &[&str] = &[
        "}",
        "]",
        "{\"a\":[1]}",
        "\"",
        "\\",
        "\\\"",
        "a\u{1}\n\t",
        "é\u{2028}",
        "x\\\\",
        "\u{7f}",
    ];
}

#[cfg(test)]
mod tests {
    use super::testing::{STRINGS, edits, mutated};
    use super::*;

    /// The top-level members of `text` (raw keys and value texts), if the walk accepts it.
    fn members(text: &str) -> Option<Vec<(&str, &str)>> {
        let mut walk = Walk::new(text);
        let mut found = Vec::new();
        walk.object(1, |walk, key| {
            found.push((key, walk.value(2)?));
            Some(())
        })?;
        walk.finish()?;
        Some(found)
    }

    /// Whether the walk accepts `text` as one value.
    fn accepts(text: &str) -> bool {
        let mut walk = Walk::new(text);
        walk.skip(1).and_then(|()| walk.finish()).is_some()
    }

    #[test]
    fn walks_the_top_level_members() {
        let text = r#" { "id" : 7 ,"a":{"id":1,"b":[1,{"c":"}"}]},"s":"x\"}\\","n":null,"f":-1.5e3,
            "lastModified":"2024-01-01T00:00:00Z" } "#;
        assert_eq!(
            members(text).unwrap(),
            [
                ("id", "7"),
                ("a", r#"{"id":1,"b":[1,{"c":"}"}]}"#),
                ("s", r#""x\"}\\""#),
                ("n", "null"),
                ("f", "-1.5e3"),
                ("lastModified", r#""2024-01-01T00:00:00Z""#),
            ]
        );
        assert_eq!(members("{}"), Some(vec![]));
        assert_eq!(members(" {\n} "), Some(vec![]));
        assert_eq!(members(r#"{"i\u0064":1}"#), Some(vec![(r"i\u0064", "1")]));
    }

    #[test]
    fn rejects_what_serde_rejects() {
        for text in [
            "",
            " ",
            "{",
            r#"{"a":1"#,
            r#"{"a" 1}"#,
            r#"{"a":}"#,
            r#"{a:1}"#,
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":[1,2}"#,
            r#"{"a":"1}"#,
            r#"{,"a":1}"#,
            "[1,]",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[1e+]",
            "[-]",
            "[+1]",
            "[tru]",
            "[truee]",
            "[nul]",
            "[\"\u{1}\"]",
            r#"["\x"]"#,
            r#"["\u12"]"#,
            r#"["\u12g4"]"#,
            "{} {}",
            "{}x",
        ] {
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(text).is_err(),
                "{text:?}"
            );
            assert!(!accepts(text), "{text:?}");
        }
        for text in [
            "[0,-0,1.5,-2e10,3E+2,4e-1,0.0e0]",
            r#"["\u12aF\n\/\b\f\r\t\"\\\ud800"]"#,
            "[true,false,null]",
        ] {
            assert!(accepts(text), "{text:?}");
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_left_to_serde() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(accepts(&nested(MAX_DEPTH)));
        assert!(!accepts(&nested(MAX_DEPTH + 1)));
        // serde_json takes it: the walk only hands it over.
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(&nested(MAX_DEPTH + 1)).is_ok());
    }

    proptest::proptest! {
        /// On every valid object, the members are serde_json's: the same keys (raw), in order,
        /// each with the value serde reads at that place.
        #[test]
        fn members_match_serde(value in crate::ingest::arb_json(
            STRINGS,
            &["id", "lastModified", "\"", "}", "a\\b", "é", ""],
        )) {
            let serde_json::Value::Object(map) = &value else { return Ok(()); };
            for text in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
                let members = members(&text);
                proptest::prop_assert!(members.is_some(), "{}", text);
                let members = members.unwrap_or_default();
                proptest::prop_assert_eq!(members.len(), map.len());
                for ((key, raw), (k, v)) in members.iter().zip(map) {
                    let unescaped: String = serde_json::from_str(&format!("\"{key}\"")).unwrap();
                    proptest::prop_assert_eq!(&unescaped, k);
                    // Compared as parsed from text both times (floats print lossily).
                    let parsed: serde_json::Value = serde_json::from_str(raw).unwrap();
                    let expected: serde_json::Value =
                        serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap();
                    proptest::prop_assert_eq!(parsed, expected);
                }
            }
        }

        /// The walk accepts a text only if serde_json does, and every text serde_json accepts
        /// (at these depths); on valid documents and on the same documents with edits.
        #[test]
        fn accepts_exactly_what_serde_accepts(
            value in crate::ingest::arb_json(STRINGS, &["a", "\\", "\""]),
            pretty in proptest::bool::ANY,
            edits in edits(),
        ) {
            let mut text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            for (edit, at, with) in edits {
                text = mutated(&text, edit, at, with);
            }
            let serde_ok = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            proptest::prop_assert_eq!(accepts(&text), serde_ok, "{}", text);
        }

        /// Arbitrary text never panics.
        #[test]
        fn never_panics(text in ".{0,64}") {
            accepts(&text);
            members(&text);
        }
    }
}
