//! The Certificates REST API: routing of `/certificates` and `/deletedcertificates` paths and
//! the handlers — create from a policy (self-signed, or a CSR merged later), import (PFX with
//! or without password, PEM with a PKCS#8 key and chain), get, update, list, list versions,
//! the pending operation, the policy, soft delete, recover, purge.
//!
//! Every certificate version has a key (`kid`, usable through the Keys API) and a backing
//! secret (`sid`, `managed: true`, a PFX or PEM per the policy) of the same name and version;
//! delete, recover and purge take all three along. A create answers 202 `inProgress`; a
//! self-signed certificate is issued by the next certificates request on the name, or read of
//! its secret (the SDKs' first `GET .../pending` then reads `completed`); an `Unknown` issuer
//! waits for a merge.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::header::{HeaderValue, LOCATION, RETRY_AFTER};
use http::{Method, StatusCode};
use openssl::x509::X509;
use serde_json::Value;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::bundle;
use crate::certificates::{
    self, CertificateVersion, Certificates, OperationStatus, PendingOperation,
};
use crate::crypto::KeyMaterial;
use crate::error::ServiceError;
use crate::faults::BudgetClass;
use crate::http::{Req, Resp, empty, json as json_response};
use crate::identity::new_guid;
use crate::model::{KeyType, ObjectKind, Operation};
use crate::pki::{self, KeyAndChain, PkiError};
use crate::policy::{Policy, SELF_ISSUER, UNKNOWN_ISSUER};
use crate::secrets::{SecretValue, SecretVersion};
use crate::state::{Shared, now_secs};
use crate::store::{Attributes, KeyVersion, new_version, valid_name};

/// A self-signed certificate's validity starts this long before its creation.
const BACKDATE_SECONDS: i64 = 600;

/// A recognised Certificates REST route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /certificates/{n}/create`
    Create(String),
    /// `POST /certificates/{n}/import`
    Import(String),
    /// `GET /certificates/{n}/{v?}`
    Get(String, String),
    /// `PATCH /certificates/{n}/{v?}`
    Update(String, String),
    /// `GET /certificates`
    List,
    /// `GET /certificates/{n}/versions`
    ListVersions(String),
    /// `GET /certificates/{n}/pending`
    GetOperation(String),
    /// `PATCH /certificates/{n}/pending`
    UpdateOperation(String),
    /// `DELETE /certificates/{n}/pending`
    DeleteOperation(String),
    /// `POST /certificates/{n}/pending/merge`
    Merge(String),
    /// `GET /certificates/{n}/policy`
    GetPolicy(String),
    /// `PATCH /certificates/{n}/policy`
    UpdatePolicy(String),
    /// `DELETE /certificates/{n}`
    Delete(String),
    /// `GET /deletedcertificates/{n}`
    GetDeleted(String),
    /// `GET /deletedcertificates`
    ListDeleted,
    /// `POST /deletedcertificates/{n}/recover`
    Recover(String),
    /// `DELETE /deletedcertificates/{n}`
    Purge(String),
}

impl Route {
    /// The operation the route performs.
    pub fn operation(&self) -> Operation {
        match self {
            Self::Create(_) => Operation::CreateCertificate,
            Self::Import(_) => Operation::ImportCertificate,
            Self::Get(..) => Operation::GetCertificate,
            Self::Update(..) => Operation::UpdateCertificate,
            Self::List => Operation::ListCertificates,
            Self::ListVersions(_) => Operation::ListCertificateVersions,
            Self::GetOperation(_) => Operation::GetCertificateOperation,
            Self::UpdateOperation(_) => Operation::UpdateCertificateOperation,
            Self::DeleteOperation(_) => Operation::DeleteCertificateOperation,
            Self::Merge(_) => Operation::MergeCertificate,
            Self::GetPolicy(_) => Operation::GetCertificatePolicy,
            Self::UpdatePolicy(_) => Operation::UpdateCertificatePolicy,
            Self::Delete(_) => Operation::DeleteCertificate,
            Self::GetDeleted(_) => Operation::GetDeletedCertificate,
            Self::ListDeleted => Operation::ListDeletedCertificates,
            Self::Recover(_) => Operation::RecoverCertificate,
            Self::Purge(_) => Operation::PurgeCertificate,
        }
    }

