//! A small, platform-neutral reader for validating one configuration map.
//!
//! Every stream of every platform is validated the same way: a [`FieldReader`] is opened on the
//! map at a dotted path (`inputs[0].streams[1]`), typed fields are taken out of it one by one
//! (each with a named default function), every bad value becomes a [`Problem`] naming its field
//! and the offending value, and [`FieldReader::finish`] reports every key nobody asked for as an
//! `unknown field`. Nothing stops at the first problem: the user sees them all at once, in the
//! style of the OpenTelemetry Collector's `Validate()`.
//!
//! Secret fields never have their value echoed in a problem.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use url::Url;

use super::duration::{IocExpiration, format_duration, parse_duration};
use super::size::{format_size, parse_size};
use super::{Problem, SslConfig, TlsVersion, VerificationMode};

/// The largest duration any option accepts (100 years): anything above is a typo, and it keeps
/// date arithmetic (`now - initial_interval`) far from overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// Durations that must be strictly positive (`interval`, `http_client_timeout`, ...).
pub(crate) const POSITIVE_DURATION: RangeInclusive<Duration> =
    Duration::from_nanos(1)..=MAX_DURATION;

/// Durations where zero is meaningful (`initial_interval`: start from now).
pub(crate) const NON_NEGATIVE_DURATION: RangeInclusive<Duration> = Duration::ZERO..=MAX_DURATION;

/// Joins a parent path and a key: `("inputs[0]", "id")` → `inputs[0].id`, `("", "inputs")` →
/// `inputs`.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Joins a parent path and a list index: `("inputs", 0)` → `inputs[0]`.
pub(crate) fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Describes a value for a problem message: its kind and, for scalars, the value itself.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a map".to_owned(),
    }
}

/// Describes only the kind of a value, for secret fields whose value must never be echoed.
pub(crate) fn describe_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Hides the password of a URL's user info (`http://user:[REDACTED]@proxy:3128/`).
pub(crate) fn redact_url(url: &Url) -> String {
    if url.password().is_some() {
        let mut shown = url.clone();
        // Setting a password only fails for URLs that cannot carry one, and those have none.
        let _ = shown.set_password(Some("[REDACTED]"));
        shown.to_string()
    } else {
        url.to_string()
    }
}

/// Hides anything that looks like user info in a URL that did not even parse.
fn redact_url_text(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://[REDACTED]{}", &text[..scheme_end], &text[at..])
        }
        (None, Some(at)) => format!("[REDACTED]{}", &text[at..]),
        _ => text.to_owned(),
    }
}

/// Levenshtein distance, for "did you mean" hints on unknown keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Reads typed fields out of one configuration map and collects every problem.
#[derive(Debug)]
pub struct FieldReader<'a> {
    path: String,
    map: &'a Map<String, Value>,
    /// Every key a caller asked about, present or not: what the map may contain.
    known: BTreeSet<String>,
    problems: Vec<Problem>,
}

impl<'a> FieldReader<'a> {
    /// Opens a reader on `map`, whose own path is `path` (`""` for the document root).
    pub(crate) fn new(path: impl Into<String>, map: &'a Map<String, Value>) -> Self {
        Self {
            path: path.into(),
            map,
            known: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// Opens a reader on `value`, or returns the problem "must be a map" naming `path`.
    pub fn open(path: impl Into<String>, value: &'a Value) -> Result<Self, Problem> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Self::new(path, map)),
            other => Err(Problem {
                message: format!("must be a map, got {}", describe(other)),
                field: if path.is_empty() {
                    "<root>".to_owned()
                } else {
                    path
                },
            }),
        }
    }

    /// This reader's own path.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The full path of one of this map's keys.
    pub(crate) fn field(&self, key: &str) -> String {
        join_key(&self.path, key)
    }

    /// Records a problem about one of this map's keys.
    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let field = self.field(key);
        self.problems.push(Problem {
            field,
            message: message.into(),
        });
    }

    /// Records a problem with an already-built path (a list element, a nested field).
    pub(crate) fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Takes over problems found by someone else (a nested reader, a cross-field check).
    pub(crate) fn absorb(&mut self, problems: impl IntoIterator<Item = Problem>) {
        self.problems.extend(problems);
    }

