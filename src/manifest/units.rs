//! Human-friendly durations ("500ms", "1h30m") and sizes ("512M", "2G") used by manifest keys.

use std::time::Duration;

/// What a duration may look like, for error messages.
pub(crate) const DURATION_FORMS: &str =
    "a number with a unit, e.g. \"500ms\", \"30s\", \"10m\", \"2h\", \"1d\" or \"1h30m\"";

/// What a size may look like, for error messages.
pub(crate) const SIZE_FORMS: &str = "a byte count like 1048576, or a number with a unit K, M, G or T (powers of 1024), e.g. \"512M\" or \"2G\"";

/// Parse "500ms", "30s", "10m", "2h", "1d", or a concatenation such as "1h30m" / "2m30s".
/// A bare number has no unit and is refused: "30" could mean seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_ms: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("`{s}` is not a duration"));
        }
        let number: u128 = s[start..i]
            .parse()
            .map_err(|_| format!("`{s}` is too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor: u128 = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" if i == bytes.len() => return Err(format!("`{s}` has no unit")),
            _ => return Err(format!("`{s}` is not a duration")),
        };
        total_ms = number
            .checked_mul(factor)
            .and_then(|v| total_ms.checked_add(v))
            .filter(|v| *v <= u128::from(u64::MAX))
            .ok_or_else(|| format!("`{s}` is too large"))?;
    }
    // The filter above keeps total_ms within u64.
    let ms = u64::try_from(total_ms).map_err(|_| format!("`{s}` is too large"))?;
    Ok(Duration::from_millis(ms))
}

/// Parse a size: "512" (bytes), "512K", "512M", "2G", "1T" (binary multiples); a trailing
/// "B" or "iB" and lower case are accepted ("512MiB", "2gb").
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits_end == 0 {
        return Err(format!("`{s}` is not a size"));
    }
    let number: u64 = s[..digits_end]
        .parse()
        .map_err(|_| format!("`{s}` is too large"))?;
    let unit = s[digits_end..].trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("`{s}` is not a size")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("500ms", 500),
            ("30s", 30_000),
            ("10m", 600_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1h30m", 5_400_000),
            ("2m30s", 150_000),
            ("1s500ms", 1_500),
            (" 5s ", 5_000),
            ("0s", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "",
            "30",
            "s",
            "1x",
            "1.5h",
            "-1s",
            "1h 30m",
            "h1",
            "30S",
            "99999999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn sizes() {
        let ok = [
            ("512", 512),
            ("512K", 512 << 10),
            ("512M", 512 << 20),
            ("2G", 2 << 30),
            ("1T", 1 << 40),
            ("1k", 1024),
            ("3MiB", 3 << 20),
            ("3mb", 3 << 20),
            ("7B", 7),
            ("0", 0),
        ];
        for (text, v) in ok {
            assert_eq!(parse_size(text), Ok(v), "{text}");
        }
        for bad in [
            "",
            "M",
            "1P",
            "1.5G",
            "-1",
            "1 G G",
            "99999999999T",
            "18446744073709551616",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should fail");
        }
    }
}
