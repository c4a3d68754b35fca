//! Who may call: AccessKeys (a RAM user's long-term keys), RAM roles (with a trust policy naming
//! the accounts whose identities may `AssumeRole` and the OIDC providers whose tokens may
//! `AssumeRoleWithOIDC`), OIDC providers, the STS sessions issued for roles, and what each may
//! read ([`Grants`]: secret, parameter and role patterns). Also the replay guard (nonces seen in
//! the last 15 minutes) and the ECS instance's RAM role and metadata tokens.
//!
//! AccessKey secrets and security tokens live in zeroizing strings, never in `Debug` output.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::clock::{self, TIMESTAMP_TOLERANCE_SECONDS};
use crate::error::EmulatorError;

/// What an identity may read, as patterns where `*` matches any run of characters.
///
/// A pattern without `acs:` matches names in the identity's own account (`*`: all of them); a
/// pattern starting with `acs:` matches resource ARNs (`acs:kms:*:<account>:secret/<name>`,
/// `acs:oos:*:<account>:secretparameter/<name>`), and only such a pattern reaches another
/// account's resources. Role patterns match role ARNs (`acs:ram::<account>:role/<name>`;
/// `*` matches every role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// KMS secrets (GetSecretValue, ListSecretVersionIds).
    pub secrets: Vec<String>,
    /// OOS secret parameters (GetSecretParameter).
    pub parameters: Vec<String>,
    /// Roles it may assume (AssumeRole), subject to the role's trust policy.
    pub roles: Vec<String>,
}

impl Default for Grants {
    fn default() -> Self {
        Self::all()
    }
}

impl Grants {
    /// Everything in the own account, and every role.
    pub fn all() -> Self {
        Self {
            secrets: vec!["*".to_owned()],
            parameters: vec!["*".to_owned()],
            roles: vec!["*".to_owned()],
        }
    }

    /// Nothing.
    pub fn none() -> Self {
        Self {
            secrets: Vec::new(),
            parameters: Vec::new(),
            roles: Vec::new(),
        }
    }

    /// Only these secrets (names or ARN patterns).
    pub fn secrets(patterns: &[&str]) -> Self {
        Self {
            secrets: patterns.iter().map(|p| (*p).to_owned()).collect(),
            ..Self::none()
        }
    }

    /// Only these parameters (names or ARN patterns).
    pub fn parameters(patterns: &[&str]) -> Self {
        Self {
            parameters: patterns.iter().map(|p| (*p).to_owned()).collect(),
            ..Self::none()
        }
    }
}

/// Whether `pattern` (with `*` wildcards) matches all of `text`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether `patterns` allow a resource `name` owned by `owner`, whose ARN is `arn`, to a caller
/// of account `caller_account`.
pub fn allows(
    patterns: &[String],
    caller_account: &str,
    owner: &str,
    name: &str,
    arn: &str,
) -> bool {
    patterns.iter().any(|pattern| {
        if pattern.starts_with("acs:") {
            glob_match(pattern, arn)
        } else {
            owner == caller_account && glob_match(pattern, name)
        }
    })
}

/// A RAM user's AccessKey.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeySpec {
    /// The AccessKey id (`LTAI…` by convention).
    pub id: String,
    /// The AccessKey secret.
    pub secret: String,
    /// The owning account; the emulator's default when absent.
    #[serde(default)]
    pub account_id: Option<String>,
    /// The RAM user's name (for ARNs); the id when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// What it may read; everything in its account when absent.
    #[serde(default)]
    pub grants: Option<Grants>,
    /// A disabled key answers `InvalidAccessKeyId.Inactive`.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

impl fmt::Debug for AccessKeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeySpec")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .field("account_id", &self.account_id)
            .field("user", &self.user)
            .field("grants", &self.grants)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl AccessKeySpec {
    /// A key with every grant in the default account.
    pub fn new(id: &str, secret: &str) -> Self {
        Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
            enabled: true,
            ..Self::default()
        }
    }

    /// Restricts it to `grants`.
    pub fn with_grants(mut self, grants: Grants) -> Self {
        self.grants = Some(grants);
        self
    }

    /// Places it in another account.
    pub fn in_account(mut self, account_id: &str) -> Self {
        self.account_id = Some(account_id.to_owned());
        self
    }
}

