//! Bounds on text that came from outside (a TI server, a file): what goes into errors, logs and
//! health messages is cut to [`MAX_SERVER_TEXT`] bytes on a char boundary, with a marker.

use std::borrow::Cow;

/// The most bytes of server-supplied text copied into an error, a log line or a health message.
pub(crate) const MAX_SERVER_TEXT: usize = 1024;

/// `text` cut to [`MAX_SERVER_TEXT`] bytes (on a char boundary) with a `…[N more bytes]` marker.
pub fn bounded(text: &str) -> Cow<'_, str> {
    bounded_to(text, MAX_SERVER_TEXT)
}

/// `text` cut to at most `max` bytes (on a char boundary) with a marker saying how much was cut.
pub(crate) fn bounded_to(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}…[{} more bytes]",
        &text[..end],
        text.len() - end
    ))
}

/// [`bounded`] for owned text.
pub(crate) fn bound_owned(text: String) -> String {
    match bounded(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

/// The message a panic carried (a `&str` or `String` payload), bounded.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    bounded(text).into_owned()
}

/// A JSON decoding error as its kind and position only. serde's own text can quote the
/// offending value (`invalid type: string "…"`), which may be anything the server sent,
/// a secret it echoed included.
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "unexpected JSON type or value",
        serde_json::error::Category::Eof => "JSON ends early",
        serde_json::error::Category::Io => "read error",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_never_quote_the_value() {
        let e = serde_json::from_str::<Vec<u32>>(r#"["hunter2"]"#).unwrap_err();
        assert_eq!(
            json_error(&e),
            "unexpected JSON type or value at line 1 column 10"
        );
        let e = serde_json::from_str::<Vec<u32>>("[1,").unwrap_err();
        assert_eq!(json_error(&e), "JSON ends early at line 1 column 3");
    }

    #[test]
    fn short_text_is_untouched() {
        assert!(matches!(bounded("abc"), Cow::Borrowed("abc")));
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let text = "é".repeat(2000); // 4000 bytes, 2 bytes per char
        let cut = bounded_to(&text, 1023);
        assert!(cut.starts_with(&"é".repeat(511)));
        assert!(cut.ends_with("…[2978 more bytes]"), "{cut}");
        assert!(bounded(&text).len() < MAX_SERVER_TEXT + 32);
    }
}
