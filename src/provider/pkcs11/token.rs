//! The token behind the PKCS#11 provider: the loaded module, the logged-in connection to one
//! token, a pool of sessions, the configured keys resolved on it, and the sorting of PKCS#11
//! return codes into [`ProviderError`]s.
//!
//! A session that meets a token reset (CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_REMOVED,
//! CKR_TOKEN_NOT_PRESENT, CKR_CRYPTOKI_NOT_INITIALIZED…) throws the whole connection away; the
//! call is tried once more on a fresh connection, which logs in again. A PIN the token refused
//! is remembered and never presented again: the next attempt re-reads the PIN source and gives
//! up without calling C_Login while it still holds the refused PIN.
//!
//! Everything here blocks; it is called from `spawn_blocking` only. Nothing here logs or
//! formats the PIN or key bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use sha2::{Digest, Sha256};

use super::mechanism::WrapMechanism;
use super::{Pin, PinSource, Pkcs11Config, TokenSelector, key_id};
use crate::crypto::KEY_LEN;
use crate::provider::{KeyVersion, ProviderError};

/// Sessions kept open at most; a call beyond that waits for one to come back.
const MAX_SESSIONS: usize = 16;
/// How long a call waits for a free session before giving up.
const SESSION_WAIT: Duration = Duration::from_secs(2);
/// The smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: u64 = 2048;

/// Modules loaded in this process, by path. PKCS#11 allows one C_Initialize per module and
/// process, so every provider on the same module shares one context.
static MODULES: LazyLock<Mutex<HashMap<PathBuf, Pkcs11>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Counters of token activity since the provider was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounters {
    /// Operations that reached the token (each may make several PKCS#11 calls).
    pub operations: u64,
    /// C_Login calls made.
    pub logins: u64,
    /// Connections opened after the first (token resets survived).
    pub reconnects: u64,
}

/// A PKCS#11 failure with the token it came from, kept as the source of
/// [`ProviderError::Unavailable`].
#[derive(Debug)]
pub struct TokenError {
    token: String,
    error: CryptokiError,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.token, self.error)
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Why a call on a session failed: a PKCS#11 error still to be sorted, or a decided outcome.
#[derive(Debug)]
pub(super) enum Failure {
    /// A PKCS#11 call failed; [`Token::run`] decides what it means.
    Token(CryptokiError),
    /// Already a provider error (e.g. an unwrap that did not authenticate).
    Provider(ProviderError),
}

impl From<CryptokiError> for Failure {
    fn from(error: CryptokiError) -> Self {
        Self::Token(error)
    }
}

impl From<ProviderError> for Failure {
    fn from(error: ProviderError) -> Self {
        Self::Provider(error)
    }
}

/// What a PKCS#11 error means for the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    /// The token or the library was reset: reconnect and try once more.
    Reset,
    /// An object handle went stale (the key was deleted or re-created): look keys up again.
    StaleHandle,
    /// The token refused the PIN: never retry with it.
    PinRefused,
    /// The key, its attributes or the module cannot do what is configured.
    Misconfigured,
    /// Anything else: the token misbehaved; worth retrying later.
    Transient,
}

