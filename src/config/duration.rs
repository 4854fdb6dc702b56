//! One strict duration parser for every duration in the configuration.
//!
//! It accepts Go's `time.ParseDuration` units (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`) plus `d`
//! (days, as Elasticsearch and the integrations' `ioc_expiration_duration` use), optionally
//! combined (`1h30m`, `1d12h`) and with decimal fractions (`1.5h`). Everything else is an error:
//! `2M` is not "two months", `10` has no unit, negative durations are refused.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text was empty.
    #[error("empty duration")]
    Empty,
    /// A number had no unit after it (`"10"`).
    #[error("missing unit in duration {0:?} (use one of ns, us, ms, s, m, h, d)")]
    MissingUnit(String),
    /// A unit that is not one of ours (`"2M"`, `"1w"`).
    #[error("unknown unit {unit:?} in duration {text:?} (use one of ns, us, ms, s, m, h, d)")]
    UnknownUnit {
        /// The offending unit.
        unit: String,
        /// The whole input.
        text: String,
    },
    /// Anything that is not `<number><unit>...` (`"h"`, `"-1h"`, `"1 h"`).
    #[error("invalid duration {0:?}")]
    Invalid(String),
    /// The value does not fit a `Duration`.
    #[error("duration {0:?} is too large")]
    Overflow(String),
    /// Not what the ingest pipelines accept for `ioc_expiration_duration`.
    #[error(
        "must be a whole number of days, hours or minutes with a single unit (d, h or m) such as \
         \"90d\", as the ingest pipeline requires; got {0:?}"
    )]
    NotPipelineForm(String),
    /// Zero: every indicator would expire at once.
    #[error("must be greater than zero, got {0:?}")]
    Zero(String),
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a duration such as `90d`, `168h`, `2m`, `1h30m` or `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid(text.to_owned());
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(invalid());
        }
        let (number, tail) = rest.split_at(num_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(invalid());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(text.to_owned()));
        }
        let (unit, after) = tail.split_at(unit_len);
        let scale = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_owned(),
            text: text.to_owned(),
        })?;
        let overflow = || DurationError::Overflow(text.to_owned());
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(overflow)?;
        // Fractions are exact down to the nanosecond: digits beyond that are truncated, as Go does.
        let mut frac_scale = scale;
        for digit in frac_part.bytes() {
            frac_scale /= 10;
            if frac_scale == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * frac_scale;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(text.to_owned()))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats a duration so that [`parse_duration`] reads it back exactly: the largest units first,
/// zero parts left out (`90d`, `1h30m`, `1s500ms`); zero is `0s`.
pub fn format_duration(duration: Duration) -> String {
    let total = duration.as_nanos();
    if total == 0 {
        return "0s".to_owned();
    }
    let mut rest = total;
    let mut out = String::new();
    for (unit, scale) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        let count = rest / scale;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(unit);
            rest %= scale;
        }
    }
    out
}

/// The `ioc_expiration_duration` option: how long after its last modification an indicator
/// stays active. The raw text is kept because the pipelines store it verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IocExpiration {
    /// The configured text, e.g. `"90d"`.
    pub raw: String,
    /// The parsed window.
    pub duration: Duration,
}

impl IocExpiration {
    /// Parses `text` as the ingest pipelines accept it: a whole number with one unit `d`, `h`
    /// or `m` (`90d`, `12h`), greater than zero. The one rule for a configured stream and for
    /// `map --ioc-expiration-duration`.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let duration = parse_duration(text)?;
        let pipeline_form = text
            .strip_suffix(['d', 'h', 'm'])
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !pipeline_form {
            return Err(DurationError::NotPipelineForm(text.to_owned()));
        }
        if duration.is_zero() {
            return Err(DurationError::Zero(text.to_owned()));
        }
        Ok(Self {
            raw: text.to_owned(),
            duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioc_expiration_takes_only_what_the_pipeline_accepts() {
        assert_eq!(
            IocExpiration::parse("90d").map(|e| e.duration),
            Ok(Duration::from_secs(90 * 86_400))
        );
        assert!(IocExpiration::parse("12h").is_ok() && IocExpiration::parse("30m").is_ok());
        for refused in ["30s", "1d12h", "1.5d", "d"] {
            assert!(IocExpiration::parse(refused).is_err(), "{refused}");
        }
        assert_eq!(
            IocExpiration::parse("0d"),
            Err(DurationError::Zero("0d".to_owned()))
        );
    }

    #[test]
    fn accepts_go_units_and_days() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("168h"), Ok(Duration::from_secs(168 * 3_600)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_months_and_bare_numbers() {
        assert!(matches!(
            parse_duration("2M"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("10"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("-1h"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("1 h"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(parse_duration(""), Err(DurationError::Empty)));
        assert!(matches!(
            parse_duration("1..5s"),
            Err(DurationError::Invalid(_))
        ));
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s500ms");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const UNITS: [(&str, u64); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
        ("d", 86_400_000_000_000),
    ];

    proptest! {
        #[test]
        fn number_and_unit_round_trip(n in 0u64..1_000_000_000, unit in 0usize..UNITS.len()) {
            let (name, nanos) = UNITS[unit];
            let expected = u128::from(n) * u128::from(nanos);
            let parsed = parse_duration(&format!("{n}{name}")).expect("valid duration");
            prop_assert_eq!(parsed.as_nanos(), expected);
        }

        #[test]
        fn formatted_durations_parse_back(secs in 0u64..(1u64 << 40), nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC*") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn arbitrary_unit_like_text_never_panics(text in "[0-9.a-zµμ]{0,12}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn unknown_trailing_letter_is_refused(
            n in 0u64..1_000_000,
            prefix in "([0-9]{1,4}(ns|us|ms|s|m|h|d)){0,3}",
            letter in "[a-zA-Z]",
        ) {
            // A text ending in a letter that no accepted unit ends with.
            prop_assume!(!matches!(letter.as_str(), "s" | "m" | "h" | "d"));
            let text = format!("{prefix}{n}{letter}");
            prop_assert!(parse_duration(&text).is_err(), "{} was accepted", text);
        }

        #[test]
        fn any_text_ending_in_a_foreign_letter_is_refused(
            prefix in "\\PC{0,16}",
            letter in "[a-zA-Z]",
        ) {
            prop_assume!(!matches!(letter.as_str(), "s" | "m" | "h" | "d"));
            let text = format!("{prefix}{letter}");
            prop_assert!(parse_duration(&text).is_err(), "{} was accepted", text);
        }
    }
}