    /// Whether any problem has been recorded so far.
    pub(crate) fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// The keys present in the map, for maps whose keys are names (`outputs`).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.map.keys().map(String::as_str)
    }

    /// A string value, read without marking the key as checked (to choose how to read the rest).
    pub(crate) fn peek_str(&self, key: &str) -> Option<&'a str> {
        self.map.get(key).and_then(Value::as_str)
    }

    /// Accepts every key of the map without checking it (used once the map's type is already
    /// reported as unsupported, so its other keys are not reported too).
    pub(crate) fn accept_rest(&mut self) {
        self.known.extend(self.map.keys().cloned());
    }

    /// Marks keys as accepted and deliberately ignored (envelope keys of an Agent policy).
    pub(crate) fn ignore(&mut self, keys: &[&str]) {
        self.known.extend(keys.iter().map(|k| (*k).to_owned()));
    }

    /// Takes a raw value. `null` counts as absent, so `tql:` with nothing after it means "unset".
    pub(crate) fn raw(&mut self, key: &str) -> Option<&'a Value> {
        self.known.insert(key.to_owned());
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn missing(&mut self, key: &str) {
        self.problem(key, "required field is missing");
    }

    fn string_value(&mut self, key: &str, value: &'a Value) -> Option<&'a str> {
        match value {
            Value::String(s) => Some(s),
            Value::Number(_) => {
                self.problem(
                    key,
                    format!(
                        "must be a string, got {} (quote it: YAML reads unquoted digits as a number)",
                        describe(value)
                    ),
                );
                None
            }
            other => {
                self.problem(key, format!("must be a string, got {}", describe(other)));
                None
            }
        }
    }

    /// A required, non-empty string.
    pub(crate) fn required_string(&mut self, key: &str) -> Option<String> {
        let Some(value) = self.raw(key) else {
            self.missing(key);
            return None;
        };
        let text = self.string_value(key, value)?;
        if text.trim().is_empty() {
            self.problem(key, "must not be empty");
            return None;
        }
        Some(text.to_owned())
    }

    /// An optional string, as written (it may be empty).
    pub(crate) fn optional_string(&mut self, key: &str) -> Option<String> {
        let value = self.raw(key)?;
        self.string_value(key, value).map(str::to_owned)
    }

    /// A non-empty string with a default.
    pub(crate) fn string_or(&mut self, key: &str, default: impl FnOnce() -> String) -> String {
        let Some(value) = self.raw(key) else {
            return default();
        };
        match self.string_value(key, value) {
            Some(text) if text.trim().is_empty() => {
                self.problem(key, "must not be empty");
                default()
            }
            Some(text) => text.to_owned(),
            None => default(),
        }
    }

    fn secret_value(&mut self, key: &str, value: &'a Value) -> Option<SecretString> {
        match value {
            Value::String(s) => Some(SecretString::from(s.clone())),
            other => {
                // Never echo a secret, not even a mistyped one.
                self.problem(
                    key,
                    format!(
                        "must be a string, got {} (value not shown)",
                        describe_kind(other)
                    ),
                );
                None
            }
        }
    }

    /// A required, non-empty secret. Its value never appears in a problem.
    pub(crate) fn required_secret(&mut self, key: &str) -> Option<SecretString> {
        let Some(value) = self.raw(key) else {
            self.missing(key);
            return None;
        };
        let secret = self.secret_value(key, value)?;
        if secret.expose_secret().trim().is_empty() {
            self.problem(key, "must not be empty");
            return None;
        }
        Some(secret)
    }

    /// An optional secret. Its value never appears in a problem.
    pub(crate) fn optional_secret(&mut self, key: &str) -> Option<SecretString> {
        let value = self.raw(key)?;
        self.secret_value(key, value)
    }

    /// A YAML boolean (`true`/`false`); strings such as `"yes"` are refused.
    pub(crate) fn bool_or(&mut self, key: &str, default: fn() -> bool) -> bool {
        match self.raw(key) {
            None => default(),
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.problem(
                    key,
                    format!("must be true or false, got {}", describe(other)),
                );
                default()
            }
        }
    }

    /// A YAML integer within `range`.
    pub(crate) fn integer_in<T>(
        &mut self,
        key: &str,
        range: RangeInclusive<T>,
        default: fn() -> T,
    ) -> T
    where
        T: TryFrom<i128> + PartialOrd + Display + Copy,
    {
        let Some(value) = self.raw(key) else {
            return default();
        };
        let out_of_range = |v: &dyn Display| {
            format!(
                "must be an integer between {} and {}, got {v}",
                range.start(),
                range.end()
            )
        };
        let wide: Option<i128> = match value {
            Value::Number(n) => n
                .as_u64()
                .map(i128::from)
                .or_else(|| n.as_i64().map(i128::from)),
            _ => None,
        };
        let Some(wide) = wide else {
            let message = format!(
                "must be an integer between {} and {}, got {}",
                range.start(),
                range.end(),
                describe(value)
            );
            self.problem(key, message);
            return default();
        };
        match T::try_from(wide) {
            Ok(v) if range.contains(&v) => v,
            _ => {
                let message = out_of_range(&wide);
                self.problem(key, message);
                default()
            }
        }
    }

    fn duration_value(
        &mut self,
        key: &str,
        text: &str,
        range: &RangeInclusive<Duration>,
    ) -> Option<Duration> {
        match parse_duration(text) {
            Err(e) => {
                self.problem(key, e.to_string());
                None
            }
            Ok(d) if d < *range.start() && *range.start() == Duration::from_nanos(1) => {
                self.problem(key, format!("must be greater than zero, got {text:?}"));
                None
            }
            Ok(d) if !range.contains(&d) => {
                let message = format!(
                    "must be between {} and {}, got {text:?}",
                    format_duration(*range.start()),
                    format_duration(*range.end())
                );
                self.problem(key, message);
                None
            }
            Ok(d) => Some(d),
        }
    }

    /// A duration (`24h`, `2m`, `90d`, `1h30m`) parsed by [`parse_duration`], within `range`.
    pub(crate) fn duration_in(
        &mut self,
        key: &str,
        range: RangeInclusive<Duration>,
        default: fn() -> Duration,
    ) -> Duration {
        let Some(value) = self.raw(key) else {
            return default();
        };
        let Some(text) = self.duration_text(key, value) else {
            return default();
        };
        self.duration_value(key, text, &range)
            .unwrap_or_else(default)
    }

    fn duration_text(&mut self, key: &str, value: &'a Value) -> Option<&'a str> {
        match value {
            Value::String(s) => Some(s),
            other => {
                self.problem(
                    key,
                    format!(
                        "must be a duration with a unit such as \"24h\" or \"90d\", got {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    /// A byte size (`256MiB`, `8 MB`, `1048576`) parsed by [`parse_size`], within `range`.
    pub(crate) fn size_in(
        &mut self,
        key: &str,
        range: RangeInclusive<u64>,
        default: fn() -> u64,
    ) -> u64 {
        let Some(value) = self.raw(key) else {
            return default();
        };
        let bounds = format!(
            "between {} and {}",
            format_size(*range.start()),
            format_size(*range.end())
        );
        let parsed = match value {
            Value::String(text) => parse_size(text).ok_or_else(|| {
                format!(
                    "must be a size with a unit such as \"256MiB\" (KiB, MiB, GiB are powers of \
                     1024; KB, MB, GB of 1000), got {}",
                    describe(value)
                )
            }),
            other => Err(format!(
                "must be a size with a unit such as \"256MiB\", got {}",
                describe(other)
            )),
        };
        match parsed {
            Ok(size) if range.contains(&size) => size,
            Ok(_) => {
                self.problem(key, format!("must be {bounds}, got {}", describe(value)));
                default()
            }
            Err(message) => {
                self.problem(key, message);
                default()
            }
        }
    }

    /// An IOC expiration window (`ioc_expiration_duration`): strictly positive, and in the only
    /// form Elastic's ingest pipelines understand, a whole number followed by one of `d`, `h`
    /// or `m` (they silently turn `30s` into 90 days and fail on `1d12h` or `1.5d`).
    pub(crate) fn ioc_expiration_or(
        &mut self,
        key: &str,
        default: fn() -> IocExpiration,
    ) -> IocExpiration {
        let Some(value) = self.raw(key) else {
            return default();
        };
        let Some(text) = self.duration_text(key, value) else {
            return default();
        };
        if self.duration_value(key, text, &POSITIVE_DURATION).is_none() {
            return default();
        }
        match IocExpiration::parse(text) {
            Ok(expiration) => expiration,
            Err(e) => {
                self.problem(key, e.to_string());
                default()
            }
        }
    }

    fn url_value(&mut self, key: &str, value: &'a Value) -> Option<Url> {
        let text = self.string_value(key, value)?;
        match Url::parse(text.trim()) {
            Err(e) => {
                let shown = redact_url_text(text);
                self.problem(key, format!("is not a valid URL ({e}), got {shown:?}"));
                None
            }
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                let shown = redact_url_text(text);
                self.problem(
                    key,
                    format!(
                        "must be an http or https URL, got scheme {:?} in {shown:?}",
                        url.scheme()
                    ),
                );
                None
            }
            Ok(url) => Some(url),
        }
    }

    /// An optional http/https URL.
    pub(crate) fn optional_url(&mut self, key: &str) -> Option<Url> {
        let value = self.raw(key)?;
        self.url_value(key, value)
    }

    /// An http/https URL with a default. Returns `None` only when the given value is bad.
    pub(crate) fn url_or(&mut self, key: &str, default: fn() -> Url) -> Option<Url> {
        match self.raw(key) {
            None => Some(default()),
            Some(value) => self.url_value(key, value),
        }
    }

    /// A list of strings with a default (an empty list is allowed).
    pub(crate) fn string_list_or(
        &mut self,
        key: &str,
        default: fn() -> Vec<String>,
    ) -> Vec<String> {
        match self.raw(key) {
            None => default(),
            Some(value) => self.string_list(key, value).unwrap_or_else(default),
        }
    }

    fn string_list(&mut self, key: &str, value: &'a Value) -> Option<Vec<String>> {
        let Value::Array(items) = value else {
            self.problem(
                key,
                format!("must be a list of strings, got {}", describe(value)),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => {
                    ok = false;
                    self.problems.push(Problem {
                        field: join_index(&self.field(key), i),
                        message: format!("must be a string, got {}", describe(other)),
                    });
                }
            }
        }
        ok.then_some(out)
    }

    /// A nested map, as its own reader. The caller validates it and hands its
    /// [`finish`](Self::finish) result back with [`absorb`](Self::absorb).
    pub(crate) fn object(&mut self, key: &str) -> Option<FieldReader<'a>> {
        let value = self.raw(key)?;
        match FieldReader::open(self.field(key), value) {
            Ok(reader) => Some(reader),
            Err(problem) => {
                self.problems.push(problem);
                None
            }
        }
    }

    /// A list, as `(path, element)` pairs. Absent → `None` without a problem.
    pub(crate) fn list(&mut self, key: &str) -> Option<Vec<(String, &'a Value)>> {
        let value = self.raw(key)?;
        let Value::Array(items) = value else {
            self.problem(key, format!("must be a list, got {}", describe(value)));
            return None;
        };
        let base = self.field(key);
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (join_index(&base, i), v))
                .collect(),
        )
    }

    /// Refuses a key that is recognised but not supported (`processors`).
    pub(crate) fn unsupported(&mut self, key: &str, why: &str) {
        if self.raw(key).is_some() {
            self.problem(key, format!("not supported: {why}"));
        }
    }

    /// Elastic's `ssl` block. Absent → `None`; with problems → `None` and problems recorded.
    pub(crate) fn ssl(&mut self, key: &str) -> Option<SslConfig> {
        let value = self.raw(key)?;
        // The integrations' `ssl` variable is YAML text (ThreatQ's default is the comment
        // `#verification_mode: none`): text is read as the YAML it holds, and text that is empty
        // or only comments means "no ssl settings".
        let parsed;
        let value = match value {
            Value::String(text) => match serde_norway::from_str::<Value>(text) {
                Ok(Value::Null) => return None,
                Ok(v @ Value::Object(_)) => {
                    parsed = v;
                    &parsed
                }
                Ok(other) => {
                    // Never the text itself: it may hold an inline key.
                    let what = describe_kind(&other);
                    self.problem(key, format!("must be a map of ssl settings (or YAML text of one), got text holding {what}"));
                    return None;
                }
                Err(e) => {
                    let at = e
                        .location()
                        .map(|l| format!(" at line {}", l.line()))
                        .unwrap_or_default();
                    self.problem(key, format!("text is not valid YAML{at}"));
                    return None;
                }
            },
            other => other,
        };
        let mut block = match FieldReader::open(self.field(key), value) {
            Ok(reader) => reader,
            Err(problem) => {
                self.problems.push(problem);
                return None;
            }
        };
        let ssl = read_ssl(&mut block);
        let problems = block.finish();
        let ok = problems.is_empty();
        self.absorb(problems);
        ssl.filter(|_| ok)
    }

    /// Ends validation of this map: every key nobody asked about is an `unknown field`.
    /// Returns every problem found in the map, in order.
    pub fn finish(mut self) -> Vec<Problem> {
        for key in self.map.keys() {
            if self.known.contains(key) {
                continue;
            }
            let hint = self
                .known
                .iter()
                .map(|k| (edit_distance(key, k), k))
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, k)| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            let known = self.known.iter().map(String::as_str).collect::<Vec<_>>();
            self.problems.push(Problem {
                field: join_key(&self.path, key),
                message: format!("unknown field{hint} (known fields: {})", known.join(", ")),
            });
        }
        self.problems
    }
}

