//! One masking function for a stream's secrets, in every form a server or a log can give them.
//!
//! A [`Secrets`] set holds a stream's secrets (`secret_key`, `client_secret`, a proxy password,
//! and the access tokens it fetched) and [`Secrets::mask`] replaces each of them with
//! `[REDACTED]` in any text: the request tracer's lines, the errors built from server answers
//! (a server may echo what it was sent), log lines and health messages.
//!
//! Echoes rarely come back raw. Each secret is matched however it was encoded on its way back:
//! every character that an encoder may touch can appear as itself, percent-encoded (upper or
//! lower hex, a space also as `+`) or JSON-escaped (`\"`, `\\`, `\/`, `\n`, `\u00XX`, under any
//! number of escaping levels, as when JSON sits in a JSON string). Base64 forms are matched too:
//! standard and URL-safe, padded or not, of the secret itself and of the `client_id:secret`
//! pair of an `Authorization: Basic` header (with the pair form-urlencoded first, as the
//! `oauth2` crate sends it).
//!
//! Secrets shorter than [`MIN_MASKED_LEN`] bytes are not masked: matching them would shred
//! every message ("k" would blank each `k`), and they protect nothing anyway.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use regex::{NoExpand, Regex};

/// What every masked secret is replaced with.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this are not masked.
pub(crate) const MIN_MASKED_LEN: usize = 4;

/// Fetched access tokens kept for masking: the current one and the one before (an answer to a
/// request made with it may still come in).
const TOKENS_KEPT: usize = 2;

/// A stream's secrets, shared by its HTTP client, its source and its counters: a token added
/// by one is masked by all. Cloning shares the set.
#[derive(Clone, Default)]
pub struct Secrets {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// The configured secrets' forms (raw and Base64), fixed for the stream's life.
    fixed: Vec<String>,
    /// The latest fetched tokens.
    tokens: VecDeque<String>,
    /// Every form of all of them, longest first; `None` when there is nothing to mask.
    pattern: Option<Regex>,
}

/// Never shows a secret: only how many there are.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (fixed, tokens) = self
            .inner
            .read()
            .map(|i| (i.fixed.len(), i.tokens.len()))
            .unwrap_or_default();
        f.debug_struct("Secrets")
            .field("forms", &fixed)
            .field("tokens", &tokens)
            .finish()
    }
}

impl Secrets {
    /// A set masking each of `secrets` (and its Base64 forms).
    pub(crate) fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut fixed = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.len() >= MIN_MASKED_LEN {
                fixed.push(secret.to_owned());
                fixed.extend(base64_forms(secret));
            }
        }
        Self::from_forms(fixed)
    }

    /// [`new`](Self::new) plus the `Authorization: Basic` forms of `client_id:secret`, raw and
    /// form-urlencoded (the OAuth2 client-credentials style).
    pub(crate) fn with_basic_credentials<S: AsRef<str>>(
        secrets: impl IntoIterator<Item = S>,
        client_id: &str,
        secret: &str,
    ) -> Self {
        let this = Self::new(secrets);
        if secret.len() >= MIN_MASKED_LEN {
            let urlencoded = |s: &str| -> String {
                url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
            };
            let pairs = [
                format!("{client_id}:{secret}"),
                format!("{}:{}", urlencoded(client_id), urlencoded(secret)),
            ];
            if let Ok(mut inner) = this.inner.write() {
                inner
                    .fixed
                    .extend(pairs.iter().flat_map(|p| base64_forms(p)));
                inner.rebuild();
            }
        }
        this
    }

    fn from_forms(fixed: Vec<String>) -> Self {
        let mut inner = Inner {
            fixed,
            ..Inner::default()
        };
        inner.rebuild();
        Self {
            inner: Arc::new(RwLock::new(inner)),
        }
    }

    /// Masks a fetched access token from now on (the previous one stays masked too).
    pub(crate) fn add_token(&self, token: &str) {
        if token.len() < MIN_MASKED_LEN {
            return;
        }
        if let Ok(mut inner) = self.inner.write() {
            if inner.tokens.iter().any(|t| t == token) {
                return;
            }
            if inner.tokens.len() == TOKENS_KEPT {
                inner.tokens.pop_front();
            }
            inner.tokens.push_back(token.to_owned());
            inner.rebuild();
        }
    }

    /// `text` with every form of every secret replaced by `[REDACTED]`.
    pub(crate) fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Ok(inner) = self.inner.read() else {
            return Cow::Borrowed(text);
        };
        match &inner.pattern {
            Some(re) => match re.replace_all(text, NoExpand(REDACTED)) {
                Cow::Borrowed(_) => Cow::Borrowed(text),
                Cow::Owned(masked) => Cow::Owned(masked),
            },
            None => Cow::Borrowed(text),
        }
    }

    /// Server text as it may be shown (in an error, a log line, a health message): masked
    /// first, then cut to [`crate::text::MAX_SERVER_TEXT`], so a secret straddling the cut
    /// leaves no piece behind.
    pub(crate) fn mask_bounded(&self, text: &str) -> String {
        crate::text::bounded(&self.mask(text)).into_owned()
    }

    /// [`mask`](Self::mask) for owned text.
    pub(crate) fn mask_owned(&self, text: String) -> String {
        match self.mask(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(masked) => masked,
        }
    }
}

