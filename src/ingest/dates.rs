//! The `date` processor: ISO 8601, UNIX and the fixed `yyyy-MM-dd HH:mm:ss` pattern, formatted as ES stores dates.

use super::*;
use compact_str::CompactString;

/// Input formats of the ES `date` processor that the mappers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateFormat {
    /// ES `ISO8601`: `yyyy[-MM[-dd[THH[:mm[:ss[.fff]]]]]][zone]`, no zone = UTC.
    Iso8601,
    /// ES `UNIX`: epoch seconds, possibly fractional.
    Unix,
}

/// Parses ES-style ISO 8601 text. A value without offset is taken as UTC.
pub(crate) fn parse_iso8601(text: &str) -> Option<DateTime<FixedOffset>> {
    let b = text.as_bytes();
    let mut pos = 0usize;
    let num = |pos: &mut usize, n: usize| -> Option<u32> {
        let s = text.get(*pos..*pos + n)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *pos += n;
        s.parse().ok()
    };
    let year = i32::try_from(num(&mut pos, 4)?).ok()?;
    let (mut month, mut day) = (1, 1);
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0u32);
    if b.get(pos) == Some(&b'-') {
        pos += 1;
        month = num(&mut pos, 2)?;
        if b.get(pos) == Some(&b'-') {
            pos += 1;
            day = num(&mut pos, 2)?;
            if b.get(pos) == Some(&b'T') {
                pos += 1;
                hour = num(&mut pos, 2)?;
                if b.get(pos) == Some(&b':') {
                    pos += 1;
                    minute = num(&mut pos, 2)?;
                    if b.get(pos) == Some(&b':') {
                        pos += 1;
                        second = num(&mut pos, 2)?;
                        if matches!(b.get(pos), Some(b'.' | b',')) {
                            pos += 1;
                            let start = pos;
                            while b.get(pos).is_some_and(u8::is_ascii_digit) {
                                pos += 1;
                            }
                            let digits = text.get(start..pos)?;
                            if digits.is_empty() || digits.len() > 9 {
                                return None;
                            }
                            let scale = 10u32.pow(9 - u32::try_from(digits.len()).ok()?);
                            nanos = digits.parse::<u32>().ok()? * scale;
                        }
                    }
                }
            }
        }
    }
    let offset_secs = match text.get(pos..)? {
        "" | "Z" => 0,
        zone => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let rest = zone.get(1..)?;
            let (h, m) = match rest.len() {
                2 => (rest, "00"),
                4 => (rest.get(..2)?, rest.get(2..)?),
                5 if rest.as_bytes().get(2) == Some(&b':') => (rest.get(..2)?, rest.get(3..)?),
                _ => return None,
            };
            if !(h.bytes().chain(m.bytes()).all(|c| c.is_ascii_digit())) {
                return None;
            }
            let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
            if h > 18 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let offset = FixedOffset::east_opt(offset_secs)?;
    offset
        .from_local_datetime(&NaiveDateTime::new(date, time))
        .single()
}

/// Parses ES `UNIX` text (epoch seconds, fraction allowed; millisecond precision).
pub(crate) fn parse_unix(text: &str) -> Option<DateTime<Utc>> {
    let secs = parse_java_double(text)?;
    let millis = secs * 1000.0;
    if !millis.is_finite() || millis.abs() > 8.64e18 {
        return None;
    }
    // ES truncates the product to a long number of milliseconds.
    #[allow(clippy::cast_possible_truncation)]
    DateTime::from_timestamp_millis(millis as i64)
}