/// Checks a certificate or CA entry exactly as the clients will read it ([`crate::pem`]).
fn check_cert_source(field: String, text: &str, problems: &mut Vec<Problem>) {
    if let Err(e) = crate::pem::certificates(text) {
        problems.push(Problem {
            field,
            message: e.to_string(),
        });
    }
}

/// Beats `ssl` keys that rustls does not offer, with what to do instead.
const UNSUPPORTED_SSL_KEYS: &[(&str, &str)] = &[
    (
        "cipher_suites",
        "rustls negotiates only its safe suites (TLS 1.3 AES-GCM and \
         ChaCha20-Poly1305; TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305); remove it, or set \
         `supported_protocols: [TLSv1.3]` to require TLS 1.3",
    ),
    (
        "curve_types",
        "rustls offers X25519, P-256 and P-384; remove it",
    ),
    (
        "renegotiation",
        "rustls never renegotiates (TLS 1.3 has no renegotiation); remove it",
    ),
];

/// `ca_trusted_fingerprint`: 64 hex digits, in either case, optionally separated by colons (as
/// openssl prints it).
fn parse_sha256_fingerprint(text: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hex = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// Reads the fields of an `ssl` block; the caller finishes the reader.
fn read_ssl(r: &mut FieldReader<'_>) -> Option<SslConfig> {
    let mut ssl = SslConfig::default();
    let mut found = Vec::new();

    if let Some(cas) = r.raw("certificate_authorities")
        && let Some(list) = r.string_list("certificate_authorities", cas)
    {
        let base = r.field("certificate_authorities");
        for (i, ca) in list.iter().enumerate() {
            check_cert_source(join_index(&base, i), ca, &mut found);
        }
        ssl.certificate_authorities = list;
    }

    if let Some(mode) = r.optional_string("verification_mode") {
        match mode.as_str() {
            "full" | "strict" => ssl.verification_mode = VerificationMode::Full,
            "certificate" => ssl.verification_mode = VerificationMode::Certificate,
            "none" => ssl.verification_mode = VerificationMode::None,
            other => r.problem(
                "verification_mode",
                format!("must be one of full, strict, certificate, none; got {other:?}"),
            ),
        }
    }

    ssl.certificate = r.optional_string("certificate");
    if let Some(cert) = &ssl.certificate {
        check_cert_source(r.field("certificate"), cert, &mut found);
    }

    ssl.key = r.optional_secret("key");
    ssl.key_passphrase = r.optional_secret("key_passphrase");
    if let Some(Err(e)) = ssl.private_key() {
        // The same reading as the clients': a key that validates is a key that loads, and the
        // problem names a path at most, never key material or the passphrase.
        r.problem("key", e.to_string());
    }

    match (&ssl.certificate, &ssl.key) {
        (Some(_), None) => r.problem("key", "required when `certificate` is set"),
        (None, Some(_)) => r.problem("certificate", "required when `key` is set"),
        _ => {}
    }
    if ssl.key.is_none() && ssl.key_passphrase.is_some() {
        r.problem(
            "key_passphrase",
            "set without `key`: it decrypts the client key",
        );
    }

    if let Some(raw) = r.raw("supported_protocols")
        && let Some(list) = r.string_list("supported_protocols", raw)
    {
        for (i, name) in list.iter().enumerate() {
            match name.as_str() {
                "TLSv1.2" => ssl.supported_protocols.push(TlsVersion::Tls12),
                "TLSv1.3" => ssl.supported_protocols.push(TlsVersion::Tls13),
                "TLSv1.1" | "TLSv1.0" | "SSLv3" => found.push(Problem {
                    field: join_index(&r.field("supported_protocols"), i),
                    message: format!(
                        "{name} is not supported (it is insecure, and rustls speaks TLSv1.2 and \
                         TLSv1.3 only); remove it, and have the server offer TLSv1.2 or later"
                    ),
                }),
                other => found.push(Problem {
                    field: join_index(&r.field("supported_protocols"), i),
                    message: format!("must be TLSv1.2 or TLSv1.3, got {other:?}"),
                }),
            }
        }
        if list.is_empty() {
            r.problem(
                "supported_protocols",
                "must not be empty (omit it for TLSv1.2 and TLSv1.3)",
            );
        }
    }

    if let Some(text) = r.optional_string("ca_trusted_fingerprint") {
        match parse_sha256_fingerprint(&text) {
            Some(fp) => ssl.ca_trusted_fingerprint = Some(fp),
            None => r.problem(
                "ca_trusted_fingerprint",
                format!(
                    "must be the SHA-256 of a CA certificate as 64 hex digits (colons allowed), \
                     got {} characters; `openssl x509 -noout -fingerprint -sha256 -in ca.pem` \
                     prints it",
                    text.chars().count()
                ),
            ),
        }
    }

    for (key, instead) in UNSUPPORTED_SSL_KEYS {
        r.unsupported(key, instead);
    }

    r.absorb(found);
    Some(ssl)
}

/// Refuses a platform URL with user info: credentials in a URL end up in proxies' and servers'
/// logs, and the platform authenticates with `auth` anyway. The value is not echoed.
pub(crate) fn refuse_credentials(
    r: &mut FieldReader<'_>,
    key: &str,
    url: Url,
    auth: &str,
) -> Option<Url> {
    if !url.username().is_empty() || url.password().is_some() {
        r.problem(
            key,
            format!(
                "must not contain credentials (value not shown; the platform authenticates with \
                 {auth})"
            ),
        );
        return None;
    }
    Some(url)
}

/// Checks a platform base URL: no credentials (the platform authenticates with `auth`), no
/// query or fragment; trailing `/` are stripped from its path.
pub(crate) fn check_base_url(
    r: &mut FieldReader<'_>,
    key: &str,
    url: Url,
    auth: &str,
) -> Option<Url> {
    let mut url = refuse_credentials(r, key, url, auth)?;
    if url.query().is_some() || url.fragment().is_some() {
        r.problem(
            key,
            format!("must not have a query or fragment, got {:?}", url.as_str()),
        );
        return None;
    }
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Some(url)
}

/// `base` with `segments` appended to its path, for the API endpoints of a validated base URL.
/// Every URL this module accepts is http or https, and such a URL always takes path segments,
/// so the join cannot fail; building a request URL at run time then only sets its query.
pub(crate) fn endpoint<'a>(base: &Url, segments: impl IntoIterator<Item = &'a str>) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Renders an `ssl` block for [`redacted_json`](crate::policy::Config::redacted_json).
pub fn ssl_to_json(ssl: &SslConfig) -> Value {
    let mut map = Map::new();
    map.insert(
        "certificate_authorities".into(),
        Value::from(ssl.certificate_authorities.clone()),
    );
    let mode = match ssl.verification_mode {
        VerificationMode::Full => "full",
        VerificationMode::Certificate => "certificate",
        VerificationMode::None => "none",
    };
    map.insert("verification_mode".into(), Value::from(mode));
    if let Some(cert) = &ssl.certificate {
        map.insert("certificate".into(), Value::from(cert.clone()));
    }
    if ssl.key.is_some() {
        map.insert("key".into(), Value::from(super::REDACTED));
    }
    if ssl.key_passphrase.is_some() {
        map.insert("key_passphrase".into(), Value::from(super::REDACTED));
    }
    if !ssl.supported_protocols.is_empty() {
        let names: Vec<&str> = ssl.supported_protocols.iter().map(|v| v.name()).collect();
        map.insert("supported_protocols".into(), Value::from(names));
    }
    if let Some(fp) = &ssl.ca_trusted_fingerprint {
        let hex: String = fp.iter().map(|b| format!("{b:02x}")).collect();
        map.insert("ca_trusted_fingerprint".into(), Value::from(hex));
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read<T>(value: Value, f: impl FnOnce(&mut FieldReader<'_>) -> T) -> (T, Vec<Problem>) {
        let mut r = FieldReader::open("s", &value).expect("a map");
        let out = f(&mut r);
        (out, r.finish())
    }

    #[test]
    fn unknown_fields_are_reported_with_a_hint() {
        let (_, problems) = read(json!({"batch_sise": 1, "zzz": 2}), |r| {
            r.integer_in("batch_size", 1u32..=10, || 5)
        });
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].field, "s.batch_sise");
        assert!(problems[0].message.contains("did you mean `batch_size`"));
        assert_eq!(problems[1].field, "s.zzz");
        assert!(problems[1].message.starts_with("unknown field"));
    }

    #[test]
    fn integers_are_bounded_and_typed() {
        let (v, p) = read(json!({"n": 0}), |r| r.integer_in("n", 1u32..=10, || 5));
        assert_eq!(v, 5);
        assert!(p[0].message.contains("got 0"), "{p:?}");
        let (_, p) = read(json!({"n": "abc"}), |r| r.integer_in("n", 1u32..=10, || 5));
        assert!(p[0].message.contains("string \"abc\""), "{p:?}");
        let (_, p) = read(json!({"n": -3}), |r| r.integer_in("n", 1u32..=10, || 5));
        assert!(p[0].message.contains("got -3"), "{p:?}");
        let (_, p) = read(json!({"n": 2.5}), |r| r.integer_in("n", 1u32..=10, || 5));
        assert!(p[0].message.contains("2.5"), "{p:?}");
        let (v, p) = read(json!({"n": 10}), |r| r.integer_in("n", 1u32..=10, || 5));
        assert_eq!((v, p.len()), (10, 0));
    }

    #[test]
    fn secrets_are_never_echoed() {
        let (_, p) = read(json!({"k": 123456}), |r| r.required_secret("k"));
        assert!(!p[0].message.contains("123456"), "{p:?}");
        let (v, p) = read(json!({"k": "  "}), |r| r.required_secret("k"));
        assert!(v.is_none());
        assert_eq!(p[0].message, "must not be empty");
    }

    #[test]
    fn sizes_have_units_and_bounds() {
        let size = |v: Value| read(json!({ "m": v }), |r| r.size_in("m", 1024..=4096, || 2048));
        assert_eq!(size(json!("4KiB")), (4096, vec![]));
        let (v, p) = size(json!("5KiB"));
        assert_eq!(v, 2048);
        assert_eq!(
            p[0].message,
            "must be between 1 KiB and 4 KiB, got string \"5KiB\""
        );
        let (_, p) = size(json!(2048));
        assert!(p[0].message.contains("with a unit"), "{p:?}");
        let (_, p) = size(json!("2 parsecs"));
        assert!(p[0].message.contains("\"2 parsecs\""), "{p:?}");
    }

    #[test]
    fn null_counts_as_absent() {
        let (v, p) = read(json!({"b": null}), |r| r.bool_or("b", || true));
        assert!(v);
        assert!(p.is_empty());
    }

    #[test]
    fn urls_hide_passwords() {
        let (_, p) = read(json!({"u": "ftp://user:hunter2@proxy"}), |r| {
            r.optional_url("u")
        });
        assert!(!p[0].message.contains("hunter2"), "{p:?}");
        let (_, p) = read(json!({"u": "user:hunter2@proxy"}), |r| r.optional_url("u"));
        assert!(!p[0].message.contains("hunter2"), "{p:?}");
    }

    #[test]
    fn ioc_expiration_must_suit_the_pipeline() {
        for bad in ["1d12h", "1.5d", "30s", "0d", "2M"] {
            let (_, p) = read(json!({ "e": bad }), |r| {
                r.ioc_expiration_or("e", || IocExpiration {
                    raw: "90d".into(),
                    duration: Duration::from_secs(90 * 86_400),
                })
            });
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
        }
        let (v, p) = read(json!({"e": "36h"}), |r| {
            r.ioc_expiration_or("e", || unreachable!())
        });
        assert!(p.is_empty());
        assert_eq!(v.duration, Duration::from_secs(36 * 3_600));
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }
}
