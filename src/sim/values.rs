//! Value generators both simulators draw their deterministic data from.

use std::ops::RangeInclusive;

use rand::Rng as _;
use rand::seq::IndexedRandom as _;
use rand_chacha::ChaCha8Rng;

/// Top-level domains of generated host names.
pub(crate) const TLDS: [&str; 8] = ["com", "net", "org", "info", "ru", "xyz", "top", "io"];

/// Words that generated host names, paths and registry keys are made of.
pub(crate) const WORDS: [&str; 16] = [
    "update", "secure", "login", "cdn", "mail", "portal", "files", "account", "verify", "cloud",
    "static", "api", "support", "billing", "docs", "auth",
];

/// Malware families named in descriptions, tags, user agents and groups.
pub(crate) const MALWARE: [&str; 8] = [
    "Emotet",
    "QakBot",
    "AgentTesla",
    "RedLine",
    "Cobalt Strike",
    "IcedID",
    "LockBit",
    "AsyncRAT",
];

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

/// A plausible malicious-looking domain built from [`WORDS`] and [`TLDS`].
pub fn domain(rng: &mut ChaCha8Rng) -> String {
    let a = pick(rng, &WORDS);
    let b = pick(rng, &WORDS);
    let tld = pick(rng, &TLDS);
    format!("{a}-{b}{}.{tld}", rng.random_range(1..1000))
}

/// `https://<domain>/<word>/<hex>.php?id=<n>`: a phishing or loader URL.
pub(crate) fn php_url(rng: &mut ChaCha8Rng, word: &str) -> String {
    format!(
        "https://{}/{word}/{}.php?id={}",
        domain(rng),
        hex(rng, 3, false),
        rng.random_range(1..10_000)
    )
}

/// A mailbox on a generated domain: `<role><n>@<domain>`.
pub(crate) fn email_address(rng: &mut ChaCha8Rng) -> String {
    format!(
        "{}{}@{}",
        pick(
            rng,
            &["billing", "admin", "hr", "no-reply", "j.doe", "support"]
        ),
        rng.random_range(1..100),
        domain(rng)
    )
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

/// A network block around a generated IPv4 address, with a /16 to /28 prefix.
pub(crate) fn cidr(rng: &mut ChaCha8Rng) -> String {
    let prefix = [16u32, 20, 22, 24, 28].choose(rng).copied().unwrap_or(24);
    let raw = ipv4(rng)
        .split('.')
        .filter_map(|p| p.parse::<u32>().ok())
        .fold(0u32, |acc, o| (acc << 8) | o);
    let net = raw & (u32::MAX << (32 - prefix));
    format!(
        "{}.{}.{}.{}/{prefix}",
        net >> 24,
        (net >> 16) & 255,
        (net >> 8) & 255,
        net & 255
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

/// A named mutex as malware creates one: `Global\<16 hex digits>`.
pub fn mutex(rng: &mut ChaCha8Rng) -> String {
    format!("Global\\{}", hex(rng, 8, true))
}

/// A `Run` key under `HKEY_LOCAL_MACHINE`, where malware persists.
pub(crate) fn run_key(rng: &mut ChaCha8Rng) -> String {
    format!(
        "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\{}",
        pick(rng, &WORDS)
    )
}

/// A browser user agent with a malware family's name and version appended.
pub(crate) fn user_agent(rng: &mut ChaCha8Rng) -> String {
    format!(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) {}/{}.0",
        pick(rng, &MALWARE).replace(' ', ""),
        rng.random_range(1..20)
    )
}

/// `Observed in <malware> activity`: a short description.
pub(crate) fn observed_in(rng: &mut ChaCha8Rng) -> String {
    format!("Observed in {} activity", pick(rng, &MALWARE))
}

/// What an indicator's optional blocks (tags, attributes, sources, …) are drawn from: a seed of
/// their own, so that they stay stable across mutations, and whether they are drawn at realistic
/// size (`--rich-context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocks {
    /// The blocks' own seed.
    pub seed: u64,
    /// Drawn at realistic size: many attributes, associations and tags.
    pub rich: bool,
}

impl Blocks {
    /// The blocks of item `i` of the data generated from `seed`, at default size.
    pub fn of(seed: u64, i: usize) -> Self {
        Self {
            seed: mix(seed, 2, i as u64),
            rich: false,
        }
    }

    /// How many entries a block draws: `default`, or `rich` under `--rich-context`.
    pub(crate) fn sized(
        self,
        default: RangeInclusive<usize>,
        rich: RangeInclusive<usize>,
    ) -> RangeInclusive<usize> {
        if self.rich { rich } else { default }
    }
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
pub(crate) fn analysis(rng: &mut ChaCha8Rng) -> String {
    let n = rng.random_range(2..=8usize);
    (0..n)
        .map(|_| pick(rng, &ANALYSIS))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn generated_values_are_well_formed_and_seeded() {
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            [
                cidr(&mut rng),
                email_address(&mut rng),
                php_url(&mut rng, "login"),
                mutex(&mut rng),
                run_key(&mut rng),
                user_agent(&mut rng),
                observed_in(&mut rng),
            ]
        };
        let a = draw(5);
        assert_eq!(a, draw(5));
        assert_ne!(a, draw(6));
        let [block, mail, url, mutex, key, ua, description] = a;
        let (net, prefix) = block.split_once('/').unwrap();
        let prefix: u32 = prefix.parse().unwrap();
        let raw = net
            .split('.')
            .map(|o| o.parse::<u32>().unwrap())
            .fold(0, |acc, o| (acc << 8) | o);
        assert_eq!(raw & !(u32::MAX << (32 - prefix)), 0, "{block}");
        assert!(mail.contains('@') && url.starts_with("https://") && url.contains("/login/"));
        assert!(mutex.starts_with("Global\\") && mutex[7..].chars().all(|c| !c.is_lowercase()));
        assert!(key.starts_with("HKEY_LOCAL_MACHINE\\") && ua.starts_with("Mozilla/5.0"));
        assert!(description.starts_with("Observed in "));
    }

    #[test]
    fn blocks_are_sized_by_rich_context() {
        let b = Blocks::of(1, 2);
        assert_eq!(b.seed, mix(1, 2, 2));
        assert_eq!(b.sized(0..=3, 10..=30), 0..=3);
        let rich = Blocks { rich: true, ..b };
        assert_eq!(rich.sized(0..=3, 10..=30), 10..=30);
    }
}
