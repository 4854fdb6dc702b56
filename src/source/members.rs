//! The top-level members of a JSON object that serde_json has already validated (a page item,
//! borrowed from the body as a `&RawValue`), found without parsing it again.
//!
//! Paging needs two keys of each item (ThreatConnect's `id` and `lastModified`). Deserializing
//! a struct of those two walks and validates the whole item a second time, nested blocks
//! included: at page 10 000 that was 7% of a run. Here the nested values are only skipped:
//! strings to their closing quote (eight bytes at a time), arrays and objects by depth. The input is never
//! trusted to be valid all the same: anything unexpected ends the walk with `None`, and the
//! caller falls back to serde.

/// The raw members of `text`, if it is a JSON object: each key as written between its quotes
/// (escapes left as they are) and each value's text. Stops (yields `None` from then on, and
/// [`Members::complete`] stays `false`) at anything that is not well-formed.
pub(crate) struct Members<'a> {
    text: &'a str,
    pos: usize,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first member (just after `{`).
    First,
    /// After a member.
    Next,
    /// The closing `}` was reached.
    Done,
    /// Something unexpected: no more members.
    Broken,
}

impl<'a> Members<'a> {
    /// The members of `text`; an empty walk that is never complete if `text` is not an object.
    pub(crate) fn of(text: &'a str) -> Self {
        let bytes = text.as_bytes();
        let start = skip_ws(bytes, 0);
        let state = if bytes.get(start) == Some(&b'{') {
            State::First
        } else {
            State::Broken
        };
        Self {
            text,
            pos: start + 1,
            state,
        }
    }

    /// Whether the walk reached the object's closing brace.
    pub(crate) fn complete(&self) -> bool {
        self.state == State::Done
    }

    fn member(&mut self) -> Option<(&'a str, &'a str)> {
        let bytes = self.text.as_bytes();
        let mut at = skip_ws(bytes, self.pos);
        match (self.state, bytes.get(at)?) {
            (State::First | State::Next, b'}') => {
                self.state = State::Done;
                return None;
            }
            (State::Next, b',') => at = skip_ws(bytes, at + 1),
            (State::First, _) => {}
            _ => return None,
        }
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(bytes, at)?;
        let key = self.text.get(at + 1..key_end - 1)?;
        at = skip_ws(bytes, key_end);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(bytes, at + 1);
        let value_end = value_end(bytes, value_start)?;
        self.pos = value_end;
        self.state = State::Next;
        Some((key, self.text.get(value_start..value_end)?))
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if matches!(self.state, State::Done | State::Broken) {
            return None;
        }
        let member = self.member();
        if member.is_none() && self.state != State::Done {
            self.state = State::Broken;
        }
        member
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// The end (one past the closing quote) of the string whose opening quote is at `at`, eight
/// bytes at a time (most strings are short: a library search costs more than the scan).
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        while let Some(word) = bytes.get(i..i + 8) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(word);
            // Flags quotes and backslashes (and control bytes, which a valid string has none
            // of, and which the byte step below passes over).
            let flagged = crate::ingest::json::escapes_in(u64::from_le_bytes(eight));
            if flagged != 0 {
                i += (flagged.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match bytes.get(i)? {
            b'"' => return Some(i + 1),
            // A backslash escapes the next byte (`\"`, `\\`, or the first of `\uXXXX`).
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The end of the value starting at `at`: a string, an array or object (by depth), or a
/// number or literal (up to the next delimiter).
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let len = bytes
                .get(at..)?
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(bytes.len() - at);
            (len > 0).then_some(at + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> (Vec<(&str, &str)>, bool) {
        let mut m = Members::of(text);
        let found = m.by_ref().collect();
        (found, m.complete())
    }

    #[test]
    fn walks_the_top_level_only() {
        let text = r#" { "id" : 7 ,"a":{"id":1,"b":[1,{"c":"}"}]},"s":"x\"}\\","n":null,"f":-1.5e3,
            "lastModified":"2024-01-01T00:00:00Z" } "#;
        let (members, complete) = all(text);
        assert!(complete);
        assert_eq!(
            members,
            [
                ("id", "7"),
                ("a", r#"{"id":1,"b":[1,{"c":"}"}]}"#),
                ("s", r#""x\"}\\""#),
                ("n", "null"),
                ("f", "-1.5e3"),
                ("lastModified", r#""2024-01-01T00:00:00Z""#),
            ]
        );
        assert_eq!(all("{}"), (vec![], true));
        assert_eq!(all(" {\n} "), (vec![], true));
    }

    #[test]
    fn keys_are_raw() {
        assert_eq!(all(r#"{"i\u0064":1}"#).0, [(r"i\u0064", "1")]);
    }

    #[test]
    fn anything_else_is_never_complete() {
        for text in [
            "",
            "[1,2]",
            "7",
            r#""{}""#,
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
        ] {
            let mut m = Members::of(text);
            m.by_ref().for_each(drop);
            assert!(!m.complete(), "{text:?}");
        }
    }

    proptest::proptest! {
        /// On every valid object, the members are serde_json's: the same keys (raw), in order,
        /// each with the value serde reads at that place.
        #[test]
        fn members_match_serde(value in crate::ingest::arb_json(
            &["}", "]", "{\"a\":[1]}", "\"", "\\", "\\\"", "a\u{1}\n\t", "é\u{2028}", "x\\\\"],
            &["id", "lastModified", "\"", "}", "a\\b", "é", ""],
        )) {
            let serde_json::Value::Object(map) = &value else { return Ok(()); };
            for text in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
                let (members, complete) = all(&text);
                proptest::prop_assert!(complete);
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

        /// Arbitrary text never panics.
        #[test]
        fn never_panics(text in ".{0,64}") {
            Members::of(&text).for_each(drop);
        }
    }
}