    /// The certificate the route names, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Create(name)
            | Self::Import(name)
            | Self::Get(name, _)
            | Self::Update(name, _)
            | Self::ListVersions(name)
            | Self::GetOperation(name)
            | Self::UpdateOperation(name)
            | Self::DeleteOperation(name)
            | Self::Merge(name)
            | Self::GetPolicy(name)
            | Self::UpdatePolicy(name)
            | Self::Delete(name)
            | Self::GetDeleted(name)
            | Self::Recover(name)
            | Self::Purge(name) => Some(name),
            Self::List | Self::ListDeleted => None,
        }
    }
}

/// Matches a path under `/certificates` or `/deletedcertificates`. `None`: not a
/// certificates path; `Some(Err)`: one with a method or shape it does not serve.
pub fn route(method: &Method, segments: &[String]) -> Option<Result<Route, ServiceError>> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let first = s.first()?.to_ascii_lowercase();
    let not_allowed = || Some(Err(ServiceError::method_not_allowed()));
    let name = |i: usize| s[i].to_owned();
    if first == "certificates" {
        let route = match (s.len(), method) {
            (1, &Method::GET) => Route::List,
            (2, &Method::GET) => Route::Get(name(1), String::new()),
            (2, &Method::PATCH) => Route::Update(name(1), String::new()),
            (2, &Method::DELETE) => Route::Delete(name(1)),
            (3, _) => match (s[2].to_ascii_lowercase().as_str(), method) {
                ("create", &Method::POST) => Route::Create(name(1)),
                ("import", &Method::POST) => Route::Import(name(1)),
                ("versions", &Method::GET) => Route::ListVersions(name(1)),
                ("pending", &Method::GET) => Route::GetOperation(name(1)),
                ("pending", &Method::PATCH) => Route::UpdateOperation(name(1)),
                ("pending", &Method::DELETE) => Route::DeleteOperation(name(1)),
                ("policy", &Method::GET) => Route::GetPolicy(name(1)),
                ("policy", &Method::PATCH) => Route::UpdatePolicy(name(1)),
                (_, &Method::GET) => Route::Get(name(1), name(2)),
                (_, &Method::PATCH) => Route::Update(name(1), name(2)),
                _ => return not_allowed(),
            },
            (4, &Method::POST)
                if s[2].eq_ignore_ascii_case("pending") && s[3].eq_ignore_ascii_case("merge") =>
            {
                Route::Merge(name(1))
            }
            (1 | 2, _) => return not_allowed(),
            _ => return Some(Err(ServiceError::no_route(&segments.join("/")))),
        };
        return Some(Ok(route));
    }
    if first == "deletedcertificates" {
        let route = match (s.len(), method) {
            (1, &Method::GET) => Route::ListDeleted,
            (2, &Method::GET) => Route::GetDeleted(name(1)),
            (2, &Method::DELETE) => Route::Purge(name(1)),
            (3, &Method::POST) if s[2].eq_ignore_ascii_case("recover") => Route::Recover(name(1)),
            _ => return not_allowed(),
        };
        return Some(Ok(route));
    }
    None
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::bad_parameter(message)
}

fn pki_error(error: PkiError) -> ServiceError {
    bad(error.to_string())
}

fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Issues a self-signed certificate whose creation is still in progress: its version, key and
/// backing secret become enabled and the operation reads `completed`. Certificates waiting for
/// a merge, and names without an operation, are left alone.
pub fn settle(shared: &Shared, name: &str) {
    let mut certs = shared.certificates();
    let Some(op) = certs.operation_mut(name) else {
        return;
    };
    if op.status != OperationStatus::InProgress || !op.issuer.eq_ignore_ascii_case(SELF_ISSUER) {
        return;
    }
    op.status = OperationStatus::Completed;
    let (version, enabled) = (op.version.clone(), op.enable_when_issued);
    let mut keys = shared.store();
    let mut secrets = shared.secrets();
    if let Ok(cert) = certs.versions.get_mut(name, Some(&version)) {
        cert.pending = false;
        cert.attributes.enabled = enabled;
    }
    if let Ok(key) = keys.get_mut(name, Some(&version)) {
        key.attributes.enabled = enabled;
    }
    if let Ok(secret) = secrets.get_mut(name, Some(&version)) {
        secret.attributes.enabled = enabled;
    }
}

/// Serves a routed, authenticated, authorised request.
pub async fn handle(
    shared: &Arc<Shared>,
    route: Route,
    req: &mut Req,
) -> Result<Resp, ServiceError> {
    if let Some(name) = route.name() {
        settle(shared, name);
    }
    let base = req.base();
    let days = shared.config.retention_days;
    let ok = |value: Value| Ok(json_response(StatusCode::OK, &value));
    shared.faults().charge(BudgetClass::Other, Instant::now())?;
    match route {
        Route::Create(name) => create(shared, &name, req).await,
        Route::Import(name) => {
            let body = req.json().await?;
            let stored = import(shared, &name, &body).await?;
            let certs = shared.certificates();
            ok(certificates::bundle(
                &base,
                &stored,
                certs.policy(&name),
                days,
            ))
        }
        Route::Get(name, version) => {
            let certs = shared.certificates();
            let cert = certs.versions.get(&name, Some(&version))?;
            ok(certificates::bundle(&base, cert, certs.policy(&name), days))
        }
        Route::Update(name, version) => {
            let body = req.json().await?;
            let attributes = bundle::parse_attributes(&body)?;
            let tags = bundle::parse_tags(&body)?;
            let mut certs = shared.certificates();
            let cert = certs.versions.get_mut(&name, Some(&version))?;
            if let Some(enabled) = attributes.enabled {
                cert.attributes.enabled = enabled;
            }
            if let Some(tags) = tags {
                cert.tags = tags;
            }
            cert.attributes.updated = now_secs();
            let cert = cert.clone();
            if let Some(enabled) = attributes.enabled.filter(|_| !cert.pending) {
                if let Ok(key) = shared.store().get_mut(&name, Some(&cert.version)) {
                    key.attributes.enabled = enabled;
                }
                if let Ok(secret) = shared.secrets().get_mut(&name, Some(&cert.version)) {
                    secret.attributes.enabled = enabled;
                }
            }
            ok(certificates::bundle(
                &base,
                &cert,
                certs.policy(&name),
                days,
            ))
        }
        Route::List => {
            let include_pending = req
                .query("includePending")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let items = shared
                .certificates()
                .versions
                .latest_versions()
                .into_iter()
                .filter(|cert| include_pending || !cert.pending)
                .map(|cert| certificates::item(&base, cert, false, days))
                .collect();
            bundle::paged(req, shared.config.page_size, "/certificates", items)
        }
        Route::ListVersions(name) => {
            let certs = shared.certificates();
            let mut versions: Vec<&CertificateVersion> =
                certs.versions.versions(&name)?.iter().collect();
            versions.sort_by(|a, b| a.version.cmp(&b.version));
            let path = format!("/certificates/{}/versions", versions[0].name);
            let items = versions
                .into_iter()
                .map(|cert| certificates::item(&base, cert, true, days))
                .collect();
            bundle::paged(req, shared.config.page_size, &path, items)
        }
        Route::GetOperation(name) => {
            let certs = shared.certificates();
            let op = certs
                .operation(&name)
                .ok_or_else(|| ServiceError::pending_not_found(&name))?;
            ok(certificates::operation(&base, op))
        }
        Route::UpdateOperation(name) => {
            let body = req.json().await?;
            let cancel = match body.get("cancellation_requested") {
                Some(Value::Bool(cancel)) => *cancel,
                _ => return Err(bad("Property 'cancellation_requested' must be a boolean.")),
            };
            let mut certs = shared.certificates();
            let op = certs
                .operation_mut(&name)
                .ok_or_else(|| ServiceError::pending_not_found(&name))?;
            if cancel && op.status == OperationStatus::InProgress {
                op.cancellation_requested = true;
                op.status = OperationStatus::Cancelled;
            }
            ok(certificates::operation(&base, op))
        }
        Route::DeleteOperation(name) => {
            let mut certs = shared.certificates();
            let op = certs
                .operations
                .remove(&fold(&name))
                .ok_or_else(|| ServiceError::pending_not_found(&name))?;
            if op.status != OperationStatus::Completed {
                certs.versions.remove_version(&name, &op.version);
                shared.store().remove_version(&name, &op.version);
                shared.secrets().remove_version(&name, &op.version);
            }
            ok(certificates::operation(&base, &op))
        }
        Route::Merge(name) => {
            let body = req.json().await?;
            let cert = merge(shared, &name, &body)?;
            let certs = shared.certificates();
            Ok(json_response(
                StatusCode::CREATED,
                &certificates::bundle(&base, &cert, certs.policy(&name), days),
            ))
        }
        Route::GetPolicy(name) => {
            let certs = shared.certificates();
            certs.versions.get(&name, None)?;
            let policy = certs
                .policy(&name)
                .ok_or_else(|| ServiceError::not_found(ObjectKind::Certificate, &name, None))?;
            ok(policy.render(&base, &name))
        }
        Route::UpdatePolicy(name) => {
            let body = req.json().await?;
            let mut certs = shared.certificates();
            let stored_name = certs.versions.get(&name, None)?.name.clone();
            let current = certs
                .policy(&name)
                .ok_or_else(|| ServiceError::not_found(ObjectKind::Certificate, &name, None))?;
            let updated = current.updated(&body, now_secs())?;
            let rendered = updated.render(&base, &stored_name);
            certs.policies.insert(fold(&name), updated);
            ok(rendered)
        }
        Route::Delete(name) => {
            let mut certs = shared.certificates();
            let deleted = certs.versions.delete(&name, now_secs(), days)?;
            certs.operations.remove(&fold(&name));
            let _ = shared.store().delete(&name, now_secs(), days);
            let _ = shared.secrets().delete(&name, now_secs(), days);
            ok(certificates::deleted_bundle(
                &base,
                &deleted,
                certs.policy(&name),
                days,
            ))
        }
        Route::GetDeleted(name) => {
            let certs = shared.certificates();
            let deleted = certs.versions.get_deleted(&name)?;
            ok(certificates::deleted_bundle(
                &base,
                deleted,
                certs.policy(&name),
                days,
            ))
        }
        Route::ListDeleted => {
            let items = shared
                .certificates()
                .versions
                .all_deleted()
                .into_iter()
                .map(|deleted| certificates::deleted_item(&base, deleted, days))
                .collect();
            bundle::paged(req, shared.config.page_size, "/deletedcertificates", items)
        }
        Route::Recover(name) => {
            let mut certs = shared.certificates();
            let cert = certs.versions.recover(&name)?;
            let _ = shared.store().recover(&name);
            let _ = shared.secrets().recover(&name);
            ok(certificates::bundle(
                &base,
                &cert,
                certs.policy(&name),
                days,
            ))
        }
        Route::Purge(name) => {
            let mut certs = shared.certificates();
            certs.versions.purge(&name)?;
            certs.policies.remove(&fold(&name));
            let _ = shared.store().purge(&name);
            let _ = shared.secrets().purge(&name);
            Ok(empty(StatusCode::NO_CONTENT))
        }
    }
}