fn meaning(error: &CryptokiError) -> Meaning {
    use RvError as Rv;
    match error {
        CryptokiError::Pkcs11(rv, _) => match rv {
            Rv::SessionHandleInvalid
            | Rv::SessionClosed
            | Rv::DeviceRemoved
            | Rv::DeviceError
            | Rv::TokenNotPresent
            | Rv::TokenNotRecognized
            | Rv::CryptokiNotInitialized
            | Rv::UserNotLoggedIn
            | Rv::SlotIdInvalid => Meaning::Reset,
            Rv::ObjectHandleInvalid
            | Rv::KeyHandleInvalid
            | Rv::WrappingKeyHandleInvalid
            | Rv::UnwrappingKeyHandleInvalid => Meaning::StaleHandle,
            Rv::PinIncorrect
            | Rv::PinInvalid
            | Rv::PinLenRange
            | Rv::PinExpired
            | Rv::PinLocked => Meaning::PinRefused,
            Rv::KeyFunctionNotPermitted
            | Rv::KeyTypeInconsistent
            | Rv::KeySizeRange
            | Rv::KeyUnextractable
            | Rv::KeyNotWrappable
            | Rv::MechanismInvalid
            | Rv::MechanismParamInvalid
            | Rv::TemplateIncomplete
            | Rv::TemplateInconsistent
            | Rv::AttributeTypeInvalid
            | Rv::AttributeValueInvalid
            | Rv::FunctionNotSupported
            | Rv::WrappingKeySizeRange
            | Rv::WrappingKeyTypeInconsistent
            | Rv::UnwrappingKeySizeRange
            | Rv::UnwrappingKeyTypeInconsistent
            | Rv::UserPinNotInitialized
            | Rv::UserTypeInvalid => Meaning::Misconfigured,
            _ => Meaning::Transient,
        },
        CryptokiError::LibraryLoading(_)
        | CryptokiError::MissingSymbol(_)
        | CryptokiError::NullFunctionPointer
        | CryptokiError::NotSupported => Meaning::Misconfigured,
        _ => Meaning::Transient,
    }
}

/// Whether `error` is the PKCS#11 return code `rv`.
pub(super) fn is_rv(error: &CryptokiError, rv: RvError) -> bool {
    matches!(error, CryptokiError::Pkcs11(found, _) if *found == rv)
}

/// The mechanisms this token offers for wrapping, as C_GetMechanismInfo reports them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Mechanisms {
    /// CKM_AES_KEY_WRAP_PAD with both wrap and unwrap.
    pub aes_key_wrap_pad: bool,
    /// CKM_AES_GCM with both encrypt and decrypt.
    pub aes_gcm: bool,
    /// CKM_RSA_PKCS_OAEP with both encrypt and decrypt.
    pub rsa_oaep: bool,
}

impl Mechanisms {
    pub fn query(pkcs11: &Pkcs11, slot: Slot) -> Self {
        let info = |mechanism| pkcs11.get_mechanism_info(slot, mechanism).ok();
        Self {
            aes_key_wrap_pad: info(MechanismType::AES_KEY_WRAP_PAD)
                .is_some_and(|info| info.wrap() && info.unwrap()),
            aes_gcm: info(MechanismType::AES_GCM)
                .is_some_and(|info| info.encrypt() && info.decrypt()),
            rsa_oaep: info(MechanismType::RSA_PKCS_OAEP)
                .is_some_and(|info| info.encrypt() && info.decrypt()),
        }
    }
}

/// The token's identity, as its key_ids include it.
#[derive(Debug, Clone)]
pub(super) struct TokenIdentity {
    pub serial: String,
    pub label: String,
}

/// A configured key found on the token.
#[derive(Debug)]
pub(super) struct ResolvedKey {
    /// The label (the key version) and key_id.
    pub version: KeyVersion,
    /// The objects and what they can do.
    pub handles: KeyHandles,
}

/// The token objects behind a key label.
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyHandles {
    /// One AES secret key.
    Aes {
        /// The key.
        key: ObjectHandle,
        /// Wraps with CKM_AES_KEY_WRAP_PAD (the token has it, the key allows wrap and unwrap).
        key_wrap_pad: bool,
        /// Wraps with AES-GCM (the token has it, the key allows encrypt and decrypt).
        gcm: bool,
    },
    /// One RSA key pair.
    Rsa {
        /// The public key, for wrapping.
        public: ObjectHandle,
        /// The private key, for unwrapping.
        private: ObjectHandle,
        /// The modulus length in bytes (the length of every wrapped KEK).
        modulus_len: usize,
        /// The OAEP variant this token accepts for wrapping, if any.
        oaep: Option<WrapMechanism>,
    },
}

impl ResolvedKey {
    /// The mechanism new KEKs are wrapped with, if the key can wrap at all.
    pub fn wrap_mechanism(&self) -> Option<WrapMechanism> {
        match self.handles {
            KeyHandles::Aes {
                key_wrap_pad: true, ..
            } => Some(WrapMechanism::AesKeyWrapPad),
            KeyHandles::Aes { gcm: true, .. } => Some(WrapMechanism::AesGcm),
            KeyHandles::Aes { .. } => None,
            KeyHandles::Rsa { oaep, .. } => oaep,
        }
    }

