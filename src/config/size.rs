//! Byte sizes in the configuration (`max_response_size: 256MiB`): parsed by the `bytesize`
//! crate, shown back in the one form [`format_size`] writes.
//!
//! `KiB`, `MiB`, `GiB` are powers of 1024; `KB`, `MB`, `GB` (and `K`, `M`, `G`) powers of
//! 1000; a bare number counts bytes. Units are case-insensitive and may follow a space.

use std::ops::RangeInclusive;

/// 1 KiB.
pub(crate) const KIB: u64 = 1024;
/// 1 MiB.
pub const MIB: u64 = 1024 * KIB;
/// 1 GiB.
pub(crate) const GIB: u64 = 1024 * MIB;

/// What `max_response_size` accepts: 1 KiB to 4 GiB.
pub(crate) const RESPONSE_SIZE: RangeInclusive<u64> = KIB..=4 * GIB;

/// Default `max_response_size`: 256 MiB, far above a full page of either platform
/// (ThreatConnect's 10,000 indicators with every `include_*`, ThreatQ's 1,000 with attributes).
pub fn default_max_response_size() -> u64 {
    256 * MIB
}

/// Parses a size such as `256MiB`, `8 MB` or `1048576`.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    text.trim().parse::<bytesize::ByteSize>().ok().map(|b| b.0)
}

/// `256 MiB`, `1 GiB`, `1500 B`: the largest binary unit that divides the size exactly.
pub(crate) fn format_size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{} {unit}", bytes / factor);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("256MiB"), Some(256 * MIB));
        assert_eq!(parse_size(" 8 mib "), Some(8 * MIB));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("-1MiB"), None);
        assert_eq!(parse_size("1 MiB of data"), None);
    }

    #[test]
    fn sizes_format_in_the_largest_exact_unit_and_parse_back() {
        for (bytes, text) in [
            (256 * MIB, "256 MiB"),
            (4 * GIB, "4 GiB"),
            (1536 * KIB, "1536 KiB"),
            (1500, "1500 B"),
        ] {
            assert_eq!(format_size(bytes), text);
            assert_eq!(parse_size(text), Some(bytes));
        }
    }
}
