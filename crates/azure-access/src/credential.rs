//! An Entra ID credential ready to hand to an SDK client: either one of the process's own
//! identity (built by [`crate::auth`]), or one made from a client assertion held in memory —
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

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientMethodOptions, HttpClient};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
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
        if assertion.expose_secret().trim().is_empty() {
            return Err(Error::Misconfigured {
                reason: format!("the {description} has an empty assertion"),
            });
        }
        let credential = ClientAssertionCredential::new(
            tenant_id.to_owned(),
            client_id.to_owned(),
            InMemoryAssertion(assertion),
            Some(ClientAssertionCredentialOptions {
                client_options: client_options(http, cloud),
            }),
        )
        .map_err(|error| Error::Misconfigured {
            reason: format!("cannot set up the {description}: {error}"),
        })?;
        Ok(Self::new(credential, description))
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

    use keyvault_emulator::{Emulator, FederatedCredential, Options};

    use super::*;
    use crate::client::{Route, TransportOptions, http_client};
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
}