impl Inner {
    fn rebuild(&mut self) {
        let token_forms: Vec<String> = self
            .tokens
            .iter()
            .flat_map(|t| std::iter::once(t.clone()).chain(base64_forms(t)))
            .collect();
        let mut forms: Vec<&str> = self
            .fixed
            .iter()
            .chain(token_forms.iter())
            .map(String::as_str)
            .collect();
        // Longest first: at one position the full form wins over a prefix of it (padded Base64
        // over unpadded).
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        if forms.is_empty() {
            self.pattern = None;
            return;
        }
        let alternatives: Vec<String> = forms.iter().map(|f| encodings(f)).collect();
        self.pattern = regex::RegexBuilder::new(&alternatives.join("|"))
            .size_limit(64 * 1024 * 1024)
            .build()
            .ok()
            // Unreachable in practice (the pattern is built from escaped text); never mask
            // nothing silently: fall back to the raw forms.
            .or_else(|| {
                let raw: Vec<String> = forms.iter().map(|f| regex::escape(f)).collect();
                Regex::new(&raw.join("|")).ok()
            });
    }
}

/// Standard and URL-safe Base64, padded and not.
fn base64_forms(text: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .map(|engine| engine.encode(text))
        .collect()
}

/// A regex matching `form` with each character as itself, percent-encoded or JSON-escaped.
fn encodings(form: &str) -> String {
    form.chars().map(char_encodings).collect()
}

/// One character's alternatives. Letters and digits are left as they are (no encoder in use
/// touches them); everything else may come back percent-encoded (`NON_ALPHANUMERIC` encoders
/// escape even RFC 3986's unreserved `-._~`) or JSON-escaped.
fn char_encodings(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        return c.to_string();
    }
    let mut alts = vec![regex::escape(c.encode_utf8(&mut [0; 4]))];
    // Percent-encoding, byte by byte, either case of hex; form encoding's `+` for a space.
    let mut percent = String::new();
    for b in c.encode_utf8(&mut [0; 4]).bytes() {
        let _ = write!(percent, "%{b:02x}");
    }
    alts.push(format!("(?i:{percent})"));
    if c == ' ' {
        alts.push(r"\+".to_owned());
    }
    // JSON escapes, under any number of escaping levels (each level doubles the backslashes,
    // so any run of them is accepted).
    let short = match c {
        '"' => Some("\""),
        '\\' => Some(r"\\"),
        '/' => Some("/"),
        '\n' => Some("n"),
        '\r' => Some("r"),
        '\t' => Some("t"),
        '\u{8}' => Some("b"),
        '\u{c}' => Some("f"),
        _ => None,
    };
    if let Some(s) = short {
        alts.push(format!(r"\\+{s}"));
    }
    let mut units = [0u16; 2];
    let escaped: String = c
        .encode_utf16(&mut units)
        .iter()
        .map(|u| format!(r"\\+u(?i:{u:04x})"))
        .collect();
    alts.push(escaped);
    format!("(?:{})", alts.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "tq\"Se\\cret Va1ue/+=ü!";

    fn assert_masked(secrets: &Secrets, form: &str) {
        let text = format!("before {form} after");
        assert_eq!(
            secrets.mask(&text),
            format!("before {REDACTED} after"),
            "form {form:?}"
        );
    }

    /// Lower-case hex digits in `%XX`, nothing else.
    fn lower_hex(text: &str) -> String {
        let mut out = String::new();
        let mut hex = 0;
        for c in text.chars() {
            if c == '%' {
                hex = 2;
                out.push(c);
            } else if hex > 0 {
                hex -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn raw_json_and_percent_forms_are_masked() {
        let s = Secrets::new([SECRET]);
        let json = serde_json::to_string(SECRET).unwrap();
        let json = &json[1..json.len() - 1];
        let twice = serde_json::to_string(json).unwrap();
        let form: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
        let percent =
            percent_encoding::utf8_percent_encode(SECRET, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        for f in [
            SECRET.to_owned(),
            json.to_owned(),
            twice[1..twice.len() - 1].to_owned(),
            json.replace('/', "\\/"),
            json.replace('ü', "\\u00fc").replace('"', "\\u0022"),
            form.clone(),
            lower_hex(&form),
            percent.clone(),
            lower_hex(&percent),
        ] {
            assert_masked(&s, &f);
        }
    }

    #[test]
    fn base64_and_basic_forms_are_masked() {
        let s = Secrets::with_basic_credentials([SECRET], "elastic", SECRET);
        let b64 = base64::engine::general_purpose::STANDARD;
        let form: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
        for f in [
            b64.encode(SECRET),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET),
            b64.encode(format!("elastic:{SECRET}")),
            b64.encode(format!("elastic:{form}")),
        ] {
            assert_masked(&s, &f);
        }
    }

    #[test]
    fn tokens_are_added_and_the_oldest_forgotten() {
        let s = Secrets::new(["configured"]);
        let shared = s.clone();
        shared.add_token("token-one");
        shared.add_token("token-two");
        assert_eq!(
            s.mask("token-one token-two configured"),
            "[REDACTED] [REDACTED] [REDACTED]"
        );
        shared.add_token("token-three");
        assert_eq!(s.mask("token-one"), "token-one");
        assert_eq!(s.mask("token-three"), REDACTED);
    }

    #[test]
    fn short_secrets_and_plain_text_are_left_alone() {
        let s = Secrets::new(["k", ""]);
        assert!(matches!(s.mask("keep this"), Cow::Borrowed("keep this")));
        assert_eq!(
            format!("{:?}", Secrets::new([SECRET])),
            "Secrets { forms: 5, tokens: 0 }"
        );
    }
}
