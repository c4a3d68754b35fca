//! The Alibaba Cloud backend: a Mount for provider `alibabacloud`, as Alibaba's provider
//! (`csi-secrets-store-provider-alibabacloud`) serves it — KMS Secrets Manager secrets and OOS
//! secret parameters, the same SecretProviderClasses, the same files — with reads coalesced and
//! cached per identity.
//!
//! The path of a Mount: [`spec`] validates the class's parameters and its plain YAML list of
//! objects (names, types, versions, `jmesPath`, endpoints under `aliyuncs.com` only, file names
//! translated); [`identity`] walks Alibaba's credential chain (the pod's RRSA role, the
//! provider's RRSA role, a RAM role, a nodePublishSecretRef AccessKey, the provider's
//! AccessKey, the ECS instance role) and proves the identity with STS before any read, then
//! assumes each object's cross-account role ([`kube`] reads the pod's role from its
//! ServiceAccount's annotation); [`mount`] fetches every object concurrently
//! through [`cache`] (coalesced, bounded per endpoint, throttling honoured) and [`client`] (KMS
//! `GetSecretValue` and OOS `GetSecretParameter` signed by [`signing`], retried within the
//! Mount's deadline), and renders the files.
//!
//! Never writes to the pod's volume, never logs secret content, and never sends credentials to a
//! host that is not an Alibaba Cloud endpoint (or one the operator allowed).

pub mod cache;
pub mod client;
pub mod identity;
pub mod kube;
pub mod mount;
pub mod signing;
pub mod spec;
