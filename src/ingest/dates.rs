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
    let year = dt.year();
    let mut out = CompactString::with_capacity(24);
    match u32::try_from(year) {
        Ok(y) if y <= 9999 => push_digits(&mut out, y, 4),
        _ => {
            let _ = write!(out, "{year:+05}");
        }
    }
    // Written digit by digit: this runs for every date of every document, and `write!` with
    // padding costs several times more.
    for (sep, n, width) in [
        ('-', dt.month(), 2),
        ('-', dt.day(), 2),
        ('T', dt.hour(), 2),
        (':', dt.minute(), 2),
        (':', dt.second(), 2),
        ('.', dt.timestamp_subsec_millis().min(999), 3),
    ] {
        out.push(sep);
        push_digits(&mut out, n, width);
    }
    out.push('Z');
    out
}

/// Appends `n` as exactly `width` decimal digits (zero-padded; `n` < 10^width).
fn push_digits(out: &mut CompactString, n: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (n / 10u32.pow(place)) % 10;
        out.push(char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
    }
}

/// The API's usual timestamp shape, `yyyy-MM-ddTHH:mm:ssZ` (exactly 20 bytes), as a UTC time;
/// `None` for any other text or an impossible date. Mappers try it before the general parsers,
/// which accept it too and give the same instant.
pub(crate) fn parse_canonical_utc(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() != 20
        || b[19] != b'Z'
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let time = NaiveTime::from_hms_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?)?;
    Some(NaiveDateTime::new(date, time).and_utc())
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
    let b = text.as_bytes();
    if b.len() != 19
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b' ')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let s = text.get(from..to)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let time = NaiveTime::from_hms_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?)?;
    Some(NaiveDateTime::new(date, time).and_utc())
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
}