/// Everything a new certificate version is made of.
struct NewVersion {
    name: String,
    created: i64,
    version: String,
    kty: KeyType,
    material: KeyMaterial,
    cer: Option<Vec<u8>>,
    nbf: Option<i64>,
    exp: Option<i64>,
    secret_value: Zeroizing<String>,
    policy: Policy,
    enabled: bool,
    pending: bool,
    tags: BTreeMap<String, String>,
}

/// Refuses a name held by a soft-deleted certificate, or by a key or secret that belongs to no
/// certificate.
fn check_name(
    certs: &Certificates,
    keys: &crate::store::Store,
    secrets: &crate::secrets::Secrets,
    name: &str,
) -> Result<(), ServiceError> {
    if !valid_name(name) {
        return Err(bad(format!(
            "The certificate name '{name}' is invalid: use 1-127 characters 0-9, a-z, A-Z and -."
        )));
    }
    if certs.versions.get_deleted(name).is_ok() {
        return Err(ServiceError::deleted_but_recoverable(
            ObjectKind::Certificate,
            name,
        ));
    }
    if keys.get(name, None).is_ok_and(|key| !key.managed)
        || secrets.get(name, None).is_ok_and(|secret| !secret.managed)
    {
        return Err(ServiceError::conflict(format!(
            "A key or secret named {name} already exists and does not belong to a certificate."
        )));
    }
    Ok(())
}

