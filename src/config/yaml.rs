//! The configuration file's text: bounded in size and nesting, refused on duplicate keys, then
//! read into a JSON tree by the YAML parser. Every problem is about the file as a whole
//! (`<file>`) or names the duplicated key's path and both lines.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};

use super::fields::{join_index, join_key};
use super::{FILE_FIELD, Problem};

/// The largest configuration file accepted (1 MiB): a real policy is a few kilobytes.
pub(crate) const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// The deepest `[`/`{` nesting accepted in a configuration file. The YAML parser's own limit
/// (128) is only checked after work quadratic in the depth (100 000 `[` took minutes).
pub(crate) const MAX_CONFIG_NESTING: usize = 64;

/// Reads a configuration file of at most [`MAX_CONFIG_BYTES`], whatever it is (a FIFO, a
/// device, a file still growing).
pub(crate) fn read_file(path: &std::path::Path) -> Result<String, Problem> {
    use std::io::Read as _;
    let problem = |message: String| Problem {
        field: FILE_FIELD.to_owned(),
        message,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| problem(format!("cannot read {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| problem(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        problem(format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

fn too_large() -> Problem {
    Problem {
        field: FILE_FIELD.to_owned(),
        message: format!(
            "the file is larger than {} KiB; a configuration is refused above that size",
            MAX_CONFIG_BYTES / 1024
        ),
    }
}

/// Refuses text whose flow collections (`[`, `{`) nest deeper than [`MAX_CONFIG_NESTING`],
/// before the YAML parser sees it. Brackets inside quoted scalars and comments do not count;
/// one inside a plain scalar does, which only matters for text no configuration contains.
fn check_nesting(text: &str) -> Result<(), Problem> {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Double,
        Single,
        Comment,
    }
    let mut state = In::Plain;
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        match state {
            In::Comment if c == '\n' => state = In::Plain,
            In::Comment => {}
            In::Double if c == '\\' => {
                chars.next();
            }
            In::Double if c == '"' => state = In::Plain,
            In::Single if c == '\'' && chars.peek() == Some(&'\'') => {
                chars.next();
            }
            In::Single if c == '\'' => state = In::Plain,
            In::Double | In::Single => {}
            In::Plain => match c {
                '#' if prev.is_whitespace() => state = In::Comment,
                '"' | '\'' if prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':') => {
                    state = if c == '"' { In::Double } else { In::Single };
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_CONFIG_NESTING {
                        return Err(Problem {
                            field: FILE_FIELD.to_owned(),
                            message: format!(
                                "`[`/`{{` nest deeper than {MAX_CONFIG_NESTING} levels at line \
                                 {line}; a configuration is refused beyond that"
                            ),
                        });
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    Ok(())
}

/// Reads YAML into a JSON tree. A syntax error is one `<file>` problem with its line; every
/// duplicated key is a problem naming its path and both lines.
pub fn parse(text: &str) -> Result<serde_json::Value, Vec<Problem>> {
    let file_problem = |message: String| {
        vec![Problem {
            field: FILE_FIELD.to_owned(),
            message,
        }]
    };
    if text.trim().is_empty() {
        return Err(file_problem("the file is empty".to_owned()));
    }
    if text.len() > MAX_CONFIG_BYTES {
        return Err(vec![too_large()]);
    }
    check_nesting(text).map_err(|p| vec![p])?;
    let value = serde_norway::from_str::<serde_json::Value>(text).map_err(|e| {
        let mut message = format!("invalid YAML: {e}");
        if let Some(at) = e.location()
            && !message.contains("line")
        {
            message.push_str(&format!(" at line {} column {}", at.line(), at.column()));
        }
        file_problem(message)
    })?;
    let duplicates = duplicate_keys(text);
    if duplicates.is_empty() {
        Ok(value)
    } else {
        Err(duplicates)
    }
}

/// Where the scan of [`duplicate_keys`] stands in one collection.
enum Frame {
    Map {
        path: String,
        /// Keys seen so far and the line of each.
        keys: HashMap<String, usize>,
        /// The key whose value comes next; `None` while a key is expected.
        pending: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

/// Every key that appears twice in one mapping. The YAML parser keeps the last one silently, so
/// `batch_size: 0` then `batch_size: 2000` would validate; here it is an error naming the path
/// and both lines. Text the scanner cannot read yields nothing (the YAML parser reports it).
fn duplicate_keys(text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    loop {
        let Ok((event, mark)) = parser.next_token() else {
            return problems;
        };
        // The path of the value this event starts, and whether it is a mapping key.
        let (path, is_key) = match stack.last_mut() {
            None => (String::new(), false),
            Some(Frame::Seq { path, next }) => {
                *next += 1;
                (join_index(path, *next - 1), false)
            }
            Some(Frame::Map { path, pending, .. }) => match pending.take() {
                Some(key) => (join_key(path, &key), false),
                None => (path.clone(), true),
            },
        };
        match event {
            Event::StreamEnd => return problems,
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                // The collection was the value of its parent's key: the next event is a key.
                continue;
            }
            Event::Scalar(key, ..) if is_key => {
                let Some(Frame::Map { keys, pending, .. }) = stack.last_mut() else {
                    continue;
                };
                let line = mark.line();
                if let Some(first) = keys.get(&key) {
                    problems.push(Problem {
                        field: join_key(&path, &key),
                        message: format!(
                            "duplicate key at lines {first} and {line}: a key may appear only \
                             once in a mapping"
                        ),
                    });
                } else {
                    keys.insert(key.clone(), line);
                }
                *pending = Some(key);
            }
            Event::MappingStart(..) => {
                if is_key {
                    // A complex key: its value follows it.
                    mark_pending(&mut stack, "<key>");
                }
                stack.push(Frame::Map {
                    path,
                    keys: HashMap::new(),
                    pending: None,
                });
            }
            Event::SequenceStart(..) => {
                if is_key {
                    mark_pending(&mut stack, "<key>");
                }
                stack.push(Frame::Seq { path, next: 0 });
            }
            Event::Scalar(..) | Event::Alias(_) if is_key => mark_pending(&mut stack, "<key>"),
            _ => {}
        }
    }
}

/// Records that the current mapping's key was not a plain scalar.
fn mark_pending(stack: &mut [Frame], key: &str) {
    if let Some(Frame::Map { pending, .. }) = stack.last_mut() {
        *pending = Some(key.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_name_the_path_and_both_lines() {
        let text = "inputs:\n  - id: tc\n    streams:\n      - id: s\n        batch_size: 0\n        tql: x\n        batch_size: 2000\n  - id: tq\n    id: again\n";
        let problems = parse(text).expect_err("duplicates");
        let shown: Vec<(String, String)> =
            problems.into_iter().map(|p| (p.field, p.message)).collect();
        assert_eq!(
            shown,
            [
                (
                    "inputs[0].streams[0].batch_size".to_owned(),
                    "duplicate key at lines 5 and 7: a key may appear only once in a mapping"
                        .to_owned()
                ),
                (
                    "inputs[1].id".to_owned(),
                    "duplicate key at lines 8 and 9: a key may appear only once in a mapping"
                        .to_owned()
                ),
            ]
        );
    }

    #[test]
    fn same_key_in_different_mappings_and_flow_style_is_fine_but_flow_duplicates_are_not() {
        let ok = "a: {id: 1, b: [ {id: 2}, {id: 3} ]}\nc:\n  id: 4\n  d: [[{id: 5}], {id: 6}]\n";
        assert!(parse(ok).is_ok(), "{:?}", parse(ok));
        let problems = parse("a: [1, {x: 1, y: [2], x: 3}]\n").expect_err("duplicate");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "a[1].x");
        assert!(
            problems[0].message.contains("lines 1 and 1"),
            "{problems:?}"
        );
    }

    #[test]
    fn brackets_in_quotes_and_comments_do_not_count_as_nesting() {
        let deep = "[".repeat(100);
        let text = format!("# {deep}\na: \"{deep}\\\"\"\nb: '{deep}''x'\nc: [[1], {{d: [2]}}]\n");
        assert_eq!(check_nesting(&text), Ok(()), "{text}");
    }
}
