//! Time as the Alibaba Cloud APIs write it: UTC `yyyy-MM-ddTHH:mm:ssZ` (no fractions — the
//! credentials SDK parses `Expiration` with exactly `%Y-%m-%dT%H:%M:%SZ`), the 15-minute
//! tolerance of request timestamps, and random identifiers (request ids, AccessKeys, tokens).
//!
//! Never formats anything but times and public identifiers.

use base64::Engine;
use time::OffsetDateTime;
use time::macros::format_description;

/// How far a request's `x-acs-date` / `Timestamp` may be from the server's clock.
pub const TIMESTAMP_TOLERANCE_SECONDS: i64 = 15 * 60;

const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// `2026-01-02T03:04:05Z` for a Unix time (the epoch for an unrepresentable one).
pub fn format_utc(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses `yyyy-MM-ddTHH:mm:ssZ` into a Unix time.
pub fn parse_utc(text: &str) -> Option<i64> {
    time::PrimitiveDateTime::parse(text, FORMAT)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// Whether a request time is within the tolerance of `now`.
pub fn within_tolerance(request: i64, now: i64) -> bool {
    (request - now).abs() <= TIMESTAMP_TOLERANCE_SECONDS
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], crate::EmulatorError> {
    let mut bytes = [0u8; N];
    keyvault_emulator::crypto::fill_random(&mut bytes).map_err(|_| crate::EmulatorError::Random)?;
    Ok(bytes)
}

/// `len` random characters from `A-Z a-z 0-9`.
pub fn random_alnum(len: usize) -> Result<String, crate::EmulatorError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in random_bytes::<32>()? {
            // 248 = 4 * 62: reject the bias tail.
            if byte < 248 && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// Standard base64 of `N` random bytes.
pub fn random_base64<const N: usize>() -> Result<String, crate::EmulatorError> {
    Ok(base64::engine::general_purpose::STANDARD.encode(random_bytes::<N>()?))
}

/// An upper-case GUID, the form of Alibaba Cloud request ids.
pub fn request_id() -> String {
    keyvault_emulator::identity::new_guid().to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_the_api_format() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_767_323_045), "2026-01-02T03:04:05Z");
        assert_eq!(parse_utc("2026-01-02T03:04:05Z"), Some(1_767_323_045));
        assert_eq!(parse_utc("2026-01-02T03:04:05.123Z"), None);
        assert_eq!(parse_utc("2026-01-02 03:04:05"), None);
    }

    #[test]
    fn timestamps_are_accepted_within_fifteen_minutes() {
        assert!(within_tolerance(1000, 1000 + 900));
        assert!(!within_tolerance(1000, 1000 + 901));
        assert!(!within_tolerance(1000 + 901, 1000));
    }

    #[test]
    fn random_identifiers_have_the_asked_shape() {
        let id = random_alnum(24).unwrap();
        assert_eq!(id.len(), 24);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(id, random_alnum(24).unwrap());
        let rid = request_id();
        assert_eq!(rid.len(), 36);
        assert_eq!(rid, rid.to_ascii_uppercase());
    }
}
