//! ThreatConnect's HMAC-SHA256 request signature (API spec §4).
//!
//! The string to sign is `<path>[?<query>]:<METHOD>:<timestamp>`, built from the exact bytes
//! that go on the wire, and the signature is standard Base64 of HMAC-SHA256 keyed by the secret.
//! The simulator verifies with the same function, so the two can never drift apart.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The text ThreatConnect signs: `path_and_query:METHOD:timestamp`.
pub(crate) fn string_to_sign(path_and_query: &str, method: &str, timestamp: i64) -> String {
    format!(
        "{path_and_query}:{}:{timestamp}",
        method.to_ascii_uppercase()
    )
}

/// Base64 HMAC-SHA256 of `message` keyed by `secret_key`.
pub(crate) fn signature(secret_key: &[u8], message: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a Base64 `signature` of `message` in constant time (the HMAC crate's `verify_slice`).
pub fn verify(secret_key: &[u8], message: &str, signature: &str) -> bool {
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac.verify_slice(&sig).is_ok()
}

/// The `Authorization` header value: `TC <access_id>:<signature>`.
pub fn authorization(
    access_id: &str,
    secret_key: &[u8],
    path_and_query: &str,
    method: &str,
    timestamp: i64,
) -> String {
    let sig = signature(
        secret_key,
        &string_to_sign(path_and_query, method, timestamp),
    );
    format!("TC {access_id}:{sig}")
}

/// The request target as it goes on the wire: the path, plus `?query` only when there is one.
pub fn path_and_query(url: &url::Url) -> String {
    match url.query() {
        Some(q) if !q.is_empty() => format!("{}?{q}", url.path()),
        _ => url.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS_ID: &str = "12345678901234567890";
    const SECRET: &[u8] = b"aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcd";

    /// The worked example of API spec §4, including the full URL as Elastic's CEL builds it.
    #[test]
    fn hmac_vector_from_the_spec() {
        let url = url::Url::parse(
            "https://app.threatconnect.com/api/v3/indicators?fields=securityLabels&fields=sightings&fields=tags&fields=threatAssess&resultLimit=2000&resultStart=0&sorting=lastModified+asc&tql=lastModified+GEQ+%222023-11-28T08%3A00%3A00Z%22",
        )
        .unwrap();
        assert_eq!(
            authorization(
                ACCESS_ID,
                SECRET,
                &path_and_query(&url),
                "GET",
                1_701_763_200
            ),
            "TC 12345678901234567890:EhYxx00cJsViOQ4MUhVT/6p9xKHjF76pCEv0Wj/YRvo="
        );
    }

    #[test]
    fn more_vectors_from_the_spec() {
        assert_eq!(
            signature(
                SECRET,
                "/api/v3/indicators?resultStart=15&resultLimit=10:GET:1513703787"
            ),
            "S3XevC+nB4yjGlsW0e/ItQg4sjMekbB9LZkiefJA47U="
        );
        assert_eq!(
            signature(
                SECRET,
                &string_to_sign("/api/v3/indicators", "get", 1_513_703_787)
            ),
            "Y+5Uy/4N1Oj9v6M4DAxwT3q0RDQdrCwMLURVSXIx++k="
        );
        assert_eq!(
            signature(
                b"secret",
                "/api/v3/indicators?resultLimit=100:GET:1513703787"
            ),
            "Q0TLcet0koNW9yHAw37K3/ETbdj7ohQQKyzJPCskOaA="
        );
    }

    #[test]
    fn verify_accepts_only_the_right_signature() {
        let msg = "/api/v3/indicators:GET:1513703787";
        assert!(verify(
            SECRET,
            msg,
            "Y+5Uy/4N1Oj9v6M4DAxwT3q0RDQdrCwMLURVSXIx++k="
        ));
        assert!(!verify(
            SECRET,
            msg,
            "S3XevC+nB4yjGlsW0e/ItQg4sjMekbB9LZkiefJA47U="
        ));
        assert!(!verify(SECRET, msg, "not base64!"));
    }

    #[test]
    fn no_question_mark_without_query() {
        let url = url::Url::parse("https://h/api/v3/indicators").unwrap();
        assert_eq!(path_and_query(&url), "/api/v3/indicators");
    }
}
