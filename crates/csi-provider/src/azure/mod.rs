//! The Azure Key Vault backend: a Mount for provider `azure`, as Azure's Go provider serves it
//! (same SecretProviderClasses, same files), with fetches coalesced and cached per identity.
//!
//! The path of a Mount: [`spec`] validates the class's parameters and objects; [`identity`]
//! resolves and proves the pod's identity; [`mount`] fetches every object through [`cache`]
//! (coalesced, bounded per vault) and [`vault`] (the official SDK clients, Retry-After within
//! the Mount's deadline); [`content`] turns each fetched version into files.
//!
//! Never writes to the pod's volume, never logs secret content, never contacts a host that is
//! not `<keyvaultName>.<the cloud's vault suffix>` or the cloud's Entra ID authority.

pub mod cache;
pub mod content;
pub mod fetched;
pub mod identity;
pub mod mount;
pub mod spec;
pub mod vault;
