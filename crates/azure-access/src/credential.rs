//! An Entra ID credential ready to hand to an SDK client: either one of the process's own
//! identity (built by [`crate::auth`]), or one made from material held in memory — a client
//! assertion or a client secret a pod's Mount request carries, or the node's managed identity —
//! how the Secrets Store CSI provider acts as a pod. The pod's service-account token arrives in
//! the Mount request; [`Credential::from_client_assertion`] exchanges it at the cloud's Entra ID
//! token endpoint (client-credentials grant, `client_assertion_type` jwt-bearer) for a token of
//! the workload identity it is federated with. No file is read or written.
//!
//! The assertion stays in a zeroizing [`SecretString`] for the credential's life and is sent
//! only to the configured cloud's authority. This module never logs or shows an assertion or a
//! token: `Debug` names the kind of credential and its non-secret ids only.

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientMethodOptions, HttpClient};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};
use secrecy::{ExposeSecret, SecretString};

use crate::Error;
use crate::client::client_options;
use crate::cloud::Cloud;

/// An SDK credential and a non-secret description of it, for logs.
#[derive(Clone)]
pub struct Credential {
    inner: Arc<dyn TokenCredential>,
    description: String,
}

impl Credential {
    pub(crate) fn new(inner: Arc<dyn TokenCredential>, description: String) -> Self {
        Self { inner, description }
    }

    /// The SDK credential `built`, described by `description`; the SDK's refusal to build it
    /// is a misconfiguration naming it.
    fn built<C: TokenCredential + 'static>(
        description: String,
        built: azure_core::Result<Arc<C>>,
    ) -> Result<Self, Error> {
        match built {
            Ok(credential) => Ok(Self::new(credential, description)),
            Err(error) => Err(Error::Misconfigured {
                reason: format!("cannot set up the {description}: {error}"),
            }),
        }
    }

    /// Refuses empty (or blank) secret material before any credential is built.
    fn non_empty(material: &SecretString, what: &str, description: &str) -> Result<(), Error> {
        if material.expose_secret().trim().is_empty() {
            return Err(Error::Misconfigured {
                reason: format!("the {description} {what}"),
            });
        }
        Ok(())
    }

    /// A credential for application `client_id` in `tenant_id` that proves itself with
    /// `assertion` (a JWT the application's federated credential accepts, such as a pod's
    /// projected service-account token for audience `api://AzureADTokenExchange`). Tokens are
    /// requested from `cloud`'s authority through `http` (see [`crate::client::http_client`]),
    /// with the SDK's retries off. The SDK caches tokens per credential until shortly before
    /// they expire; an expired assertion makes the next token request fail.
    pub fn from_client_assertion(
        tenant_id: &str,
        client_id: &str,
        assertion: SecretString,
        cloud: &Cloud,
        http: &Arc<dyn HttpClient>,
    ) -> Result<Self, Error> {
        let description = format!("client assertion (client {client_id}, tenant {tenant_id})");
        Self::non_empty(&assertion, "has an empty assertion", &description)?;
        let credential = ClientAssertionCredential::new(
            tenant_id.to_owned(),
            client_id.to_owned(),
            InMemoryAssertion(assertion),
            Some(ClientAssertionCredentialOptions {
                client_options: client_options(http, cloud),
            }),
        );
        Self::built(description, credential)
    }

    /// A credential for application `client_id` in `tenant_id` that proves itself with the
    /// client secret `secret` (held in memory, e.g. from a pod's nodePublishSecretRef). Tokens
    /// are requested from `cloud`'s authority through `http`, with the SDK's retries off; the
    /// SDK caches them per credential until shortly before they expire.
    pub fn from_client_secret(
        tenant_id: &str,
        client_id: &str,
        secret: SecretString,
        cloud: &Cloud,
        http: &Arc<dyn HttpClient>,
    ) -> Result<Self, Error> {
        let description = format!("client secret (client {client_id}, tenant {tenant_id})");
        Self::non_empty(&secret, "is empty", &description)?;
        let credential = ClientSecretCredential::new(
            tenant_id,
            client_id.to_owned(),
            Secret::new(secret.expose_secret().to_owned()),
            Some(ClientSecretCredentialOptions {
                client_options: client_options(http, cloud),
            }),
        );
        Self::built(description, credential)
    }

    /// The host's managed identity: the user-assigned one with `user_assigned_client_id`, else
    /// the system-assigned one. `http` must be a [`Route::ManagedIdentity`] client (no proxy,
    /// plain HTTP). The SDK credential chooses the endpoint from the environment (App Service's
    /// IDENTITY_ENDPOINT, else the VM's IMDS) and retries IMDS by its own policy (about 72 s at
    /// most, whatever the client options say): callers bound it with their deadline.
    ///
    /// [`Route::ManagedIdentity`]: crate::client::Route::ManagedIdentity
    pub fn managed_identity(
        user_assigned_client_id: Option<&str>,
        cloud: &Cloud,
        http: &Arc<dyn HttpClient>,
    ) -> Result<Self, Error> {
        let description = match user_assigned_client_id {
            Some(id) => format!("user-assigned managed identity (client id {id})"),
            None => "system-assigned managed identity".to_owned(),
        };
        let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: user_assigned_client_id
                .map(|id| UserAssignedId::ClientId(id.to_owned())),
            client_options: client_options(http, cloud),
        }));
        Self::built(description, credential)
    }

    /// The mode and its non-secret parameters, for logs.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The SDK credential, for a service client.
    pub fn token_credential(&self) -> Arc<dyn TokenCredential> {
        Arc::clone(&self.inner)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({})", self.description)
    }
}

