//! Key lifecycle tools: `kube-kms census` (which key encrypts what, read straight from etcd)
//! and `kube-kms migrate` (re-encrypt storage through kube-apiserver, resumable).
//!
//! Each idea has its own module: [`stored_value`] classifies one etcd value, [`known_keys`]
//! names key_ids from kube-kms's configuration, [`encryption_config`] reads kube-apiserver's
//! EncryptionConfiguration, [`etcd`] pages through etcd (read-only), [`census`] counts and
//! [`report`] concludes (text, JSON, exit codes); [`migrate`] rewrites objects through the
//! Kubernetes API, [`checkpoint`] remembers how far it got, [`progress`] draws bars on a
//! terminal. Nothing here contacts the key service, decrypts a value or writes to etcd.

pub mod args;
pub mod census;
pub mod checkpoint;
pub mod encryption_config;
pub mod etcd;
pub mod known_keys;
pub mod migrate;
pub mod progress;
pub mod report;
pub mod stored_value;

/// `n` and the noun, plural unless `n` is 1 ("1 object", "2 objects"): the reports are read by
/// people deciding whether a key may be deleted, so their counts should read as English.
pub(crate) fn counted(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::counted;

    #[test]
    fn counts_read_as_english() {
        assert_eq!(counted(0u64, "object"), "0 objects");
        assert_eq!(counted(1u64, "object"), "1 object");
        assert_eq!(counted(2u64, "conflict"), "2 conflicts");
    }
}