fn store_version(shared: &Shared, new: NewVersion) -> Result<CertificateVersion, ServiceError> {
    let now = new.created;
    let attributes = Attributes {
        enabled: new.enabled && !new.pending,
        nbf: new.nbf,
        exp: new.exp,
        created: now,
        updated: now,
    };
    let mut certs = shared.certificates();
    let mut keys = shared.store();
    let mut secrets = shared.secrets();
    check_name(&certs, &keys, &secrets, &new.name)?;

    let mut key = KeyVersion::new(&new.name, new.kty, new.material, new.kty.default_ops(), now)?;
    key.version.clone_from(&new.version);
    key.attributes = attributes.clone();
    key.managed = true;

    let mut secret = SecretVersion::new(&new.name, String::new(), now)?;
    secret.version.clone_from(&new.version);
    secret.value = SecretValue::new(new.secret_value.to_string());
    secret.content_type = Some(new.policy.content_type().to_owned());
    secret.attributes = attributes.clone();
    secret.managed = true;

    let cert = CertificateVersion {
        name: new.name.clone(),
        version: new.version,
        cer: new.cer,
        pending: new.pending,
        attributes: Attributes {
            enabled: new.enabled,
            ..attributes
        },
        tags: new.tags,
    };
    keys.add_version(key)?;
    secrets.add_version(secret)?;
    let cert = certs.versions.add_version(cert)?;
    certs.policies.insert(fold(&new.name), new.policy);
    Ok(cert)
}

/// The backing secret's value: a base64 PFX with an empty password, or a PEM file.
fn backing_value(
    policy: &Policy,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    leaf: &X509,
    chain: &[X509],
) -> Result<Zeroizing<String>, ServiceError> {
    if policy.is_pem() {
        pki::pem(key, leaf, chain).map_err(pki_error)
    } else {
        let der = pki::pfx(key, leaf, chain).map_err(pki_error)?;
        Ok(Zeroizing::new(pki::encode_base64(&der)))
    }
}

/// The key type an imported or generated key gets: the policy's, made to match the key.
fn key_type(policy: &Policy, material: &KeyMaterial, kind: crate::model::VaultKind) -> KeyType {
    let hsm = policy.key_type().is_hsm() || kind == crate::model::VaultKind::ManagedHsm;
    let kty = if material.ec_public_parts().is_some() {
        KeyType::Ec
    } else {
        KeyType::Rsa
    };
    if hsm { kty.hsm() } else { kty }
}