    /// A short description for `kube-kms keys list`.
    pub fn describe(&self) -> String {
        let kind = match self.handles {
            KeyHandles::Aes { .. } => "AES-256".to_owned(),
            KeyHandles::Rsa { modulus_len, .. } => format!("RSA-{}", modulus_len * 8),
        };
        match self.wrap_mechanism() {
            Some(mechanism) => format!("{kind}, wraps with {}", mechanism.name()),
            None => format!("{kind}, cannot wrap (unwrap only)"),
        }
    }
}

/// One logged-in connection to the token; replaced as a whole after a reset.
pub(super) struct Connection {
    generation: u64,
    pkcs11: Pkcs11,
    slot: Slot,
    identity: TokenIdentity,
    mechanisms: Mechanisms,
    description: String,
    keys: Mutex<HashMap<String, Arc<ResolvedKey>>>,
}

/// A session lent to one call, with the connection it belongs to.
pub(super) struct TokenSession<'a> {
    connection: &'a Connection,
    /// The PKCS#11 session.
    pub session: &'a Session,
}

impl TokenSession<'_> {
    /// The configured key `label` on this token: from the connection's cache unless `fresh`.
    /// The caller has checked that `label` is configured.
    pub fn resolve(&self, label: &str, fresh: bool) -> Result<Arc<ResolvedKey>, Failure> {
        let keys = &self.connection.keys;
        if !fresh && let Some(found) = lock(keys).get(label) {
            return Ok(Arc::clone(found));
        }
        let resolved = Arc::new(resolve_key(
            self.session,
            &self.connection.identity,
            self.connection.mechanisms,
            &self.connection.description,
            label,
        )?);
        lock(keys).insert(label.to_owned(), Arc::clone(&resolved));
        Ok(resolved)
    }

    /// Forgets every resolved key, so that the next call looks them up again.
    fn forget_keys(&self) {
        lock(&self.connection.keys).clear();
    }
}

struct Refusal {
    pin: Pin,
    reason: String,
}

#[derive(Default)]
struct PoolState {
    generation: u64,
    connection: Option<Arc<Connection>>,
    idle: Vec<Session>,
    open: usize,
    refused: Option<Refusal>,
}

