//! `${VAR}` expansion in the string scalars of a configuration tree.
//!
//! Rules, chosen so that secrets survive intact:
//! - `${NAME}` is replaced by the environment variable `NAME`; a variable that is not set is a
//!   problem naming the field and the variable, never a silent empty string;
//! - `$${` is the escape for a literal `${`;
//! - any other `$` is left alone. Elastic Agent once turned `$$` inside secrets into `$`,
//!   corrupting passwords; here `pa$$word` stays `pa$$word`.
//!
//! The text is scanned left to right, so `$$${X}` is a `$` followed by the escape `$${`.
//! Only values are expanded, never keys, and an expanded value is not expanded again. Problem
//! messages never quote the string being expanded, because it may be a secret.

use serde_json::Value;

use super::Problem;
use super::fields::{join_index, join_key};

/// Expands `${VAR}` in every string of `value`, looking variables up with `lookup`.
/// Returns the expanded tree and every problem found.
pub(crate) fn expand_tree(
    value: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Value, Vec<Problem>) {
    let mut problems = Vec::new();
    let expanded = expand_at(value, "", lookup, &mut problems);
    (expanded, problems)
}

fn expand_at(
    value: &Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Value {
    match value {
        Value::String(text) => match expand_str(text, lookup) {
            Ok(expanded) => Value::String(expanded),
            Err(errors) => {
                problems.extend(errors.into_iter().map(|message| Problem {
                    field: if path.is_empty() {
                        "<root>".to_owned()
                    } else {
                        path.to_owned()
                    },
                    message,
                }));
                value.clone()
            }
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| expand_at(v, &join_index(path, i), lookup, problems))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        expand_at(v, &join_key(path, k), lookup, problems),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands one string. On failure returns one message per bad reference; messages name the
/// variable but never quote the string itself.
pub(crate) fn expand_str(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let tail = &rest[dollar..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(close) = after.find('}') else {
                errors.push("unterminated `${` (write `$${` for a literal `${`)".to_owned());
                rest = "";
                break;
            };
            let name = &after[..close];
            if !is_var_name(name) {
                // The text between the braces is not a name, so it may be part of a literal
                // secret: describe it, never quote it.
                errors.push(
                    "invalid variable reference: `${` is followed by something that is not a \
                     variable name (letters, digits and `_`; value not shown; write `$${` for a \
                     literal `${`)"
                        .to_owned(),
                );
            } else {
                match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => errors.push(format!("environment variable {name} is not set")),
                }
            }
            rest = &after[close + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Looks a variable up in the process environment; a non-UTF-8 value counts as unset.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr$$et".to_owned()),
            "EMPTY" => Some(String::new()),
            "NESTED" => Some("${SECRET}".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn expands_escapes_and_keeps_other_dollars() {
        assert_eq!(expand_str("a${SECRET}b", &env).unwrap(), "as3cr$$etb");
        assert_eq!(expand_str("pa$$word", &env).unwrap(), "pa$$word");
        // Left to right: a lone `$`, then the escape `$${`.
        assert_eq!(expand_str("$$${SECRET}", &env).unwrap(), "$${SECRET}");
        assert_eq!(expand_str("$${SECRET}", &env).unwrap(), "${SECRET}");
        assert_eq!(expand_str("cost $5 $", &env).unwrap(), "cost $5 $");
        assert_eq!(expand_str("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand_str("${NESTED}", &env).unwrap(), "${SECRET}");
    }

    #[test]
    fn reports_missing_and_malformed_references() {
        let errors = expand_str("${NOPE} ${A-B} ${OPEN", &env).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("NOPE"));
        assert!(
            errors[1].starts_with("invalid variable reference"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_literal_secret_that_looks_like_a_reference_is_never_echoed() {
        let errors = expand_str("x${S3CR3T-PART}y", &env).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(!errors[0].contains("S3CR3T"), "{errors:?}");
    }

    #[test]
    fn walks_the_tree_with_paths() {
        let tree = json!({"inputs": [{"streams": [{"k": "${NOPE}", "n": 1}]}]});
        let (_, problems) = expand_tree(&tree, &env);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "inputs[0].streams[0].k");
        assert_eq!(problems[0].message, "environment variable NOPE is not set");
    }
}