/// The ES default date output: UTC, `yyyy-MM-dd'T'HH:mm:ss.SSSZ` with a literal `Z`. The text
/// (24 bytes for a four-digit year) is stored inline, without an allocation.
pub(crate) fn format_date(dt: &DateTime<Utc>) -> CompactString {
    use chrono::{Datelike, Timelike};
    // Written digit by digit into a fixed buffer: this runs for every date of every document,
    // and `write!` with padding (or pushing one char at a time) costs several times more.
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    let after_year = [
        (5, dt.month(), 2),
        (8, dt.day(), 2),
        (11, dt.hour(), 2),
        (14, dt.minute(), 2),
        (17, dt.second(), 2),
        (20, dt.timestamp_subsec_millis().min(999), 3),
    ];
    for (at, n, width) in after_year {
        write_digits(&mut buf[at..at + width], n);
    }
    let year = dt.year();
    match u32::try_from(year).ok().filter(|y| *y <= 9999) {
        Some(y) => {
            write_digits(&mut buf[..4], y);
            // The buffer holds ASCII digits and separators only.
            CompactString::from_utf8(buf).unwrap_or_default()
        }
        // A year beyond four digits, or negative: signed, as Java prints it (rare).
        None => {
            let mut out = compact_str::format_compact!("{year:+05}");
            out.push_str(std::str::from_utf8(&buf[4..]).unwrap_or_default());
            out
        }
    }
}

/// Writes `n` into `out` as exactly `out.len()` decimal digits (zero-padded; `n` must fit).
fn write_digits(out: &mut [u8], mut n: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
    }
}

/// The API's usual timestamp shape, `yyyy-MM-ddTHH:mm:ssZ` (exactly 20 bytes), as a UTC time;
/// `None` for any other text or an impossible date. Mappers try it before the general parsers,
/// which accept it too and give the same instant.
pub(crate) fn parse_canonical_utc(text: &str) -> Option<DateTime<Utc>> {
    fields_utc(fixed_fields(text, b'T', b"Z")?)
}

/// The six numbers (year, month, day, hour, minute, second) of a fixed-width date text
/// `yyyy-MM-dd?HH:mm:ss` followed by exactly `suffix`, where `?` is the byte `sep`: every digit
/// an ASCII digit, every separator in place, no other length. Only the shape is checked, not
/// the calendar (see [`fields_utc`]).
///
/// The one reader of the fixed-width date texts ([`parse_canonical_utc`], [`parse_ymd_hms`] and
/// the ThreatQ fast path), on the hot path of both mappings: it reads the bytes in place and is
/// always inlined, so that constant `sep` and `suffix` fold into a few byte compares (measured
/// as fast as each of the three readers it replaced).
#[inline(always)]
pub(crate) fn fixed_fields(text: &str, sep: u8, suffix: &[u8]) -> Option<[u32; 6]> {
    let (head, tail) = text.as_bytes().split_at_checked(19)?;
    let head: &[u8; 19] = head.try_into().ok()?;
    let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        mid,
        h0,
        h1,
        b':',
        i0,
        i1,
        b':',
        s0,
        s1,
    ] = *head
    else {
        return None;
    };
    if mid != sep || tail != suffix {
        return None;
    }
    // All fourteen digits checked at once, then combined: fewer branches than digit by digit.
    let digits =
        [y0, y1, y2, y3, m0, m1, d0, d1, h0, h1, i0, i1, s0, s1].map(|c| c.wrapping_sub(b'0'));
    if digits.iter().any(|&d| d > 9) {
        return None;
    }
    let [y0, y1, y2, y3, m0, m1, d0, d1, h0, h1, i0, i1, s0, s1] = digits.map(u32::from);
    Some([
        ((y0 * 10 + y1) * 10 + y2) * 10 + y3,
        m0 * 10 + m1,
        d0 * 10 + d1,
        h0 * 10 + h1,
        i0 * 10 + i1,
        s0 * 10 + s1,
    ])
}

/// The UTC time of six fields as [`fixed_fields`] reads them; `None` for an impossible date or
/// time of day (chrono checks the calendar).
#[inline]
pub(crate) fn fields_utc([y, mo, d, h, mi, s]: [u32; 6]) -> Option<DateTime<Utc>> {
    let date = NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, d)?;
    Some(date.and_hms_opt(h, mi, s)?.and_utc())
}

