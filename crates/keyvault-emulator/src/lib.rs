//! Key Vault emulator (work in progress).
#![forbid(unsafe_code)]

pub mod b64;
pub mod certs;
pub mod crypto;
pub mod error;
pub mod faults;
pub mod identity;
pub mod jwt;
pub mod model;
pub mod store;
