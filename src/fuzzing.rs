//! Entry points for the fuzz targets in fuzz/: each feeds arbitrary bytes to a parser that reads
//! attacker-controlled input and checks only that it returns, never panics.

use std::collections::HashMap;

use crate::envelope::format;

/// Parses arbitrary bytes as a v2 ciphertext and as a v1 blob.
pub fn ciphertext(data: &[u8]) {
    let _ = format::parse_v2_ciphertext(data);
    let _ = format::parse_v1_blob(data);
}

/// Splits arbitrary bytes into annotations and a key_id, and parses them as a Decrypt would.
pub fn decrypt_request(data: &[u8]) {
    let mut annotations = HashMap::new();
    let mut fields = data.split(|b| *b == 0);
    let key_id = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    while let (Some(key), Some(value)) = (fields.next(), fields.next()) {
        annotations.insert(String::from_utf8_lossy(key).into_owned(), value.to_vec());
    }
    let _ = format::check_key_id(&key_id);
    let _ = format::parse_annotations(&annotations);
}

/// Parses arbitrary bytes as a YAML config file and resolves it.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = crate::config::DefaultsEnv::default();
        let _ = crate::config::Config::from_yaml(text, &crate::config::ConfigArgs::default(), &env);
    }
}
