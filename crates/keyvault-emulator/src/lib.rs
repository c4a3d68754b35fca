//! Key Vault emulator (work in progress).
#![forbid(unsafe_code)]

pub mod b64;
pub mod crypto;
pub mod error;
pub mod model;