/// A RAM role.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// The role name.
    pub name: String,
    /// The owning account; the emulator's default when absent.
    #[serde(default)]
    pub account_id: Option<String>,
    /// What its sessions may read; everything in its account when absent.
    #[serde(default)]
    pub grants: Option<Grants>,
    /// Accounts whose identities may AssumeRole it (the trust policy's `RAM` principals);
    /// its own account when empty.
    #[serde(default)]
    pub trusted_accounts: Vec<String>,
    /// OIDC providers whose tokens may AssumeRoleWithOIDC it (the trust policy's `Federated`
    /// principals and `oidc:sub` conditions).
    #[serde(default)]
    pub oidc: Vec<OidcTrust>,
    /// The longest session (`MaxSessionDuration`), 3600 s by default.
    #[serde(default)]
    pub max_session_seconds: Option<u64>,
}

impl RoleSpec {
    /// A role with every grant, trusted by its own account.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Restricts its sessions to `grants`.
    pub fn with_grants(mut self, grants: Grants) -> Self {
        self.grants = Some(grants);
        self
    }

    /// Trusts tokens of an OIDC provider (any subject when `subjects` is empty).
    pub fn trust_oidc(mut self, provider_arn: &str, subjects: &[&str]) -> Self {
        self.oidc.push(OidcTrust {
            provider_arn: provider_arn.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        });
        self
    }

    /// Trusts another account's identities.
    pub fn trust_account(mut self, account_id: &str) -> Self {
        self.trusted_accounts.push(account_id.to_owned());
        self
    }

    /// Places it in another account.
    pub fn in_account(mut self, account_id: &str) -> Self {
        self.account_id = Some(account_id.to_owned());
        self
    }
}

/// One OIDC entry of a role's trust policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcTrust {
    /// `acs:ram::<account>:oidc-provider/<name>`.
    pub provider_arn: String,
    /// Allowed `sub` claims; any when empty.
    #[serde(default)]
    pub subjects: Vec<String>,
}

/// An OIDC identity provider registered in RAM.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderSpec {
    /// The provider name.
    pub name: String,
    /// The owning account; the emulator's default when absent.
    #[serde(default)]
    pub account_id: Option<String>,
    /// The issuer URL the tokens' `iss` must equal.
    pub issuer: String,
    /// Accepted audiences (`ClientIds`); `["sts.aliyuncs.com"]` when empty.
    #[serde(default)]
    pub client_ids: Vec<String>,
}

impl OidcProviderSpec {
    /// A provider accepting the audience `sts.aliyuncs.com`.
    pub fn new(name: &str, issuer: &str) -> Self {
        Self {
            name: name.to_owned(),
            issuer: issuer.to_owned(),
            ..Self::default()
        }
    }
}

/// The audience RRSA tokens carry and providers accept by default.
pub const DEFAULT_AUDIENCE: &str = "sts.aliyuncs.com";

/// `acs:ram::<account>:role/<name>` (RAM writes role names lower-case in ARNs).
pub fn role_arn(account: &str, name: &str) -> String {
    format!("acs:ram::{account}:role/{}", name.to_ascii_lowercase())
}

/// `acs:ram::<account>:oidc-provider/<name>`.
pub fn oidc_provider_arn(account: &str, name: &str) -> String {
    format!("acs:ram::{account}:oidc-provider/{name}")
}

/// Splits `acs:ram::<account>:<kind>/<name>`.
pub fn parse_ram_arn<'a>(arn: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    let rest = arn.strip_prefix("acs:ram::")?;
    let (account, resource) = rest.split_once(':')?;
    let name = resource.strip_prefix(kind)?.strip_prefix('/')?;
    (!account.is_empty() && !name.is_empty()).then_some((account, name))
}

/// A registered AccessKey.
pub struct AccessKey {
    /// The id.
    pub id: String,
    secret: Zeroizing<String>,
    /// The account.
    pub account_id: String,
    /// The RAM user.
    pub user: String,
    /// Its grants.
    pub grants: Grants,
    /// Whether it may be used.
    pub enabled: bool,
}