async fn create(shared: &Arc<Shared>, name: &str, req: &mut Req) -> Result<Resp, ServiceError> {
    let body = req.json().await?;
    let op = begin_create(shared, name, &body).await?;
    let base = req.base();
    let api_version = req.query("api-version").unwrap_or_default();
    let location = format!(
        "{base}/certificates/{name}/pending?api-version={api_version}&request_id={}",
        op.request_id
    );
    let mut response = json_response(StatusCode::ACCEPTED, &certificates::operation(&base, &op));
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("10"));
    Ok(response)
}

/// Starts creating a certificate from a create request's body (`policy`, `attributes`,
/// `tags`): generates the key, and the certificate when self-signed, stores the pending
/// version and answers its operation, `inProgress`.
pub async fn begin_create(
    shared: &Arc<Shared>,
    name: &str,
    body: &Value,
) -> Result<PendingOperation, ServiceError> {
    let now = now_secs();
    let policy = Policy::complete(body.get("policy"), UNKNOWN_ISSUER, now)?;
    if !policy.has_subject_or_sans() {
        return Err(bad(
            "The policy must name a subject or subject alternative names.",
        ));
    }
    let issuer = policy.issuer().to_owned();
    let self_signed = issuer.eq_ignore_ascii_case(SELF_ISSUER);
    if !self_signed && !issuer.eq_ignore_ascii_case(UNKNOWN_ISSUER) {
        return Err(bad(format!(
            "The issuer '{issuer}' is not configured; the emulator issues 'Self' and 'Unknown'."
        )));
    }
    let attributes = bundle::parse_attributes(body)?;
    let tags = bundle::parse_tags(body)?.unwrap_or_default();
    {
        let certs = shared.certificates();
        check_name(&certs, &shared.store(), &shared.secrets(), name)?;
    }

    let generation_policy = policy.clone();
    let generated = tokio::task::spawn_blocking(move || -> Result<_, ServiceError> {
        let policy = generation_policy;
        let material = match policy.curve().filter(|_| policy.key_type().is_ec()) {
            Some(curve) => KeyMaterial::generate_ec(curve)?,
            None => KeyMaterial::generate_rsa(policy.key_size() as usize)?,
        };
        let key = material.to_openssl()?;
        let request = policy.request();
        let csr = pki::csr(&key, &request).map_err(pki_error)?;
        let issued = if self_signed {
            let not_before = now - BACKDATE_SECONDS;
            let not_after = pki::add_months(now, policy.validity_months());
            let cert =
                pki::self_signed(&key, &request, not_before, not_after).map_err(pki_error)?;
            let value = backing_value(&policy, &key, &cert, &[])?;
            let der = cert.to_der().map_err(|e| pki_error(PkiError::OpenSsl(e)))?;
            Some((der, value, not_before, not_after))
        } else {
            None
        };
        Ok((material, csr, issued))
    })
    .await
    .map_err(|_| bad("Certificate creation was interrupted."))??;
    let (material, csr, issued) = generated;

    let version = new_version()?;
    let enabled = attributes.enabled.unwrap_or_else(|| policy.enabled());
    let kty = key_type(&policy, &material, shared.config.kind);
    let (cer, secret_value, nbf, exp) = match issued {
        Some((der, value, nbf, exp)) => (Some(der), value, Some(nbf), Some(exp)),
        None => (None, Zeroizing::new(String::new()), None, None),
    };
    store_version(
        shared,
        NewVersion {
            name: name.to_owned(),
            created: now,
            version: version.clone(),
            kty,
            material,
            cer,
            nbf,
            exp,
            secret_value,
            policy,
            enabled,
            pending: true,
            tags,
        },
    )?;
    let op = PendingOperation {
        name: name.to_owned(),
        version,
        issuer,
        csr,
        status: OperationStatus::InProgress,
        cancellation_requested: false,
        enable_when_issued: enabled,
        request_id: new_guid(),
    };
    shared
        .certificates()
        .operations
        .insert(fold(name), op.clone());
    Ok(op)
}