/// A client assertion held in memory.
struct InMemoryAssertion(SecretString);

impl fmt::Debug for InMemoryAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InMemoryAssertion([redacted])")
    }
}

#[async_trait::async_trait]
impl ClientAssertion for InMemoryAssertion {
    /// The assertion, copied into the String the SDK's trait requires for one token request
    /// (the SDK form-encodes it into the request body and drops it).
    async fn secret(
        &self,
        _options: Option<ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        Ok(self.0.expose_secret().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keyvault_emulator::{Emulator, FederatedCredential, ManagedKind, Options};

    use super::*;
    use crate::client::{
        InsecureOverrides, Route, TransportOptions, http_client, http_client_with,
    };
    use crate::cloud::CloudName;
    use crate::errors::{Class, classify};

    const CLIENT: &str = "0b3c4e1a-0000-4000-8000-0000000000a5";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pods_assertion_is_exchanged_for_a_token_and_a_bad_one_is_refused() {
        let emulator = Emulator::start(Options::key_vault())
            .await
            .expect("the emulator starts");
        emulator
            .register_federated_identity(
                CLIENT,
                FederatedCredential {
                    issuer: "https://oidc.cluster.example/".into(),
                    subject: "system:serviceaccount:apps:web".into(),
                    audience: "api://AzureADTokenExchange".into(),
                },
            )
            .expect("register the identity");
        let assertion = emulator
            .federated_token(CLIENT, Duration::from_secs(600))
            .expect("a service-account token");
        let transport = TransportOptions {
            ca_file: Some(emulator.ca_pem_path().to_owned()),
            ..TransportOptions::default()
        };
        let http = http_client(&transport, Route::Remote).expect("the HTTPS client");
        let cloud = Cloud::known(CloudName::Public)
            .expect("public cloud")
            .with_authority_host(&emulator.authority_url());
        let scope = emulator.scope();

        let credential = Credential::from_client_assertion(
            emulator.tenant_id(),
            CLIENT,
            SecretString::from(assertion.clone()),
            &cloud,
            &http,
        )
        .expect("the credential");
        assert!(!format!("{credential:?}").contains(&assertion));
        assert!(credential.describe().contains(CLIENT));
        let token = credential
            .token_credential()
            .get_token(&[scope.as_str()], None)
            .await
            .expect("Entra ID exchanges the assertion");
        assert!(!token.token.secret().is_empty());
        assert_ne!(token.token.secret(), assertion);

        // An assertion Entra ID does not accept is an authoritative refusal, not an outage.
        let forged = Credential::from_client_assertion(
            emulator.tenant_id(),
            CLIENT,
            SecretString::from("eyJhbGciOiJub25lIn0.e30.".to_owned()),
            &cloud,
            &http,
        )
        .expect("the credential");
        let error = forged
            .token_credential()
            .get_token(&[scope.as_str()], None)
            .await
            .expect_err("a forged assertion is refused");
        let classified = classify(&error);
        assert_eq!(classified.class(), Class::Refusal, "{error}");
        assert!(classified.answer().is_some_and(|answer| answer.from_entra));

        let empty = Credential::from_client_assertion(
            emulator.tenant_id(),
            CLIENT,
            SecretString::from(" ".to_owned()),
            &cloud,
            &http,
        );
        assert!(empty.is_err());
        emulator.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_secret_held_in_memory_gets_a_token_and_a_wrong_one_is_refused() {
        let emulator = Emulator::start(Options::key_vault())
            .await
            .expect("the emulator starts");
        emulator
            .register_client_secret(CLIENT, "right-secret")
            .expect("register the identity");
        let transport = TransportOptions {
            ca_file: Some(emulator.ca_pem_path().to_owned()),
            ..TransportOptions::default()
        };
        let http = http_client(&transport, Route::Remote).expect("the HTTPS client");
        let cloud = Cloud::known(CloudName::Public)
            .expect("public cloud")
            .with_authority_host(&emulator.authority_url());
        let scope = emulator.scope();
        let good = Credential::from_client_secret(
            emulator.tenant_id(),
            CLIENT,
            SecretString::from("right-secret".to_owned()),
            &cloud,
            &http,
        )
        .expect("the credential");
        assert!(!format!("{good:?}").contains("right-secret"));
        good.token_credential()
            .get_token(&[scope.as_str()], None)
            .await
            .expect("Entra ID accepts the secret");
        let bad = Credential::from_client_secret(
            emulator.tenant_id(),
            CLIENT,
            SecretString::from("wrong-secret".to_owned()),
            &cloud,
            &http,
        )
        .expect("the credential");
        let error = bad
            .token_credential()
            .get_token(&[scope.as_str()], None)
            .await
            .expect_err("a wrong secret is refused");
        assert_eq!(classify(&error).class(), Class::Refusal, "{error}");
        assert!(
            Credential::from_client_secret(
                emulator.tenant_id(),
                CLIENT,
                SecretString::from(String::new()),
                &cloud,
                &http,
            )
            .is_err()
        );
        emulator.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_managed_identity_gets_its_token_from_an_overridden_imds() {
        let emulator = Emulator::start(Options::key_vault())
            .await
            .expect("the emulator starts");
        emulator
            .register_managed_identity(ManagedKind::SystemAssigned, None, None)
            .expect("system-assigned");
        let user = "0b3c4e1a-0000-4000-8000-0000000000b7";
        emulator
            .register_managed_identity(ManagedKind::UserAssigned, Some(user), None)
            .expect("user-assigned");
        let overrides = InsecureOverrides {
            imds_endpoint: emulator.imds_url(),
            ..InsecureOverrides::default()
        };
        let http = http_client_with(
            &TransportOptions::default(),
            Route::ManagedIdentity,
            &overrides,
        )
        .expect("the IMDS client");
        let cloud = Cloud::known(CloudName::Public).expect("public cloud");
        let scope = emulator.scope();
        for id in [None, Some(user)] {
            let credential = Credential::managed_identity(id, &cloud, &http).expect("credential");
            credential
                .token_credential()
                .get_token(&[scope.as_str()], None)
                .await
                .unwrap_or_else(|error| panic!("{id:?}: {error}"));
        }
        assert_eq!(
            emulator
                .counts(keyvault_emulator::Operation::ImdsToken)
                .succeeded,
            2
        );
        emulator.shutdown().await;
    }
}