/// A registered role.
#[derive(Debug, Clone)]
pub struct Role {
    /// The account.
    pub account_id: String,
    /// The name as registered.
    pub name: String,
    /// `3…` digits, as RAM's role ids.
    pub role_id: String,
    /// Its sessions' grants.
    pub grants: Grants,
    /// Accounts that may AssumeRole it.
    pub trusted_accounts: Vec<String>,
    /// OIDC trust.
    pub oidc: Vec<OidcTrust>,
    /// Longest session.
    pub max_session_seconds: u64,
}

impl Role {
    /// Its ARN.
    pub fn arn(&self) -> String {
        role_arn(&self.account_id, &self.name)
    }
}

/// A registered OIDC provider.
#[derive(Debug, Clone)]
pub struct OidcProvider {
    /// Its ARN.
    pub arn: String,
    /// The account.
    pub account_id: String,
    /// The issuer.
    pub issuer: String,
    /// Accepted audiences.
    pub client_ids: Vec<String>,
}

/// STS credentials issued for a role session.
pub struct Session {
    /// `STS.` + 24 characters.
    pub access_key_id: String,
    secret: Zeroizing<String>,
    token: Zeroizing<String>,
    /// Unix time it stops working.
    pub expiration: i64,
    /// The role's account.
    pub account_id: String,
    /// The role's name (key into the directory; its grants are read live).
    pub role_name: String,
    /// The session name.
    pub session_name: String,
}

/// STS credentials handed to a client. The secret and token are exposed on purpose: this is
/// what STS and the metadata service return.
#[derive(Clone)]
pub struct IssuedCredentials {
    /// `STS.…`.
    pub access_key_id: String,
    /// The AccessKey secret.
    pub access_key_secret: Zeroizing<String>,
    /// The security token.
    pub security_token: Zeroizing<String>,
    /// Unix time it expires.
    pub expiration: i64,
}

impl fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"[redacted]")
            .field("security_token", &"[redacted]")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Who a verified request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account the identity belongs to.
    pub account_id: String,
    /// What it may read.
    pub grants: Grants,
    /// `acs:ram::<account>:user/<name>` or `acs:ram::<account>:assumed-role/<role>/<session>`.
    pub arn: String,
    /// The AccessKey id it signed with.
    pub access_key_id: String,
    /// `RAMUser` or `AssumedRoleUser`.
    pub identity_type: &'static str,
}

/// What signed a request: the secret to verify with, and the caller it will be.
pub enum Signer {
    /// A long-term key.
    Key {
        /// The secret.
        secret: Zeroizing<String>,
        /// The caller.
        caller: Caller,
        /// Whether it is enabled.
        enabled: bool,
    },
    /// STS credentials.
    Session {
        /// The secret.
        secret: Zeroizing<String>,
        /// The token it was issued with.
        token: Zeroizing<String>,
        /// Expiry.
        expiration: i64,
        /// The caller (`None` when the role has since been removed).
        caller: Option<Caller>,
    },
}

/// Identities, sessions, nonces and the ECS instance.
#[derive(Default)]
pub struct Directory {
    keys: HashMap<String, AccessKey>,
    roles: BTreeMap<(String, String), Role>,
    providers: BTreeMap<String, OidcProvider>,
    sessions: HashMap<String, Session>,
    nonces: HashMap<(String, String), i64>,
    next_role_id: u64,
    /// The ECS instance's RAM role: (account, name).
    pub ecs_role: Option<(String, String)>,
    /// The credentials the metadata service hands out now.
    pub ecs_session: Option<String>,
    metadata_tokens: HashMap<String, i64>,
    /// Whether metadata reads need an `X-aliyun-ecs-metadata-token` (IMDSv2 enforced).
    pub require_metadata_token: bool,
}

impl Directory {
    /// Registers (or replaces) an AccessKey.
    pub fn add_key(
        &mut self,
        spec: &AccessKeySpec,
        default_account: &str,
    ) -> Result<(), EmulatorError> {
        if spec.id.is_empty() || spec.id.starts_with("STS.") || spec.secret.is_empty() {
            return Err(EmulatorError::Invalid(
                "an AccessKey needs an id (not starting with STS.) and a secret".to_owned(),
            ));
        }
        self.keys.insert(
            spec.id.clone(),
            AccessKey {
                id: spec.id.clone(),
                secret: Zeroizing::new(spec.secret.clone()),
                account_id: spec
                    .account_id
                    .clone()
                    .unwrap_or_else(|| default_account.to_owned()),
                user: spec.user.clone().unwrap_or_else(|| spec.id.clone()),
                grants: spec.grants.clone().unwrap_or_else(Grants::all),
                enabled: spec.enabled,
            },
        );
        Ok(())
    }