/// Reads an import's `value`: a PEM file (as text or base64 of the text) or a PFX (base64).
fn read_import(
    policy: &Policy,
    value: &str,
    password: Option<&str>,
) -> Result<KeyAndChain, ServiceError> {
    if policy.is_pem() {
        if value.trim_start().starts_with("-----BEGIN") {
            return pki::parse_pem(value.as_bytes(), password).map_err(pki_error);
        }
        let bytes = pki::decode_base64(value).map_err(pki_error)?;
        return pki::parse_pem(&bytes, password).map_err(pki_error);
    }
    let der = pki::decode_base64(value).map_err(pki_error)?;
    pki::parse_pfx(&der, password.unwrap_or_default()).map_err(pki_error)
}

/// Imports a certificate from an import request's body (`value`, `pwd`, `policy`,
/// `attributes`, `tags`).
pub async fn import(
    shared: &Arc<Shared>,
    name: &str,
    body: &Value,
) -> Result<CertificateVersion, ServiceError> {
    let value = body
        .get("value")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Property 'value' is required."))?
        .to_owned();
    let password = body.get("pwd").and_then(Value::as_str).map(str::to_owned);
    let mut policy = Policy::complete(body.get("policy"), UNKNOWN_ISSUER, now_secs())?;
    let attributes = bundle::parse_attributes(body)?;
    let tags = bundle::parse_tags(body)?.unwrap_or_default();
    let read_policy = policy.clone();
    let (parsed, material, secret_value) =
        tokio::task::spawn_blocking(move || -> Result<_, ServiceError> {
            let parsed = read_import(&read_policy, &value, password.as_deref())?;
            let material = KeyMaterial::from_openssl(parsed.key.clone())?;
            let secret_value =
                backing_value(&read_policy, &parsed.key, &parsed.leaf, &parsed.chain)?;
            Ok((parsed, material, secret_value))
        })
        .await
        .map_err(|_| bad("Certificate import was interrupted."))??;
    let kty = key_type(&policy, &material, shared.config.kind);
    let nbf = pki::unix_time(parsed.leaf.not_before());
    let exp = pki::unix_time(parsed.leaf.not_after());
    let months = u32::try_from(((exp - nbf) as f64 / 2_629_746.0).round() as i64).unwrap_or(12);
    policy.describe_import(
        kty,
        material.bits(),
        &pki::subject_text(&parsed.leaf),
        &pki::dns_names(&parsed.leaf),
        months,
    );
    let cer = parsed
        .leaf
        .to_der()
        .map_err(|e| pki_error(PkiError::OpenSsl(e)))?;
    let enabled = attributes.enabled.unwrap_or_else(|| policy.enabled());
    store_version(
        shared,
        NewVersion {
            name: name.to_owned(),
            created: now_secs(),
            version: new_version()?,
            kty,
            material,
            cer: Some(cer),
            nbf: Some(nbf),
            exp: Some(exp),
            secret_value,
            policy,
            enabled,
            pending: false,
            tags,
        },
    )
}

