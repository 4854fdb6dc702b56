//! Value generators both simulators draw their deterministic data from.

use std::ops::RangeInclusive;

use rand::Rng as _;
use rand::seq::IndexedRandom as _;
use rand_chacha::ChaCha8Rng;

/// A deterministic, well-mixed seed for item `i` of stream `stream` (SplitMix64 finaliser).
pub fn mix(seed: u64, stream: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `bytes` random bytes as hex, upper- or lower-case.
pub fn hex(rng: &mut ChaCha8Rng, bytes: usize, upper: bool) -> String {
    (0..bytes)
        .map(|_| {
            let b: u8 = rng.random();
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// One of `items` (the first fallback when `items` is empty).
pub fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or_default()
}

/// A plausible malicious-looking domain built from `words` and `tlds`.
pub fn domain(rng: &mut ChaCha8Rng, words: &[&str], tlds: &[&str]) -> String {
    let a = pick(rng, words);
    let b = pick(rng, words);
    let tld = pick(rng, tlds);
    format!("{a}-{b}{}.{tld}", rng.random_range(1..1000))
}

/// A routable-looking IPv4 address (no private, loopback or reserved first octet).
pub fn ipv4(rng: &mut ChaCha8Rng) -> String {
    let first = [
        23u8, 31, 45, 62, 67, 77, 81, 89, 91, 103, 104, 107, 146, 185, 193, 212,
    ];
    format!(
        "{}.{}.{}.{}",
        first.choose(rng).copied().unwrap_or(45),
        rng.random_range(0..=255u8),
        rng.random_range(0..=255u8),
        rng.random_range(1..=254u8)
    )
}

/// A global-unicast-looking IPv6 address.
pub fn ipv6(rng: &mut ChaCha8Rng) -> String {
    format!(
        "2a0{}:{:x}:{:x}:{:x}::{:x}",
        rng.random_range(0..10u8),
        rng.random::<u16>(),
        rng.random::<u16>(),
        rng.random::<u16>(),
        rng.random::<u16>().max(1)
    )
}

/// How many entries a block draws: `default`, or `rich` under `--rich-context`.
pub fn sized(
    rich: bool,
    default: RangeInclusive<usize>,
    rich_range: RangeInclusive<usize>,
) -> RangeInclusive<usize> {
    if rich { rich_range } else { default }
}

/// Sentences an analyst's write-up is assembled from (`--rich-context` attributes).
const ANALYSIS: [&str; 10] = [
    "The sample beacons every 60 seconds over HTTPS with a hard-coded user agent.",
    "Infrastructure overlaps with a cluster tracked since early 2023, sharing TLS certificates and registrar.",
    "Delivery was observed through invoice-themed phishing with password-protected archives.",
    "The loader injects into a signed Windows process and disables script block logging.",
    "Passive DNS shows the domain rotating across three hosting providers within a week.",
    "Sandbox detonation dropped a second-stage payload from a content delivery network.",
    "Victims are concentrated in finance and logistics in Western Europe and North America.",
    "Persistence is set through a Run key and a scheduled task named after an updater.",
    "Operators used living-off-the-land binaries for discovery before moving laterally over SMB.",
    "Confidence is moderate: the overlap rests on tooling, not on operator mistakes.",
];

/// An analyst-length paragraph of two to eight sentences (about 150 to 800 characters).
pub fn analysis(rng: &mut ChaCha8Rng) -> String {
    let n = rng.random_range(2..=8usize);
    (0..n)
        .map(|_| pick(rng, &ANALYSIS))
        .collect::<Vec<_>>()
        .join(" ")
}