    /// Removes an AccessKey; whether it existed.
    pub fn remove_key(&mut self, id: &str) -> bool {
        self.keys.remove(id).is_some()
    }

    /// Enables or disables an AccessKey.
    pub fn set_key_enabled(&mut self, id: &str, enabled: bool) -> Result<(), EmulatorError> {
        let key = self
            .keys
            .get_mut(id)
            .ok_or_else(|| EmulatorError::NotFound(format!("AccessKey {id}")))?;
        key.enabled = enabled;
        Ok(())
    }

    /// Registers (or replaces) a role; returns its ARN.
    pub fn add_role(
        &mut self,
        spec: &RoleSpec,
        default_account: &str,
    ) -> Result<String, EmulatorError> {
        let valid = !spec.name.is_empty()
            && spec.name.len() <= 64
            && spec
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if !valid {
            return Err(EmulatorError::Invalid(format!(
                "role name {:?}: 1-64 letters, digits, '.' or '-'",
                spec.name
            )));
        }
        let max = spec.max_session_seconds.unwrap_or(3600);
        if !(900..=43_200).contains(&max) {
            return Err(EmulatorError::Invalid(
                "max_session_seconds is 900 to 43200".to_owned(),
            ));
        }
        let account_id = spec
            .account_id
            .clone()
            .unwrap_or_else(|| default_account.to_owned());
        self.next_role_id += 1;
        let role = Role {
            account_id: account_id.clone(),
            name: spec.name.clone(),
            role_id: format!("3{:018}", self.next_role_id),
            grants: spec.grants.clone().unwrap_or_else(Grants::all),
            trusted_accounts: if spec.trusted_accounts.is_empty() {
                vec![account_id.clone()]
            } else {
                spec.trusted_accounts.clone()
            },
            oidc: spec.oidc.clone(),
            max_session_seconds: max,
        };
        let arn = role.arn();
        self.roles
            .insert((account_id, spec.name.to_ascii_lowercase()), role);
        Ok(arn)
    }

    /// A role by account and name (case-insensitive).
    pub fn role(&self, account: &str, name: &str) -> Option<&Role> {
        self.roles
            .get(&(account.to_owned(), name.to_ascii_lowercase()))
    }

    /// Registers (or replaces) an OIDC provider; returns its ARN.
    pub fn add_provider(
        &mut self,
        spec: &OidcProviderSpec,
        default_account: &str,
    ) -> Result<String, EmulatorError> {
        if spec.name.is_empty() || spec.issuer.is_empty() {
            return Err(EmulatorError::Invalid(
                "an OIDC provider needs a name and an issuer".to_owned(),
            ));
        }
        let account_id = spec
            .account_id
            .clone()
            .unwrap_or_else(|| default_account.to_owned());
        let arn = oidc_provider_arn(&account_id, &spec.name);
        self.providers.insert(
            arn.clone(),
            OidcProvider {
                arn: arn.clone(),
                account_id,
                issuer: spec.issuer.clone(),
                client_ids: if spec.client_ids.is_empty() {
                    vec![DEFAULT_AUDIENCE.to_owned()]
                } else {
                    spec.client_ids.clone()
                },
            },
        );
        Ok(arn)
    }

    /// A provider by ARN.
    pub fn provider(&self, arn: &str) -> Option<&OidcProvider> {
        self.providers.get(arn)
    }

    /// What signed with `access_key_id`, if it is known.
    pub fn signer(&self, access_key_id: &str) -> Option<Signer> {
        if let Some(session) = self.sessions.get(access_key_id) {
            let caller = self
                .role(&session.account_id, &session.role_name)
                .map(|role| Caller {
                    account_id: role.account_id.clone(),
                    grants: role.grants.clone(),
                    arn: format!(
                        "acs:ram::{}:assumed-role/{}/{}",
                        role.account_id, role.name, session.session_name
                    ),
                    access_key_id: session.access_key_id.clone(),
                    identity_type: "AssumedRoleUser",
                });
            return Some(Signer::Session {
                secret: session.secret.clone(),
                token: session.token.clone(),
                expiration: session.expiration,
                caller,
            });
        }
        self.keys.get(access_key_id).map(|key| Signer::Key {
            secret: key.secret.clone(),
            caller: Caller {
                account_id: key.account_id.clone(),
                grants: key.grants.clone(),
                arn: format!("acs:ram::{}:user/{}", key.account_id, key.user),
                access_key_id: key.id.clone(),
                identity_type: "RAMUser",
            },
            enabled: key.enabled,
        })
    }