/// ES `date`: parses the value's Java `toString()` with the first matching format and returns
/// the formatted UTC text.
pub(crate) fn date(value: &Value, formats: &[DateFormat]) -> Result<String, IngestError> {
    let text: std::borrow::Cow<'_, str> = match value {
        Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        v => std::borrow::Cow::Owned(java_to_string(v)),
    };
    for format in formats {
        let parsed = match format {
            DateFormat::Iso8601 => parse_iso8601(&text).map(|d| d.with_timezone(&Utc)),
            DateFormat::Unix => parse_unix(&text),
        };
        if let Some(dt) = parsed {
            return Ok(format_date(&dt).into_string());
        }
    }
    Err(IngestError(format!("unable to parse date [{text}]")))
}

/// Parses the Java pattern `yyyy-MM-dd HH:mm:ss` (strict: fixed widths, real calendar dates,
/// hours 0–23) as UTC.
pub(crate) fn parse_ymd_hms(text: &str) -> Option<DateTime<Utc>> {
    fields_utc(fixed_fields(text, b' ', b"")?)
}

/// ES `date` with the single format `yyyy-MM-dd HH:mm:ss` (UTC): the value's Java `toString()`
/// parsed and re-formatted like [`format_date`], or the ES error text.
pub(crate) fn date_ymd_hms(value: &Value) -> Result<String, IngestError> {
    let text: std::borrow::Cow<'_, str> = match value {
        Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        v => std::borrow::Cow::Owned(java_to_string(v)),
    };
    parse_ymd_hms(&text)
        .map(|dt| format_date(&dt).into_string())
        .ok_or_else(|| IngestError(format!("unable to parse date [{text}]")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digit-by-digit writer against chrono's own formatting, over every edge it handles.
    #[test]
    fn format_date_matches_chrono_formatting() {
        for text in [
            "2023-12-05T06:38:53.123Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "1970-01-01T00:00:00.5Z",
        ] {
            let t = parse_iso8601(text).expect("parses").with_timezone(&Utc);
            let want = t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            assert_eq!(format_date(&t), want, "{text}");
        }
        let far = NaiveDate::from_ymd_opt(12_345, 6, 7)
            .and_then(|d| d.and_hms_opt(8, 9, 10))
            .expect("valid")
            .and_utc();
        assert_eq!(format_date(&far), "+12345-06-07T08:09:10.000Z");
    }

    #[test]
    fn canonical_utc_is_the_general_parser_on_its_shape_only() {
        let text = "2024-02-29T23:59:59Z";
        assert_eq!(
            parse_canonical_utc(text),
            parse_iso8601(text).map(|t| t.with_timezone(&Utc))
        );
        for other in [
            "2023-02-29T00:00:00Z",
            "2023-12-05T06:38:53.1Z",
            "2023-12-05T06:38:53+00:00",
            "2023-12-05 06:38:53Z",
            "2023-1a-05T06:38:53Z",
        ] {
            assert_eq!(parse_canonical_utc(other), None, "{other}");
        }
    }

    /// The shared fixed-width reader: the fields of a well-formed text, and `None` for a bad
    /// digit, a separator out of place, any other length or non-ASCII bytes, for both shapes.
    #[test]
    fn fixed_fields_reads_the_shape_and_nothing_else() {
        assert_eq!(
            fixed_fields("2024-02-29T23:59:58Z", b'T', b"Z"),
            Some([2024, 2, 29, 23, 59, 58])
        );
        assert_eq!(
            fixed_fields("0000-00-00 99:99:99", b' ', b""),
            Some([0, 0, 0, 99, 99, 99]),
            "only the shape is checked"
        );
        for (text, sep, suffix) in [
            // bad digits, in every field
            ("2O24-02-29T23:59:58Z", b'T', &b"Z"[..]),
            ("2024-0x-29 23:59:58", b' ', b""),
            ("2024-02-2/ 23:59:58", b' ', b""),
            ("2024-02-29 2:;59:58", b' ', b""),
            ("2024-02-29 23:5a:58", b' ', b""),
            ("2024-02-29 23:59:5 ", b' ', b""),
            ("+024-02-29 23:59:58", b' ', b""),
            // wrong separators
            ("2024-02-29 23:59:58Z", b'T', b"Z"),
            ("2024-02-29T23:59:58", b' ', b""),
            ("2024/02-29 23:59:58", b' ', b""),
            ("2024-02/29 23:59:58", b' ', b""),
            ("2024-02-29 23-59:58", b' ', b""),
            ("2024-02-29 23:59-58", b' ', b""),
            ("2024-02-29T23:59:58z", b'T', b"Z"),
            ("2024-02-29T23:59:58+", b'T', b"Z"),
            // wrong lengths
            ("", b' ', b""),
            ("2024-02-29 23:59:5", b' ', b""),
            ("2024-02-29 23:59:588", b' ', b""),
            ("2024-02-29 23:59:58 ", b' ', b""),
            ("2024-02-29T23:59:58", b'T', b"Z"),
            ("2024-02-29T23:59:58ZZ", b'T', b"Z"),
            ("2024-02-29T23:59:58.1Z", b'T', b"Z"),
            ("24-02-29 23:59:58", b' ', b""),
            // non-ASCII: look-alike digits and separators, a multi-byte char of the right length
            ("２024-02-29 23:59:58", b' ', b""),
            ("2024‐02-29 23:59:58", b' ', b""),
            ("2024-02-29\u{a0}23:59:58", b' ', b""),
            ("2024-02-29 23:59:é", b' ', b""),
            ("2024-02-29T23:59:58Ｚ", b'T', b"Z"),
        ] {
            assert_eq!(fixed_fields(text, sep, suffix), None, "{text:?}");
        }
    }

    /// [`fixed_fields`] as a pattern match, char by char: the independent reading the fast one
    /// is held to.
    fn fields_by_pattern(text: &str, sep: char, suffix: &str) -> Option<[u32; 6]> {
        let pattern: String = format!("0000-00-00{sep}00:00:00{suffix}");
        let (chars, want): (Vec<char>, Vec<char>) =
            (text.chars().collect(), pattern.chars().collect());
        let fits = chars.len() == want.len()
            && chars.iter().zip(&want).all(|(c, w)| {
                if *w == '0' {
                    c.is_ascii_digit()
                } else {
                    c == w
                }
            });
        let num = |from: usize, to: usize| text.get(from..to)?.parse().ok();
        if !fits {
            return None;
        }
        Some([
            num(0, 4)?,
            num(5, 7)?,
            num(8, 10)?,
            num(11, 13)?,
            num(14, 16)?,
            num(17, 19)?,
        ])
    }

    proptest::proptest! {
        /// The shared reader agrees with the pattern match on near-misses of both shapes.
        #[test]
        fn fixed_fields_agrees_with_a_pattern_match(
            text in proptest::prop_oneof![
                "[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}Z?",
                "[0-9 :TZ+-]{18,21}",
                ".{18,21}",
            ]
        ) {
            proptest::prop_assert_eq!(fixed_fields(&text, b' ', b""), fields_by_pattern(&text, ' ', ""));
            proptest::prop_assert_eq!(fixed_fields(&text, b'T', b"Z"), fields_by_pattern(&text, 'T', "Z"));
        }
    }

    /// Both shapes against chrono's own parser of the same pattern, over well-formed texts
    /// (where chrono and the calendar agree) and near misses.
    #[test]
    fn ymd_hms_matches_chrono_pattern_parser() {
        for text in [
            "2024-02-29 23:59:59",
            "2023-02-29 00:00:00",
            "2023-12-31 24:00:00",
            "0000-01-01 00:00:00",
            "9999-12-31 23:59:59",
            "2023-13-01 00:00:00",
            "2023-04-31 12:00:00",
        ] {
            let chrono = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|t| t.and_utc());
            assert_eq!(parse_ymd_hms(text), chrono, "{text}");
            let canonical = format!("{}Z", text.replace(' ', "T"));
            assert_eq!(parse_canonical_utc(&canonical), chrono, "{canonical}");
        }
    }
}
