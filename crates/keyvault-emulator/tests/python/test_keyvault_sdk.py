"""Fidelity suite: Microsoft's Python SDK (azure-keyvault-keys, azure-identity) against the
keyvault-emulator, over HTTPS with the emulator's CA.

Run by crates/keyvault-emulator/tests/python_sdk.rs, which starts a Key Vault and a Managed HSM
emulator and passes their URLs in KV_* environment variables. Every behaviour kube-kms relies on
is exercised here by a client we did not write.
"""

import base64
import datetime
import json
import os
import tempfile
import time
import unittest
import uuid

import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import (
    CertificateCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

VAULT = os.environ["KV_VAULT_URL"]
HSM = os.environ["KV_HSM_URL"]
TENANT = os.environ["KV_TENANT"]
HSM_TENANT = os.environ["KV_HSM_TENANT"]
CA = os.environ["REQUESTS_CA_BUNDLE"]
IMDS = os.environ["KV_IMDS_URL"]
IDENTITY_ENDPOINT = os.environ["KV_IDENTITY_ENDPOINT"]
IDENTITY_HEADER = os.environ["KV_IDENTITY_HEADER"]
AUTHORITY = VAULT.rstrip("/")
HSM_AUTHORITY = HSM.rstrip("/")
API = "2025-07-01"
# The SDKs' retries would hide the emulator's answers; tests see every status.
NO_RETRY = {"retry_total": 0}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def admin(method, path, body=None, base=VAULT):
    response = requests.request(method, base.rstrip("/") + "/_emulator/" + path, json=body, verify=CA, timeout=30)
    if response.status_code >= 400:
        raise AssertionError(f"admin {method} {path}: {response.status_code} {response.text}")
    return response.json() if response.content else None


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def secret_identity(base=VAULT, permissions=None):
    client_id = str(uuid.uuid4())
    secret = uuid.uuid4().hex
    spec = {"client_id": client_id, "client_secret": secret}
    if permissions is not None:
        spec["permissions"] = permissions
    admin("POST", "identities", spec, base)
    return client_id, secret


def secret_credential(base=VAULT, tenant=TENANT, permissions=None):
    client_id, secret = secret_identity(base, permissions)
    credential = ClientSecretCredential(
        tenant, client_id, secret, authority=base.rstrip("/"), disable_instance_discovery=True
    )
    return client_id, credential


def key_client(credential, url=VAULT):
    return KeyClient(url, credential, verify_challenge_resource=False, **NO_RETRY)


def crypto_client(key_or_id, credential):
    return CryptographyClient(key_or_id, credential, verify_challenge_resource=False, **NO_RETRY)


def raw(method, path, token=None, body=None, base=VAULT, api=API):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = base.rstrip("/") + path + (f"?api-version={api}" if api else "")
    return requests.request(method, url, headers=headers, json=body, verify=CA, timeout=30)


def counters(base=VAULT):
    return admin("GET", "counters", base=base)


class Challenge(unittest.TestCase):
    def test_401_before_parsing_with_the_exact_challenge(self):
        response = requests.post(VAULT + "keys/anything//wrapkey?api-version=" + API, verify=CA, timeout=30)
        self.assertEqual(response.status_code, 401)
        self.assertEqual(
            response.headers["WWW-Authenticate"],
            f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="https://vault.azure.net"',
        )
        error = response.json()["error"]
        self.assertEqual(error["code"], "Unauthorized")
        self.assertEqual(error["message"], "AKV10000: Request is missing a Bearer or PoP token.")

    def test_managed_hsm_challenge_names_its_resource(self):
        response = requests.get(HSM + "keys/x/?api-version=" + API, verify=CA, timeout=30)
        self.assertEqual(response.status_code, 401)
        self.assertIn('resource="https://managedhsm.azure.net"', response.headers["WWW-Authenticate"])
        self.assertIn(HSM_TENANT, response.headers["WWW-Authenticate"])

    def test_unknown_token_is_401_with_challenge(self):
        response = raw("GET", "/keys/x/", token="not-a-token")
        self.assertEqual(response.status_code, 401)
        self.assertIn("WWW-Authenticate", response.headers)


class KeyLifecycle(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client_id, cls.credential = secret_credential()
        cls.keys = key_client(cls.credential)
        cls.token = cls.credential.get_token("https://vault.azure.net/.default").token

    def test_create_get_rotate_list(self):
        name = unique("kek")
        created = self.keys.create_rsa_key(name, size=2048)
        self.assertEqual(created.key_type, "RSA")
        self.assertRegex(created.properties.version, r"^[0-9a-f]{32}$")
        self.assertEqual(created.id, f"{AUTHORITY}/keys/{name}/{created.properties.version}")
        self.assertEqual(created.key.e, b"\x01\x00\x01")
        self.assertEqual(len(created.key.n), 256)
        self.assertIn("unwrapKey", created.key_operations)

        latest = self.keys.get_key(name)
        self.assertEqual(latest.properties.version, created.properties.version)
        pinned = self.keys.get_key(name, created.properties.version)
        self.assertEqual(pinned.key.n, created.key.n)

        rotated = self.keys.rotate_key(name)
        self.assertNotEqual(rotated.properties.version, created.properties.version)
        self.assertEqual(self.keys.get_key(name).properties.version, rotated.properties.version)
        versions = {p.version for p in self.keys.list_properties_of_key_versions(name)}
        self.assertEqual(versions, {created.properties.version, rotated.properties.version})

        # Paged: the emulator runs with a page size of 2, so this walks nextLinks.
        for i in range(3):
            self.keys.create_rsa_key(unique("page"), size=2048)
        names = [p.name for p in self.keys.list_properties_of_keys()]
        self.assertIn(name, names)
        self.assertGreaterEqual(len(names), 4)
        self.assertEqual(len(names), len(set(names)))

    def test_update_disable_and_the_disabled_key_rules(self):
        name = unique("dis")
        key = self.keys.create_rsa_key(name, size=2048)
        crypto = crypto_client(key, self.credential)
        wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
        updated = self.keys.update_key_properties(name, enabled=False)
        self.assertFalse(updated.properties.enabled)
        remote = crypto_client(key.id, self.credential)
        with self.assertRaises(HttpResponseError) as raised:
            remote.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
        self.assertEqual(raised.exception.status_code, 403)
        self.assertEqual(raised.exception.error.code, "Forbidden")
        self.assertEqual(raised.exception.error.innererror["code"], "KeyDisabled")
        # wrap and encrypt stay allowed on a disabled key (remote call through the REST API).
        response = raw("POST", f"/keys/{name}//wrapkey", self.token, {"alg": "RSA-OAEP-256", "value": b64url(b"x" * 32)})
        self.assertEqual(response.status_code, 200, response.text)
        response = raw("POST", f"/keys/{name}//encrypt", self.token, {"alg": "RSA-OAEP", "value": b64url(b"x" * 16)})
        self.assertEqual(response.status_code, 200, response.text)
        self.keys.update_key_properties(name, enabled=True)
        self.assertEqual(remote.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key, b"k" * 32)

        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        updated = self.keys.update_key_properties(name, expires_on=expires)
        self.assertEqual(int(updated.properties.expires_on.timestamp()), int(expires.timestamp()))

    def test_soft_delete_recover_purge(self):
        name = unique("del")
        self.keys.create_rsa_key(name, size=2048)
        deleted = self.keys.begin_delete_key(name).result()
        self.assertEqual(deleted.recovery_id, f"{AUTHORITY}/deletedkeys/{name}")
        with self.assertRaises(ResourceNotFoundError):
            self.keys.get_key(name)
        self.assertEqual(self.keys.get_deleted_key(name).name, name)
        self.assertIn(name, [d.name for d in self.keys.list_deleted_keys()])
        with self.assertRaises(ResourceExistsError) as raised:
            self.keys.create_rsa_key(name, size=2048)
        self.assertEqual(raised.exception.status_code, 409)
        self.assertEqual(raised.exception.error.innererror["code"], "ObjectIsDeletedButRecoverable")
        recovered = self.keys.begin_recover_deleted_key(name).result()
        self.assertEqual(recovered.name, name)
        self.assertEqual(self.keys.get_key(name).name, name)
        self.keys.begin_delete_key(name).result()
        self.keys.purge_deleted_key(name)
        with self.assertRaises(ResourceNotFoundError):
            self.keys.get_deleted_key(name)

    def test_import_rsa_key(self):
        from azure.keyvault.keys import JsonWebKey

        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = private.private_numbers()

        def b(i):
            return i.to_bytes((i.bit_length() + 7) // 8, "big")

        jwk = JsonWebKey(
            kty="RSA", n=b(numbers.public_numbers.n), e=b(numbers.public_numbers.e), d=b(numbers.d),
            p=b(numbers.p), q=b(numbers.q), dp=b(numbers.dmp1), dq=b(numbers.dmq1), qi=b(numbers.iqmp),
        )
        name = unique("imp")
        imported = self.keys.import_key(name, jwk)
        self.assertEqual(imported.key.n, b(numbers.public_numbers.n))
        from cryptography.hazmat.primitives.asymmetric import padding

        wrapped = private.public_key().encrypt(
            b"s" * 32, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        )
        remote = crypto_client(imported.id, self.credential)
        self.assertEqual(remote.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key, b"s" * 32)

    def test_errors_have_the_service_codes(self):
        with self.assertRaises(ResourceNotFoundError) as raised:
            self.keys.get_key(unique("missing"))
        self.assertEqual(raised.exception.error.code, "KeyNotFound")
        name = unique("err")
        self.keys.create_rsa_key(name, size=2048)
        response = raw("POST", f"/keys/{name}//unwrapkey", self.token, {"alg": "RSA-OAEP-256", "value": "ab+/cd"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["error"], {"code": "BadParameter", "message": "Content of 'value' is not base64url."})
        response = raw("GET", f"/keys/{name}/", self.token, api=None)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["error"]["code"], "BadParameter")
        for version in ("7.4", "7.5", "7.6"):
            self.assertEqual(raw("GET", f"/keys/{name}/", self.token, api=version).status_code, 200)
        # Operation segments are case-insensitive (.NET sends wrapKey), trailing slashes tolerated.
        response = raw("POST", f"/keys/{name}//wrapKey/", self.token, {"alg": "RSA-OAEP-256", "value": b64url(b"z" * 32)})
        self.assertEqual(response.status_code, 200, response.text)
        self.assertTrue(response.json()["kid"].startswith(f"{AUTHORITY}/keys/{name}/"))
        # Unwrapping with another version fails as OAEP decoding does.
        other = self.keys.rotate_key(name)
        wrapped = response.json()["value"]
        response = raw("POST", f"/keys/{name}/{other.properties.version}/unwrapkey", self.token, {"alg": "RSA-OAEP-256", "value": wrapped})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["error"]["message"], "Error occurred while decoding OAEP padding.")


class RsaWrap(unittest.TestCase):
    """Python wraps RSA locally with n and e and unwraps remotely: the RSA math and the JWK
    encoding must both be right."""

    @classmethod
    def setUpClass(cls):
        cls.client_id, cls.credential = secret_credential()
        cls.keys = key_client(cls.credential)

    def check_size(self, size):
        key = self.keys.create_rsa_key(unique(f"rsa{size}"), size=size)
        self.assertEqual(len(key.key.n) * 8, size)
        local = crypto_client(key, self.credential)
        remote = crypto_client(key.id, self.credential)
        before = counters()["unwrap_key"]["succeeded"]
        for alg in (KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa1_5):
            plaintext = os.urandom(32)
            wrapped = local.wrap_key(alg, plaintext)
            self.assertEqual(len(wrapped.encrypted_key), size // 8)
            self.assertEqual(remote.unwrap_key(alg, wrapped.encrypted_key).key, plaintext, alg)
        self.assertEqual(counters()["unwrap_key"]["succeeded"] - before, 3)
        for alg in (EncryptionAlgorithm.rsa_oaep_256, EncryptionAlgorithm.rsa_oaep, EncryptionAlgorithm.rsa1_5):
            encrypted = local.encrypt(alg, b"secret bytes")
            self.assertEqual(remote.decrypt(alg, encrypted.ciphertext).plaintext, b"secret bytes")

    def test_rsa_2048(self):
        self.check_size(2048)

    def test_rsa_3072(self):
        self.check_size(3072)

    def test_rsa_4096(self):
        self.check_size(4096)

    def test_rsa_hsm(self):
        key = self.keys.create_rsa_key(unique("rsahsm"), size=2048, hardware_protected=True)
        self.assertEqual(key.key_type, "RSA-HSM")
        wrapped = crypto_client(key, self.credential).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"h" * 32)
        self.assertEqual(crypto_client(key.id, self.credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key, b"h" * 32)


class ManagedHsm(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client_id, cls.credential = secret_credential(HSM, HSM_TENANT)
        cls.keys = key_client(cls.credential, HSM)
        # The plugin's minimal role. Without `get`, CryptographyClient cannot fetch the key and
        # sends every operation to the HSM (with `get` it would "wrap" oct keys locally with a
        # random key of its own, as the SDK does when a JWK carries no `k`).
        _, cls.wrap_only = secret_credential(HSM, HSM_TENANT, ["wrapKey", "unwrapKey", "encrypt", "decrypt"])

    def test_oct_hsm_key_wrap(self):
        key = self.keys.create_oct_key(unique("oct"), size=256, hardware_protected=True)
        self.assertEqual(key.key_type, "oct-HSM")
        self.assertTrue(key.id.startswith(f"{HSM_AUTHORITY}/keys/"))
        self.assertIsNone(key.key.k)
        crypto = crypto_client(key.id, self.wrap_only)
        before = counters(HSM)["unwrap_key"]["succeeded"]
        kek = os.urandom(32)
        for alg in (KeyWrapAlgorithm.aes_256, KeyWrapAlgorithm.ckm_aes_key_wrap):
            wrapped = crypto.wrap_key(alg, kek)
            self.assertEqual(len(wrapped.encrypted_key), 40)
            self.assertEqual(crypto.unwrap_key(alg, wrapped.encrypted_key).key, kek)
        odd = os.urandom(20)
        wrapped = crypto.wrap_key(KeyWrapAlgorithm.ckm_aes_key_wrap_pad, odd)
        self.assertEqual(crypto.unwrap_key(KeyWrapAlgorithm.ckm_aes_key_wrap_pad, wrapped.encrypted_key).key, odd)
        self.assertEqual(counters(HSM)["unwrap_key"]["succeeded"] - before, 3)
        with self.assertRaises(HttpResponseError) as raised:
            crypto.wrap_key(KeyWrapAlgorithm.aes_128, kek)
        self.assertEqual(raised.exception.status_code, 400)
        # AES-GCM encryption on the HSM: the HSM picks the IV and returns the tag.
        encrypted = crypto.encrypt(EncryptionAlgorithm.a256_gcm, b"gcm plaintext", additional_authenticated_data=b"ad")
        self.assertEqual(len(encrypted.iv), 12)
        decrypted = crypto.decrypt(
            EncryptionAlgorithm.a256_gcm, encrypted.ciphertext, iv=encrypted.iv,
            authentication_tag=encrypted.tag, additional_authenticated_data=b"ad",
        )
        self.assertEqual(decrypted.plaintext, b"gcm plaintext")

    def test_oct_hsm_rsa_hsm_and_rotation(self):
        name = unique("hsm")
        first = self.keys.create_rsa_key(name, size=3072, hardware_protected=True)
        second = self.keys.rotate_key(name)
        self.assertNotEqual(first.properties.version, second.properties.version)
        wrapped = crypto_client(first, self.credential).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"m" * 32)
        self.assertEqual(crypto_client(first.id, self.credential).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key, b"m" * 32)

    def test_vault_token_is_refused_by_the_hsm(self):
        _, vault_credential = secret_credential()
        token = vault_credential.get_token("https://vault.azure.net/.default").token
        response = raw("GET", "/keys", token, base=HSM)
        self.assertEqual(response.status_code, 401)


class TokenFlows(unittest.TestCase):
    """Each credential type obtains a token from the emulator and uses it on the vault."""

    def use(self, credential, name_prefix):
        keys = key_client(credential)
        key = keys.create_rsa_key(unique(name_prefix), size=2048)
        self.assertEqual(keys.get_key(key.name).id, key.id)

    def test_client_secret(self):
        _, credential = secret_credential()
        self.use(credential, "secret")
        client_id, _ = secret_identity()
        wrong = ClientSecretCredential(TENANT, client_id, "wrong", authority=AUTHORITY, disable_instance_discovery=True)
        with self.assertRaises(Exception):
            wrong.get_token("https://vault.azure.net/.default")

    def test_client_certificate(self):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-kms")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(private, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        client_id = str(uuid.uuid4())
        admin("POST", "identities", {"client_id": client_id, "certificate_pem": cert_pem.decode()})
        credential = CertificateCredential(
            TENANT, client_id, certificate_data=key_pem + cert_pem, authority=AUTHORITY, disable_instance_discovery=True
        )
        self.use(credential, "cert")
        # A certificate that is not registered is refused.
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(other.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(other, hashes.SHA256())
        )
        stranger = CertificateCredential(
            TENANT, client_id,
            certificate_data=other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            + other_cert.public_bytes(serialization.Encoding.PEM),
            authority=AUTHORITY, disable_instance_discovery=True,
        )
        with self.assertRaises(Exception):
            stranger.get_token("https://vault.azure.net/.default")

    def test_workload_identity(self):
        client_id = str(uuid.uuid4())
        admin("POST", "identities", {
            "client_id": client_id,
            "federated": {"issuer": "https://oidc.cluster.example", "subject": "system:serviceaccount:kube-system:kube-kms"},
        })
        token = admin("POST", f"identities/{client_id}/federated-token", {})["token"]
        with tempfile.NamedTemporaryFile("w", suffix=".jwt", delete=False) as handle:
            handle.write(token)
        try:
            credential = WorkloadIdentityCredential(
                tenant_id=TENANT, client_id=client_id, token_file_path=handle.name,
                authority=AUTHORITY, disable_instance_discovery=True,
            )
            self.use(credential, "wi")
        finally:
            os.unlink(handle.name)

    def with_env(self, env, body):
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            body()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def test_managed_identity_imds(self):
        user_client_id = str(uuid.uuid4())
        admin("POST", "identities", {"client_id": user_client_id, "managed": "user_assigned", "resource_id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kms"})
        before = counters()["imds_token"]["succeeded"]

        def body():
            self.use(ManagedIdentityCredential(client_id=user_client_id), "mi")
            self.use(ManagedIdentityCredential(identity_config={"resource_id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kms"}), "mires")

        self.with_env({"AZURE_POD_IDENTITY_AUTHORITY_HOST": IMDS}, body)
        self.assertGreaterEqual(counters()["imds_token"]["succeeded"] - before, 2)
        # The raw IMDS form: Metadata header required, expires_in/expires_on are strings.
        response = requests.get(IMDS + "/metadata/identity/oauth2/token", params={"api-version": "2018-02-01", "resource": "https://vault.azure.net", "client_id": user_client_id}, timeout=30)
        self.assertEqual(response.status_code, 400)
        response = requests.get(IMDS + "/metadata/identity/oauth2/token", params={"api-version": "2018-02-01", "resource": "https://vault.azure.net", "client_id": user_client_id}, headers={"Metadata": "true"}, timeout=30)
        self.assertEqual(response.status_code, 200)
        self.assertIsInstance(response.json()["expires_in"], str)
        self.assertIsInstance(response.json()["expires_on"], str)

    def test_managed_identity_app_service(self):
        client_id = str(uuid.uuid4())
        admin("POST", "identities", {"client_id": client_id, "managed": "user_assigned"})

        def body():
            self.use(ManagedIdentityCredential(client_id=client_id), "appsvc")

        self.with_env({"IDENTITY_ENDPOINT": IDENTITY_ENDPOINT, "IDENTITY_HEADER": IDENTITY_HEADER}, body)
        response = requests.get(IDENTITY_ENDPOINT, params={"api-version": "2019-08-01", "resource": "https://vault.azure.net", "client_id": client_id}, headers={"X-IDENTITY-HEADER": "wrong"}, timeout=30)
        self.assertEqual(response.status_code, 401)

    def test_openid_configuration(self):
        response = requests.get(f"{AUTHORITY}/{TENANT}/v2.0/.well-known/openid-configuration", verify=CA, timeout=30)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["token_endpoint"], f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token")


class PermissionsAndFaults(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client_id, cls.credential = secret_credential()
        cls.keys = key_client(cls.credential)
        cls.token = cls.credential.get_token("https://vault.azure.net/.default").token
        cls.name = unique("fault")
        key = cls.keys.create_rsa_key(cls.name, size=2048)
        cls.wrapped = crypto_client(key, cls.credential).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"f" * 32).encrypted_key

    def tearDown(self):
        admin("DELETE", "faults")
        admin("DELETE", "throttle")

    def unwrap(self):
        return raw("POST", f"/keys/{self.name}//unwrapkey", self.token, {"alg": "RSA-OAEP-256", "value": b64url(self.wrapped)})

    def test_revoked_unwrap_permission_is_403(self):
        admin("POST", f"identities/{self.client_id}/revoke", {"permissions": ["unwrapKey"]})
        try:
            response = self.unwrap()
            self.assertEqual(response.status_code, 403)
            self.assertEqual(response.json()["error"]["code"], "Forbidden")
            self.assertIn("does not have keys unwrapKey permission", response.json()["error"]["message"])
        finally:
            admin("POST", f"identities/{self.client_id}/grant", {"permissions": ["unwrapKey"]})
        self.assertEqual(self.unwrap().status_code, 200)

    def test_throttle_with_and_without_retry_after(self):
        admin("POST", "faults", {"operation": "unwrap_key", "fault": {"kind": "throttle"}, "count": 1})
        response = self.unwrap()
        self.assertEqual(response.status_code, 429)
        self.assertNotIn("Retry-After", response.headers)
        self.assertEqual(response.json()["error"]["code"], "Throttled")
        admin("POST", "faults", {"operation": "unwrap_key", "fault": {"kind": "throttle", "retry_after": 2}, "count": 1})
        response = self.unwrap()
        self.assertEqual(response.headers["Retry-After"], "2")
        self.assertEqual(self.unwrap().status_code, 200)

    def test_5xx_latency_and_dropped_connections(self):
        admin("POST", "faults", {"operation": "unwrap_key", "fault": {"kind": "status", "status": 503}, "count": 1})
        self.assertEqual(self.unwrap().status_code, 503)
        admin("POST", "faults", {"operation": "unwrap_key", "fault": {"kind": "latency", "millis": 300}, "count": 1})
        started = time.monotonic()
        self.assertEqual(self.unwrap().status_code, 200)
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        before = counters()["unwrap_key"]
        admin("POST", "faults", {"operation": "unwrap_key", "fault": {"kind": "drop_connection"}, "count": 1})
        with self.assertRaises(requests.exceptions.ConnectionError):
            self.unwrap()
        after = counters()["unwrap_key"]
        self.assertEqual(after["dropped"] - before["dropped"], 1)
        self.assertEqual(after["requests"] - before["requests"], 1)
        self.assertEqual(self.unwrap().status_code, 200)

    def test_budget_mode(self):
        admin("PUT", "throttle", {"rsa2048_software": 2})
        statuses = [self.unwrap().status_code for _ in range(3)]
        self.assertEqual(statuses, [200, 200, 429])
        limits = admin("GET", "throttle")
        self.assertEqual(limits["rsa2048_hsm"], 2000)
        self.assertEqual(limits["window_seconds"], 10)


if __name__ == "__main__":
    unittest.main()