    /// Issues STS credentials for a role session lasting `seconds`.
    pub fn issue(
        &mut self,
        account: &str,
        role_name: &str,
        session_name: &str,
        seconds: u64,
        now: i64,
    ) -> Result<IssuedCredentials, EmulatorError> {
        self.sessions.retain(|_, s| s.expiration > now - 86_400);
        let access_key_id = format!("STS.NU{}", clock::random_alnum(22)?);
        let secret = Zeroizing::new(clock::random_alnum(44)?);
        // Real tokens start with CAIS and are long standard base64 (with '+', '/' and '='),
        // which exercises the clients' encoding of header and query values.
        let token = Zeroizing::new(format!("CAIS{}", clock::random_base64::<190>()?));
        let expiration = now.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX));
        self.sessions.insert(
            access_key_id.clone(),
            Session {
                access_key_id: access_key_id.clone(),
                secret: secret.clone(),
                token: token.clone(),
                expiration,
                account_id: account.to_owned(),
                role_name: role_name.to_owned(),
                session_name: session_name.to_owned(),
            },
        );
        Ok(IssuedCredentials {
            access_key_id,
            access_key_secret: secret,
            security_token: token,
            expiration,
        })
    }

    /// The credentials of a live session, as issued.
    pub fn credentials_of(&self, access_key_id: &str) -> Option<IssuedCredentials> {
        self.sessions.get(access_key_id).map(|s| IssuedCredentials {
            access_key_id: s.access_key_id.clone(),
            access_key_secret: s.secret.clone(),
            security_token: s.token.clone(),
            expiration: s.expiration,
        })
    }

    /// Makes every issued STS credential expired (as if its time had passed).
    pub fn expire_sessions(&mut self, now: i64) {
        for session in self.sessions.values_mut() {
            session.expiration = session.expiration.min(now - 1);
        }
        self.ecs_session = None;
    }

    /// Records a signature nonce of a key; `false` when it was seen in the last 15 minutes.
    pub fn use_nonce(&mut self, access_key_id: &str, nonce: &str, now: i64) -> bool {
        if self.nonces.len() > 10_000 {
            self.nonces
                .retain(|_, seen| now - *seen <= TIMESTAMP_TOLERANCE_SECONDS * 2);
        }
        let key = (access_key_id.to_owned(), nonce.to_owned());
        match self.nonces.get(&key) {
            Some(seen) if now - *seen <= TIMESTAMP_TOLERANCE_SECONDS * 2 => false,
            _ => {
                self.nonces.insert(key, now);
                true
            }
        }
    }

    /// Issues an ECS metadata token valid for `ttl` seconds.
    pub fn metadata_token(&mut self, ttl: i64, now: i64) -> Result<String, EmulatorError> {
        self.metadata_tokens.retain(|_, expiry| *expiry > now);
        let token = clock::random_base64::<33>()?;
        self.metadata_tokens.insert(token.clone(), now + ttl);
        Ok(token)
    }

    /// Whether a metadata token is known and unexpired.
    pub fn metadata_token_valid(&self, token: &str, now: i64) -> bool {
        self.metadata_tokens.iter().any(|(known, expiry)| {
            *expiry > now && bool::from(known.as_bytes().ct_eq(token.as_bytes()))
        })
    }

    /// The registered AccessKey ids, roles and providers (no secrets), for the admin API.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "access_keys": self.keys.values().map(|k| serde_json::json!({
                "id": k.id, "account_id": k.account_id, "user": k.user,
                "grants": k.grants, "enabled": k.enabled,
            })).collect::<Vec<_>>(),
            "roles": self.roles.values().map(|r| serde_json::json!({
                "arn": r.arn(), "account_id": r.account_id, "name": r.name, "grants": r.grants,
                "trusted_accounts": r.trusted_accounts, "oidc": r.oidc,
                "max_session_seconds": r.max_session_seconds,
            })).collect::<Vec<_>>(),
            "oidc_providers": self.providers.values().map(|p| serde_json::json!({
                "arn": p.arn, "issuer": p.issuer, "client_ids": p.client_ids,
            })).collect::<Vec<_>>(),
            "ecs_role": self.ecs_role.as_ref().map(|(account, name)| role_arn(account, name)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_texts() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("db-*", "db-password"));
        assert!(!glob_match("db-*", "xdb-password"));
        assert!(glob_match("*-prod", "api-prod"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c*e", "abcdf"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match(
            "acs:kms:*:222:secret/*",
            "acs:kms:cn-hangzhou:222:secret/db"
        ));
    }

    #[test]
    fn bare_patterns_stay_in_the_own_account() {
        let all = vec!["*".to_owned()];
        assert!(allows(&all, "111", "111", "db", "acs:kms:r:111:secret/db"));
        assert!(!allows(&all, "111", "222", "db", "acs:kms:r:222:secret/db"));
        let cross = vec!["acs:kms:*:222:secret/shared-*".to_owned()];
        assert!(allows(
            &cross,
            "111",
            "222",
            "shared-db",
            "acs:kms:r:222:secret/shared-db"
        ));
        assert!(!allows(
            &cross,
            "111",
            "222",
            "db",
            "acs:kms:r:222:secret/db"
        ));
    }

    #[test]
    fn ram_arns_round_trip() {
        let arn = role_arn("123", "MyRole");
        assert_eq!(arn, "acs:ram::123:role/myrole");
        assert_eq!(parse_ram_arn(&arn, "role"), Some(("123", "myrole")));
        assert_eq!(
            parse_ram_arn("acs:ram::123:oidc-provider/ack-rrsa-c1", "oidc-provider"),
            Some(("123", "ack-rrsa-c1"))
        );
        assert_eq!(parse_ram_arn("acs:ram::123:role/", "role"), None);
        assert_eq!(parse_ram_arn("acs:kms::123:role/x", "role"), None);
    }

    #[test]
    fn nonces_are_single_use() {
        let mut directory = Directory::default();
        assert!(directory.use_nonce("k", "n1", 1000));
        assert!(!directory.use_nonce("k", "n1", 1500));
        assert!(directory.use_nonce("other", "n1", 1500));
        assert!(directory.use_nonce("k", "n1", 1000 + 1801));
    }

    #[test]
    fn sessions_are_issued_found_and_expired() {
        let mut directory = Directory::default();
        directory.add_role(&RoleSpec::new("reader"), "111").unwrap();
        let issued = directory.issue("111", "reader", "s1", 900, 1000).unwrap();
        assert!(issued.access_key_id.starts_with("STS."));
        assert!(issued.security_token.starts_with("CAIS"));
        let Some(Signer::Session {
            caller, expiration, ..
        }) = directory.signer(&issued.access_key_id)
        else {
            panic!("the session signs");
        };
        assert_eq!(expiration, 1900);
        assert_eq!(caller.unwrap().arn, "acs:ram::111:assumed-role/reader/s1");
        directory.expire_sessions(1000);
        let Some(Signer::Session { expiration, .. }) = directory.signer(&issued.access_key_id)
        else {
            panic!("the session is still known");
        };
        assert!(expiration < 1000);
    }

    #[test]
    fn specs_and_credentials_hide_secrets() {
        let spec = AccessKeySpec::new("LTAI1", "hunter2");
        assert!(!format!("{spec:?}").contains("hunter2"));
        let mut directory = Directory::default();
        directory.add_role(&RoleSpec::new("r"), "1").unwrap();
        let issued = directory.issue("1", "r", "s", 900, 0).unwrap();
        let shown = format!("{issued:?}");
        assert!(!shown.contains(issued.access_key_secret.as_str()));
        assert!(!shown.contains(issued.security_token.as_str()));
    }

    #[test]
    fn metadata_tokens_expire() {
        let mut directory = Directory::default();
        let token = directory.metadata_token(10, 100).unwrap();
        assert!(directory.metadata_token_valid(&token, 105));
        assert!(!directory.metadata_token_valid(&token, 110));
        assert!(!directory.metadata_token_valid("other", 105));
    }
}
