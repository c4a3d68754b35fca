//! What the in-process HTTPS emulators (`keyvault-emulator`, `alibaba-emulator`) share, so that
//! each holds only its service: [`server`] accepts connections (TLS or plain HTTP/1.1) and hands
//! requests to the emulator's router; [`start`] writes the CA file, binds listeners and owns the
//! serving tasks of a running emulator; [`faults`] applies fault rules in order; [`cli`] holds
//! the binaries' common flags; [`python`] runs a vendor's Python SDK suite against an emulator.
//!
//! Nothing here knows a service's protocol, error bodies or operations, and nothing here logs a
//! request's content.

#![forbid(unsafe_code)]

pub mod cli;
pub mod faults;
pub mod python;
pub mod server;
pub mod start;

pub use start::{StartError, TlsSource};