/// Completes a CSR with the certificate (and chain) an outside issuer signed.
fn merge(shared: &Shared, name: &str, body: &Value) -> Result<CertificateVersion, ServiceError> {
    let x5c: Vec<X509> = body
        .get("x5c")
        .and_then(Value::as_array)
        .filter(|certs| !certs.is_empty())
        .ok_or_else(|| bad("Property 'x5c' must be a non-empty array."))?
        .iter()
        .map(|cert| {
            let der = pki::decode_base64(cert.as_str().unwrap_or_default()).map_err(pki_error)?;
            X509::from_der(&der).map_err(|_| bad("An x5c entry is not a DER certificate."))
        })
        .collect::<Result<_, _>>()?;
    let attributes = bundle::parse_attributes(body)?;
    let tags = bundle::parse_tags(body)?;
    let mut certs = shared.certificates();
    let op = certs
        .operation(name)
        .filter(|op| op.status == OperationStatus::InProgress)
        .cloned()
        .ok_or_else(|| ServiceError::pending_not_found(name))?;
    if !op.issuer.eq_ignore_ascii_case(UNKNOWN_ISSUER) {
        return Err(bad(
            "Merge is only possible for certificates whose issuer is 'Unknown'.",
        ));
    }
    let policy = certs
        .policy(name)
        .cloned()
        .ok_or_else(|| ServiceError::pending_not_found(name))?;
    let mut keys = shared.store();
    let key = keys.get(name, Some(&op.version))?.material.to_openssl()?;
    let (leaf, chain) = x5c.split_first().ok_or_else(|| bad("x5c is empty."))?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(bad(
            "Public key from x5c does not match the key of the pending certificate.",
        ));
    }
    let value = backing_value(&policy, &key, leaf, chain)?;
    let enabled = attributes.enabled.unwrap_or(op.enable_when_issued);
    let (nbf, exp) = (
        pki::unix_time(leaf.not_before()),
        pki::unix_time(leaf.not_after()),
    );
    let cer = leaf.to_der().map_err(|e| pki_error(PkiError::OpenSsl(e)))?;
    let cert = certs.versions.get_mut(name, Some(&op.version))?;
    cert.cer = Some(cer);
    cert.pending = false;
    cert.attributes.enabled = enabled;
    cert.attributes.nbf = Some(nbf);
    cert.attributes.exp = Some(exp);
    cert.attributes.updated = now_secs();
    if let Some(tags) = tags {
        cert.tags = tags;
    }
    let cert = cert.clone();
    if let Ok(key) = keys.get_mut(name, Some(&op.version)) {
        key.attributes.enabled = enabled;
        key.attributes.nbf = Some(nbf);
        key.attributes.exp = Some(exp);
    }
    if let Ok(secret) = shared.secrets().get_mut(name, Some(&op.version)) {
        secret.value = SecretValue::new(value.to_string());
        secret.attributes.enabled = enabled;
        secret.attributes.nbf = Some(nbf);
        secret.attributes.exp = Some(exp);
    }
    if let Some(op) = certs.operation_mut(name) {
        op.status = OperationStatus::Completed;
    }
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::segments;

    fn r(method: Method, path: &str) -> Route {
        route(&method, &segments(path)).unwrap().unwrap()
    }

    #[test]
    fn sdk_path_forms_route_as_the_service_does() {
        assert_eq!(
            r(Method::POST, "/certificates/tls/create"),
            Route::Create("tls".into())
        );
        assert_eq!(
            r(Method::POST, "/certificates/tls/import"),
            Route::Import("tls".into())
        );
        assert_eq!(
            r(Method::GET, "/certificates/tls/"),
            Route::Get("tls".into(), String::new())
        );
        assert_eq!(
            r(Method::GET, "/certificates/tls/abc"),
            Route::Get("tls".into(), "abc".into())
        );
        assert_eq!(
            r(Method::GET, "/certificates/tls/pending"),
            Route::GetOperation("tls".into())
        );
        assert_eq!(
            r(Method::POST, "/certificates/tls/pending/merge"),
            Route::Merge("tls".into())
        );
        assert_eq!(
            r(Method::PATCH, "/certificates/tls/policy"),
            Route::UpdatePolicy("tls".into())
        );
        assert_eq!(
            r(Method::GET, "/certificates/tls/versions"),
            Route::ListVersions("tls".into())
        );
        assert_eq!(r(Method::GET, "/certificates"), Route::List);
        assert_eq!(
            r(Method::POST, "/deletedcertificates/tls/recover"),
            Route::Recover("tls".into())
        );
        assert_eq!(
            r(Method::DELETE, "/deletedcertificates/tls"),
            Route::Purge("tls".into())
        );
        assert!(route(&Method::GET, &segments("/secrets/x")).is_none());
        assert!(matches!(
            route(&Method::PUT, &segments("/certificates/tls")),
            Some(Err(_))
        ));
    }
}