/// The token a provider uses: how to reach it and the pool of sessions on it.
pub(super) struct Token {
    module: PathBuf,
    selector: TokenSelector,
    pin_source: PinSource,
    state: Mutex<PoolState>,
    returned: Condvar,
    operations: AtomicU64,
    logins: AtomicU64,
    reconnects: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Token {
    pub fn new(config: &Pkcs11Config) -> Self {
        Self {
            module: config.module.clone(),
            selector: config.token.clone(),
            pin_source: config.pin.clone(),
            state: Mutex::new(PoolState::default()),
            returned: Condvar::new(),
            operations: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    pub fn counters(&self) -> TokenCounters {
        TokenCounters {
            operations: self.operations.load(Ordering::Relaxed),
            logins: self.logins.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }

    /// "token "x" (serial …)" once connected, else how the configuration names it.
    pub fn describe(&self) -> String {
        match &lock(&self.state).connection {
            Some(connection) => connection.description.clone(),
            None => self.selector.to_string(),
        }
    }

    /// Runs `work` on a pooled session. A reset or a stale key handle is retried once on a
    /// fresh connection or fresh key lookup; every other failure is sorted into a
    /// [`ProviderError`] naming `operation`.
    pub fn run<T>(
        &self,
        operation: &str,
        mut work: impl FnMut(&TokenSession<'_>) -> Result<T, Failure>,
    ) -> Result<T, ProviderError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let mut retried = false;
        loop {
            let (connection, session) = self.checkout()?;
            let lent = TokenSession {
                connection: &connection,
                session: &session,
            };
            let outcome = work(&lent);
            let error = match outcome {
                Ok(value) => {
                    self.checkin(&connection, session);
                    return Ok(value);
                }
                Err(Failure::Provider(error)) => {
                    self.checkin(&connection, session);
                    return Err(error);
                }
                Err(Failure::Token(error)) => error,
            };
            match meaning(&error) {
                Meaning::Reset if !retried => {
                    tracing::warn!(
                        token = %connection.description,
                        %error,
                        "the token was reset; reconnecting"
                    );
                    self.discard(&connection, session);
                }
                Meaning::StaleHandle if !retried => {
                    lent.forget_keys();
                    self.checkin(&connection, session);
                }
                Meaning::Reset => {
                    self.discard(&connection, session);
                    return Err(unavailable(operation, &connection.description, error));
                }
                _ => {
                    self.checkin(&connection, session);
                    return Err(sort(operation, &connection.description, error));
                }
            }
            retried = true;
        }
    }

    fn checkout(&self) -> Result<(Arc<Connection>, Session), ProviderError> {
        let mut state = lock(&self.state);
        let mut reconnected = false;
        loop {
            let connection = match &state.connection {
                Some(connection) => Arc::clone(connection),
                None => {
                    reconnected = true;
                    self.connect(&mut state)?
                }
            };
            if let Some(session) = state.idle.pop() {
                return Ok((connection, session));
            }
            if state.open < MAX_SESSIONS {
                match connection.pkcs11.open_ro_session(connection.slot) {
                    Ok(session) => {
                        state.open += 1;
                        return Ok((connection, session));
                    }
                    Err(error) if meaning(&error) == Meaning::Reset && !reconnected => {
                        Self::drop_connection(&mut state, connection.generation);
                        continue;
                    }
                    Err(error) => {
                        return Err(sort("open a session", &connection.description, error));
                    }
                }
            }
            let (next, timeout) = self
                .returned
                .wait_timeout(state, SESSION_WAIT)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            if timeout.timed_out() && state.idle.is_empty() && state.open >= MAX_SESSIONS {
                return Err(ProviderError::Unavailable {
                    operation: "wait for a token session".into(),
                    source: Arc::new(std::io::Error::other(format!(
                        "all {MAX_SESSIONS} sessions on {} stayed busy for {SESSION_WAIT:?}",
                        connection.description
                    ))),
                });
            }
        }
    }

    fn checkin(&self, connection: &Connection, session: Session) {
        let mut state = lock(&self.state);
        if state.generation == connection.generation && state.connection.is_some() {
            state.idle.push(session);
        } else {
            state.open = state.open.saturating_sub(1);
            drop(session);
        }
        drop(state);
        self.returned.notify_one();
    }

    fn discard(&self, connection: &Connection, session: Session) {
        let mut state = lock(&self.state);
        state.open = state.open.saturating_sub(1);
        drop(session);
        Self::drop_connection(&mut state, connection.generation);
        drop(state);
        self.returned.notify_all();
    }

    /// Forgets the connection of `generation` (if still current) and its idle sessions.
    fn drop_connection(state: &mut PoolState, generation: u64) {
        if state.generation == generation && state.connection.is_some() {
            state.open = state.open.saturating_sub(state.idle.len());
            state.idle.clear();
            state.connection = None;
        }
    }

    /// Loads and initialises the module, finds the token, logs in and makes a new connection
    /// with one idle session. Holds the pool lock, so only one thread logs in at a time.
    fn connect(&self, state: &mut PoolState) -> Result<Arc<Connection>, ProviderError> {
        if state.generation > 0 {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let pkcs11 = initialised_module(&self.module)?;
        let slot = find_slot(&pkcs11, &self.selector, &self.module)?;
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| sort("read token information", &self.selector.to_string(), e))?;
        let identity = TokenIdentity {
            serial: info.serial_number().to_owned(),
            label: info.label().to_owned(),
        };
        let description = format!("token {:?} (serial {})", identity.label, identity.serial);
        if info.user_pin_locked() {
            return Err(misconfigured(format!(
                "the user PIN of {description} is locked after too many wrong PINs; its \
                 security officer must unlock it (kube-kms will not try to log in)"
            )));
        }
        let pin = Pin::read(&self.pin_source)?;
        if let Some(refusal) = &state.refused
            && refusal.pin.same_as(&pin)
        {
            return Err(misconfigured(format!(
                "{}; kube-kms does not present a refused PIN twice (tokens lock out): correct \
                 the {}",
                refusal.reason, self.pin_source
            )));
        }
        let session = pkcs11
            .open_ro_session(slot)
            .map_err(|e| sort("open a session", &description, e))?;
        self.logins.fetch_add(1, Ordering::Relaxed);
        match session.login(UserType::User, Some(&pin.auth_pin())) {
            Ok(()) => {}
            Err(error) if is_rv(&error, RvError::UserAlreadyLoggedIn) => {}
            Err(error) if meaning(&error) == Meaning::PinRefused => {
                let reason = format!(
                    "{description} refused the PIN from the {} ({})",
                    self.pin_source,
                    return_code(&error)
                );
                tracing::error!(token = %description, "the token refused the PIN; not retrying");
                state.refused = Some(Refusal {
                    pin,
                    reason: reason.clone(),
                });
                return Err(misconfigured(reason));
            }
            Err(error) => return Err(sort("log in", &description, error)),
        }
        state.refused = None;
        let mechanisms = Mechanisms::query(&pkcs11, slot);
        state.generation += 1;
        let connection = Arc::new(Connection {
            generation: state.generation,
            pkcs11,
            slot,
            identity,
            mechanisms,
            description,
            keys: Mutex::new(HashMap::new()),
        });
        state.connection = Some(Arc::clone(&connection));
        state.idle.push(session);
        state.open += 1;
        tracing::info!(
            token = %connection.description,
            generation = connection.generation,
            "logged in to the PKCS#11 token"
        );
        Ok(connection)
    }
}

/// The module at `path`, loaded once per process and initialised (again, if something in the
/// process finalised it).
pub(super) fn initialised_module(path: &Path) -> Result<Pkcs11, ProviderError> {
    let pkcs11 = {
        let mut modules = lock(&MODULES);
        match modules.get(path) {
            Some(pkcs11) => pkcs11.clone(),
            None => {
                let pkcs11 = Pkcs11::new(path).map_err(|error| {
                    misconfigured(format!(
                        "cannot load the PKCS#11 module {}: {error}",
                        path.display()
                    ))
                })?;
                modules.insert(path.to_owned(), pkcs11.clone());
                pkcs11
            }
        }
    };
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => Ok(pkcs11),
        Err(error) if is_rv(&error, RvError::CryptokiAlreadyInitialized) => Ok(pkcs11),
        Err(error) => Err(sort(
            "initialise the module",
            &path.display().to_string(),
            error,
        )),
    }
}

/// The slot holding the selected token.
pub(super) fn find_slot(
    pkcs11: &Pkcs11,
    selector: &TokenSelector,
    module: &Path,
) -> Result<Slot, ProviderError> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| sort("list slots", &module.display().to_string(), e))?;
    let not_found = |what: String| ProviderError::Unavailable {
        operation: "find the token".into(),
        source: Arc::new(std::io::Error::other(what)),
    };
    match selector {
        TokenSelector::Slot(id) => slots
            .into_iter()
            .find(|slot| slot.id() == *id)
            .ok_or_else(|| not_found(format!("no token in slot {id} of {}", module.display()))),
        TokenSelector::Label(label) => {
            let mut present = Vec::new();
            let mut matching = Vec::new();
            for slot in slots {
                if let Ok(info) = pkcs11.get_token_info(slot) {
                    if info.label() == label {
                        matching.push(slot);
                    }
                    present.push(info.label().to_owned());
                }
            }
            match matching.as_slice() {
                [slot] => Ok(*slot),
                [] => Err(not_found(format!(
                    "no token labelled {label:?} on {} (tokens present: {present:?})",
                    module.display()
                ))),
                several => Err(misconfigured(format!(
                    "{} tokens are labelled {label:?} on {}; select one by slot instead",
                    several.len(),
                    module.display()
                ))),
            }
        }
    }
}

/// Finds the objects labelled `label` and checks they form one usable key. Looks at no
/// object with another label.
pub(super) fn resolve_key(
    session: &Session,
    identity: &TokenIdentity,
    mechanisms: Mechanisms,
    description: &str,
    label: &str,
) -> Result<ResolvedKey, Failure> {
    let objects = session.find_objects(&[
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    let mut secret = Vec::new();
    let mut private = Vec::new();
    let mut public = Vec::new();
    for object in objects {
        let attributes = session.get_attributes(object, &[AttributeType::Class])?;
        match attributes.first() {
            Some(Attribute::Class(class)) if *class == ObjectClass::SECRET_KEY => {
                secret.push(object);
            }
            Some(Attribute::Class(class)) if *class == ObjectClass::PRIVATE_KEY => {
                private.push(object);
            }
            Some(Attribute::Class(class)) if *class == ObjectClass::PUBLIC_KEY => {
                public.push(object);
            }
            _ => {}
        }
    }
    match (secret.as_slice(), private.as_slice(), public.as_slice()) {
        ([], [], _) => Err(ProviderError::Revoked {
            reason: format!(
                "{description} holds no key labelled {label:?}: it was deleted, or never \
                 created (see `kube-kms keys create`)"
            ),
        }
        .into()),
        ([key], [], _) => resolve_aes(session, identity, mechanisms, description, label, *key),
        ([], [private], [public]) => resolve_rsa(
            session,
            identity,
            mechanisms,
            description,
            label,
            *private,
            *public,
        ),
        ([], [_], []) => Err(misconfigured(format!(
            "{description} holds an RSA private key labelled {label:?} but no public key with \
             that label to wrap with"
        ))
        .into()),
        (secret, private, public) => Err(misconfigured(format!(
            "the label {label:?} names {} secret keys, {} private keys and {} public keys on \
             {description}; a key label must name exactly one AES key or one RSA key pair",
            secret.len(),
            private.len(),
            public.len()
        ))
        .into()),
    }
}

fn bool_attribute(attributes: &[Attribute], wanted: AttributeType) -> bool {
    attributes.iter().any(|attribute| {
        attribute.attribute_type() == wanted
            && matches!(
                attribute,
                Attribute::Wrap(true)
                    | Attribute::Unwrap(true)
                    | Attribute::Encrypt(true)
                    | Attribute::Decrypt(true)
            )
    })
}

fn bytes_attribute(attributes: &[Attribute], wanted: AttributeType) -> Vec<u8> {
    attributes
        .iter()
        .find_map(|attribute| match attribute {
            Attribute::Id(bytes) if wanted == AttributeType::Id => Some(bytes.clone()),
            Attribute::CheckValue(bytes) if wanted == AttributeType::CheckValue => {
                Some(bytes.clone())
            }
            Attribute::Modulus(bytes) if wanted == AttributeType::Modulus => Some(bytes.clone()),
            Attribute::PublicExponent(bytes) if wanted == AttributeType::PublicExponent => {
                Some(bytes.clone())
            }
            _ => None,
        })
        .unwrap_or_default()
}

fn resolve_aes(
    session: &Session,
    identity: &TokenIdentity,
    mechanisms: Mechanisms,
    description: &str,
    label: &str,
    key: ObjectHandle,
) -> Result<ResolvedKey, Failure> {
    let attributes = session.get_attributes(
        key,
        &[
            AttributeType::KeyType,
            AttributeType::ValueLen,
            AttributeType::Id,
            AttributeType::Wrap,
            AttributeType::Unwrap,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
        ],
    )?;
    let is_aes = attributes
        .iter()
        .any(|a| matches!(a, Attribute::KeyType(kind) if *kind == KeyType::AES));
    let len = attributes.iter().find_map(|a| match a {
        Attribute::ValueLen(len) => Some(u64::from(*len)),
        _ => None,
    });
    if !is_aes || len != Some(32) {
        return Err(misconfigured(format!(
            "the secret key labelled {label:?} on {description} is not an AES-256 key"
        ))
        .into());
    }
    // CKA_CHECK_VALUE is public by design (a key check value); not every token has it.
    let check_value = session
        .get_attributes(key, &[AttributeType::CheckValue])
        .map(|found| bytes_attribute(&found, AttributeType::CheckValue))
        .unwrap_or_default();
    let id = bytes_attribute(&attributes, AttributeType::Id);
    let version = KeyVersion::new(
        &key_id(&identity.serial, &identity.label, label, &id, &check_value),
        label,
    )?;
    Ok(ResolvedKey {
        version,
        handles: KeyHandles::Aes {
            key,
            key_wrap_pad: mechanisms.aes_key_wrap_pad
                && bool_attribute(&attributes, AttributeType::Wrap)
                && bool_attribute(&attributes, AttributeType::Unwrap),
            gcm: mechanisms.aes_gcm
                && bool_attribute(&attributes, AttributeType::Encrypt)
                && bool_attribute(&attributes, AttributeType::Decrypt),
        },
    })
}

fn resolve_rsa(
    session: &Session,
    identity: &TokenIdentity,
    mechanisms: Mechanisms,
    description: &str,
    label: &str,
    private: ObjectHandle,
    public: ObjectHandle,
) -> Result<ResolvedKey, Failure> {
    let wanted = [
        AttributeType::KeyType,
        AttributeType::Id,
        AttributeType::Modulus,
        AttributeType::PublicExponent,
        AttributeType::Encrypt,
        AttributeType::Decrypt,
    ];
    let public_attributes = session.get_attributes(public, &wanted)?;
    let private_attributes = session.get_attributes(private, &wanted)?;
    let is_rsa = |attributes: &[Attribute]| {
        attributes
            .iter()
            .any(|a| matches!(a, Attribute::KeyType(kind) if *kind == KeyType::RSA))
    };
    let modulus = bytes_attribute(&public_attributes, AttributeType::Modulus);
    let modulus = &modulus[modulus.iter().take_while(|b| **b == 0).count()..];
    let private_modulus = bytes_attribute(&private_attributes, AttributeType::Modulus);
    let private_modulus =
        &private_modulus[private_modulus.iter().take_while(|b| **b == 0).count()..];
    if !is_rsa(&public_attributes) || !is_rsa(&private_attributes) {
        return Err(misconfigured(format!(
            "the key pair labelled {label:?} on {description} is not an RSA key pair"
        ))
        .into());
    }
    if modulus != private_modulus {
        return Err(misconfigured(format!(
            "the public and private keys labelled {label:?} on {description} are not one pair"
        ))
        .into());
    }
    let bits = u64::try_from(modulus.len() * 8).unwrap_or(0);
    if bits < MIN_RSA_BITS {
        return Err(misconfigured(format!(
            "the RSA key labelled {label:?} on {description} has {bits} bits; at least \
             {MIN_RSA_BITS} are required"
        ))
        .into());
    }
    let exponent = bytes_attribute(&public_attributes, AttributeType::PublicExponent);
    let fingerprint = Sha256::new()
        .chain_update(
            u32::try_from(modulus.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        )
        .chain_update(modulus)
        .chain_update(&exponent)
        .finalize();
    let id = bytes_attribute(&public_attributes, AttributeType::Id);
    let version = KeyVersion::new(
        &key_id(&identity.serial, &identity.label, label, &id, &fingerprint),
        label,
    )?;
    let can_use = mechanisms.rsa_oaep
        && bool_attribute(&public_attributes, AttributeType::Encrypt)
        && bool_attribute(&private_attributes, AttributeType::Decrypt);
    let oaep = if can_use {
        probe_oaep(session, public)?
    } else {
        None
    };
    Ok(ResolvedKey {
        version,
        handles: KeyHandles::Rsa {
            public,
            private,
            modulus_len: modulus.len(),
            oaep,
        },
    })
}

/// Which OAEP variant the token accepts with this public key: SHA-256 if it can, else SHA-1
/// (SoftHSM 2.6 rejects SHA-256 OAEP parameters with CKR_ARGUMENTS_BAD), else none. Encrypts
/// 32 zero bytes with the public key; nothing secret is involved.
fn probe_oaep(session: &Session, public: ObjectHandle) -> Result<Option<WrapMechanism>, Failure> {
    let probe = [0u8; KEY_LEN];
    for mechanism in [WrapMechanism::RsaOaepSha256, WrapMechanism::RsaOaepSha1] {
        let params = Mechanism::RsaPkcsOaep(mechanism.oaep_params());
        match session.encrypt(&params, public, &probe) {
            Ok(_) => return Ok(Some(mechanism)),
            Err(error)
                if is_rv(&error, RvError::ArgumentsBad)
                    || is_rv(&error, RvError::MechanismParamInvalid)
                    || is_rv(&error, RvError::MechanismInvalid) =>
            {
                continue;
            }
            Err(error) => return Err(Failure::Token(error)),
        }
    }
    Ok(None)
}

fn misconfigured(reason: String) -> ProviderError {
    ProviderError::Misconfigured { reason }
}

fn unavailable(operation: &str, token: &str, error: CryptokiError) -> ProviderError {
    ProviderError::Unavailable {
        operation: operation.to_owned(),
        source: Arc::new(TokenError {
            token: token.to_owned(),
            error,
        }),
    }
}

/// The PKCS#11 return code and function, e.g. "PinIncorrect from C_Login", or the error's text.
fn return_code(error: &CryptokiError) -> String {
    match error {
        CryptokiError::Pkcs11(rv, function) => format!("{rv:?} from C_{function:?}"),
        other => other.to_string(),
    }
}

/// Sorts a PKCS#11 error that the caller could not handle into a provider error.
fn sort(operation: &str, token: &str, error: CryptokiError) -> ProviderError {
    match meaning(&error) {
        Meaning::PinRefused | Meaning::Misconfigured => misconfigured(format!(
            "{operation} on {token}: the token answered {}",
            return_code(&error)
        )),
        Meaning::StaleHandle => ProviderError::Revoked {
            reason: format!(
                "{operation} on {token}: the key object disappeared ({})",
                return_code(&error)
            ),
        },
        Meaning::Reset | Meaning::Transient => unavailable(operation, token, error),
    }
}

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;

    use super::*;

    fn rv(rv: RvError) -> CryptokiError {
        CryptokiError::Pkcs11(rv, Function::Decrypt)
    }

    #[test]
    fn return_codes_sort_into_what_the_provider_does_next() {
        let table = [
            (RvError::SessionHandleInvalid, Meaning::Reset),
            (RvError::DeviceRemoved, Meaning::Reset),
            (RvError::TokenNotPresent, Meaning::Reset),
            (RvError::CryptokiNotInitialized, Meaning::Reset),
            (RvError::KeyHandleInvalid, Meaning::StaleHandle),
            (RvError::PinIncorrect, Meaning::PinRefused),
            (RvError::PinLocked, Meaning::PinRefused),
            (RvError::KeyFunctionNotPermitted, Meaning::Misconfigured),
            (RvError::MechanismInvalid, Meaning::Misconfigured),
            (RvError::DeviceMemory, Meaning::Transient),
            (RvError::GeneralError, Meaning::Transient),
        ];
        for (code, expected) in table {
            assert_eq!(meaning(&rv(code)), expected, "{code}");
        }
    }

    #[test]
    fn sorted_errors_keep_the_source_and_name_the_code() {
        let error = sort("unwrap", "token \"t\"", rv(RvError::DeviceMemory));
        let ProviderError::Unavailable { source, .. } = &error else {
            panic!("{error:?}");
        };
        assert!(source.to_string().contains("token \"t\""), "{source}");
        assert!(std::error::Error::source(source.as_ref()).is_some());

        let error = sort("log in", "token \"t\"", rv(RvError::PinIncorrect)).to_string();
        assert!(error.contains("PinIncorrect from C_Decrypt"), "{error}");
    }
}
