//! base64url without padding: the encoding of every binary field Key Vault sends and accepts.
//!
//! Decoding is strict about the alphabet, as the service is: standard-alphabet input ('+' or '/')
//! is refused with the service's own message, so a client that encodes wrongly fails here as it
//! would against Azure. Trailing '=' padding is tolerated.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};

use crate::error::ServiceError;

const LENIENT_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes bytes as base64url without padding.
pub fn encode(bytes: &[u8]) -> String {
    general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes the JSON field `field`, answering 400 BadParameter
/// "Content of '{field}' is not base64url." for anything else.
pub fn decode(field: &str, text: &str) -> Result<Vec<u8>, ServiceError> {
    LENIENT_PADDING
        .decode(text)
        .map_err(|_| ServiceError::bad_parameter(format!("Content of '{field}' is not base64url.")))
}

/// Decodes base64url where an error needs no service wording (JWT segments).
pub fn decode_plain(text: &str) -> Option<Vec<u8>> {
    LENIENT_PADDING.decode(text).ok()
}

/// Decodes a certificate thumbprint header (`x5t`, `x5t#S256`): base64url as RFC 7515 says, or
/// the standard alphabet, which Microsoft's Rust SDK (azure_identity 1.0) sends and Entra ID
/// accepts.
pub fn decode_thumbprint(text: &str) -> Option<Vec<u8>> {
    const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    decode_plain(text).or_else(|| STANDARD_LENIENT.decode(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_decode_in_either_alphabet() {
        let sha1 = [0xfb_u8; 20];
        assert_eq!(
            decode_thumbprint("-_v7-_v7-_v7-_v7-_v7-_v7-_s").unwrap(),
            sha1
        );
        assert_eq!(
            decode_thumbprint("+/v7+/v7+/v7+/v7+/v7+/v7+/s=").unwrap(),
            sha1
        );
        assert_eq!(decode_thumbprint("not base64!"), None);
    }

    #[test]
    fn round_trips_without_padding() {
        let bytes = [0xfb_u8, 0xff, 0x00, 0x01];
        let text = encode(&bytes);
        assert_eq!(text, "-_8AAQ");
        assert_eq!(decode("value", &text).unwrap(), bytes);
        assert_eq!(decode("value", "-_8AAQ==").unwrap(), bytes);
    }

    #[test]
    fn refuses_the_standard_alphabet_with_the_service_message() {
        let error = decode("value", "+/8AAQ").unwrap_err();
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(error.code(), "BadParameter");
        assert_eq!(error.message(), "Content of 'value' is not base64url.");
    }
}
