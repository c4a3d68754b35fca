"""Fidelity suite: Microsoft's Python SDKs (azure-keyvault-certificates, -secrets, -keys,
azure-identity) against the keyvault-emulator's Certificates API and EC keys, over HTTPS with the
emulator's CA.

Run by crates/keyvault-emulator/tests/python_sdk.rs, which starts a Key Vault emulator (page size
2) and passes its URL in KV_* environment variables. Certificates are created from policies
(self-signed, and Unknown issuer with a merge), imported (PFX with and without password, PEM with a
chain), read back through their backing secret and key, listed, updated, deleted, recovered and
purged by clients we did not write; the backing PFX and PEM are parsed by `cryptography`.
"""

import base64
import datetime
import unittest

import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.certificates import (
    CertificateClient,
    CertificateContentType,
    CertificatePolicy,
    KeyCurveName,
    KeyType,
    WellKnownIssuerNames,
)
from azure.keyvault.keys import JsonWebKey, KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vault_fixture import API, AUTHORITY, CA, NO_RETRY, VAULT, admin, bearer, credential, unique

NOW = datetime.datetime.now(datetime.timezone.utc)


def clients(cred):
    options = {"verify_challenge_resource": False, **NO_RETRY}
    return (
        CertificateClient(VAULT, cred, **options),
        SecretClient(VAULT, cred, **options),
        KeyClient(VAULT, cred, **options),
    )


def issue(subject_cn, public_key, issuer_cn, issuer_key, ca=False):
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{subject_cn}.test")]), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def chain():
    """A CA and a leaf it issued, with the leaf's key."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = issue("emulator-test-ca", ca_key.public_key(), "emulator-test-ca", ca_key, ca=True)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = issue("leaf", leaf_key.public_key(), "emulator-test-ca", ca_key)
    return leaf_key, leaf, ca_cert


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


class CreateFromPolicy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.credential = credential()
        cls.certs, cls.secrets, cls.keys = clients(cls.credential)
        cls.token = bearer(cls.credential)

    def test_default_policy_self_signed_with_pending_polling(self):
        name = unique("tls")
        poller = self.certs.begin_create_certificate(name, CertificatePolicy.get_default(), _polling_interval=0)
        cert = poller.result()
        self.assertIsNotNone(cert, "the 202 must say inProgress so the poller runs")
        version = cert.properties.version
        self.assertRegex(version, r"^[0-9a-f]{32}$")
        self.assertEqual(cert.id, f"{AUTHORITY}/certificates/{name}/{version}")
        self.assertEqual(cert.key_id, f"{AUTHORITY}/keys/{name}/{version}")
        self.assertEqual(cert.secret_id, f"{AUTHORITY}/secrets/{name}/{version}")
        parsed = x509.load_der_x509_certificate(cert.cer)
        self.assertEqual(parsed.subject.rfc4514_string(), "CN=DefaultPolicy")
        self.assertEqual(cert.properties.x509_thumbprint, parsed.fingerprint(hashes.SHA1()))
        self.assertEqual(parsed.public_key().key_size, 2048)
        ekus = parsed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(set(ekus), {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH})
        created = cert.properties.created_on
        self.assertEqual(cert.properties.not_before, created - datetime.timedelta(seconds=600))
        self.assertGreater(cert.properties.expires_on, created + datetime.timedelta(days=364))
        self.assertTrue(cert.properties.enabled)
        policy = cert.policy
        self.assertEqual(policy.issuer_name, "Self")
        self.assertEqual(policy.key_type, "RSA")
        self.assertEqual(policy.key_size, 2048)
        self.assertTrue(policy.exportable)
        self.assertEqual(policy.content_type, "application/x-pkcs12")
        self.assertEqual(policy.validity_in_months, 12)
        self.assertEqual(policy.lifetime_actions[0].action, "AutoRenew")
        operation = self.certs.get_certificate_operation(name)
        self.assertEqual(operation.status, "completed")
        self.assertEqual(operation.target, f"{AUTHORITY}/certificates/{name}")
        self.assertTrue(x509.load_der_x509_csr(operation.csr).is_signature_valid)

    def test_the_202_says_in_progress_with_location(self):
        name = unique("raw")
        response = requests.post(
            f"{AUTHORITY}/certificates/{name}/create",
            params={"api-version": API},
            json={"policy": {"x509_props": {"subject": "CN=raw", "sans": {}}, "issuer": {"name": "Self"}}},
            headers={"Authorization": f"Bearer {self.token}"},
            verify=CA,
            timeout=30,
        )
        self.assertEqual(response.status_code, 202, response.text)
        self.assertEqual(response.json()["status"], "inProgress")
        self.assertEqual(response.headers["Retry-After"], "10")
        self.assertTrue(response.headers["Location"].startswith(f"{AUTHORITY}/certificates/{name}/pending?api-version={API}"))
        self.assertEqual(self.certs.get_certificate_operation(name).status, "completed")

    def test_backing_secret_holds_the_pfx_and_the_key_is_usable(self):
        name = unique("pfx")
        cert = self.certs.begin_create_certificate(
            name, CertificatePolicy("Self", subject="CN=pfx", san_dns_names=["pfx.test"]), _polling_interval=0
        ).result()
        secret = self.secrets.get_secret(name)
        self.assertEqual(secret.id, cert.secret_id)
        self.assertEqual(secret.properties.content_type, "application/x-pkcs12")
        self.assertTrue(secret.properties.managed)
        self.assertEqual(secret.properties.key_id, cert.key_id)
        key, leaf, extra = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
        self.assertEqual(der(leaf), cert.cer)
        self.assertEqual(extra, [])
        self.assertEqual(key.public_key().public_numbers(), leaf.public_key().public_numbers())
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(sans.get_values_for_type(x509.DNSName), ["pfx.test"])

        # The backing key answers through the Keys API and unwraps what its certificate wraps.
        backing = self.keys.get_key(name)
        self.assertEqual(backing.id, cert.key_id)
        self.assertTrue(backing.properties.managed)
        wrapped = CryptographyClient(backing, self.credential).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
        remote = CryptographyClient(backing.id, self.credential, verify_challenge_resource=False, **NO_RETRY)
        self.assertEqual(remote.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key, b"k" * 32)

        # The certificate owns the secret's lifetime.
        with self.assertRaises(HttpResponseError) as raised:
            self.secrets.set_secret(name, "overwrite")
        self.assertEqual(raised.exception.status_code, 403)
        self.assertEqual(raised.exception.error.innererror["code"], "SecretManagedByKeyVault")

    def test_pem_content_type_gives_key_first_pem(self):
        name = unique("pem")
        policy = CertificatePolicy("Self", subject="CN=pem", content_type=CertificateContentType.pem)
        cert = self.certs.begin_create_certificate(name, policy, _polling_interval=0).result()
        secret = self.secrets.get_secret(name)
        self.assertEqual(secret.properties.content_type, "application/x-pem-file")
        self.assertTrue(secret.value.startswith("-----BEGIN PRIVATE KEY-----\n"))
        self.assertTrue(secret.value.endswith("-----END CERTIFICATE-----\n"))
        key = serialization.load_pem_private_key(secret.value.encode(), None)
        leaf = x509.load_pem_x509_certificate(secret.value.encode())
        self.assertEqual(der(leaf), cert.cer)
        self.assertEqual(key.public_key().public_numbers(), leaf.public_key().public_numbers())
        # outContentType converts a PFX secret to PEM (2025-07-01+).
        pfx_name = unique("conv")
        self.certs.begin_create_certificate(pfx_name, CertificatePolicy("Self", subject="CN=c"), _polling_interval=0).result()
        converted = self.secrets.get_secret(pfx_name, out_content_type="application/x-pem-file")
        self.assertTrue(converted.value.startswith("-----BEGIN PRIVATE KEY-----\n"))

    def test_ec_certificates_on_every_curve(self):
        for curve, size in [(KeyCurveName.p_256, 256), (KeyCurveName.p_384, 384), (KeyCurveName.p_521, 521)]:
            name = unique("ec")
            policy = CertificatePolicy("Self", subject=f"CN={name}", key_type=KeyType.ec, key_curve_name=curve)
            cert = self.certs.begin_create_certificate(name, policy, _polling_interval=0).result()
            public = x509.load_der_x509_certificate(cert.cer).public_key()
            self.assertIsInstance(public, ec.EllipticCurvePublicKey)
            self.assertEqual(public.curve.key_size, size)
            self.assertEqual(cert.policy.key_curve_name, curve)
            key = self.keys.get_key(name)
            self.assertEqual((key.key_type, key.key.crv), ("EC", curve))
            numbers = public.public_numbers()
            self.assertEqual(int.from_bytes(key.key.x, "big"), numbers.x)
            self.assertEqual(int.from_bytes(key.key.y, "big"), numbers.y)
            self.assertEqual(len(key.key.x), (size + 7) // 8)
            pfx = base64.b64decode(self.secrets.get_secret(name).value)
            private, _, _ = pkcs12.load_key_and_certificates(pfx, None)
            self.assertEqual(private.public_key().public_numbers(), numbers)

    def test_a_policy_without_subject_or_sans_is_refused(self):
        response = requests.post(
            f"{AUTHORITY}/certificates/{unique('nosubject')}/create",
            params={"api-version": API},
            json={"policy": {"issuer": {"name": "Self"}}},
            headers={"Authorization": f"Bearer {self.token}"},
            verify=CA,
            timeout=30,
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["error"]["code"], "BadParameter")

    def test_unknown_issuer_waits_for_a_merge(self):
        name = unique("csr")
        policy = CertificatePolicy(WellKnownIssuerNames.unknown, subject="CN=merged")
        operation = self.certs.begin_create_certificate(name, policy, _polling_interval=0).result()
        self.assertEqual(operation.status, "inProgress")
        self.assertEqual(operation.issuer_name, "Unknown")
        csr = x509.load_der_x509_csr(operation.csr)
        pending = self.certs.get_certificate(name)
        self.assertFalse(pending.properties.enabled)
        self.assertIsNone(pending.cer)
        self.assertNotIn(name, [p.name for p in self.certs.list_properties_of_certificates()])
        with_pending = self.certs.list_properties_of_certificates(include_pending=True, max_page_size=1)
        self.assertIn(name, [p.name for p in with_pending])
        with self.assertRaises(HttpResponseError) as raised:
            self.secrets.get_secret(name)
        self.assertEqual(raised.exception.error.innererror["code"], "SecretDisabled")

        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_cert = issue("merge-ca", ca_key.public_key(), "merge-ca", ca_key, ca=True)
        signed = issue("merged", csr.public_key(), "merge-ca", ca_key)
        merged = self.certs.merge_certificate(name, [der(signed), der(ca_cert)])
        self.assertEqual(merged.cer, der(signed))
        self.assertTrue(merged.properties.enabled)
        self.assertEqual(self.certs.get_certificate_operation(name).status, "completed")
        key, leaf, extra = pkcs12.load_key_and_certificates(base64.b64decode(self.secrets.get_secret(name).value), None)
        self.assertEqual(der(leaf), der(signed))
        self.assertEqual([der(c) for c in extra], [der(ca_cert)])

        wrong = unique("wrong")
        self.certs.begin_create_certificate(wrong, policy, _polling_interval=0).result()
        with self.assertRaises(HttpResponseError) as raised:
            self.certs.merge_certificate(wrong, [der(signed)])
        self.assertEqual(raised.exception.status_code, 400)

    def test_cancel_and_delete_an_operation(self):
        name = unique("cancel")
        policy = CertificatePolicy(WellKnownIssuerNames.unknown, subject="CN=cancel")
        self.certs.begin_create_certificate(name, policy, _polling_interval=0).result()
        cancelled = self.certs.cancel_certificate_operation(name)
        self.assertTrue(cancelled.cancellation_requested)
        self.assertEqual(cancelled.status, "cancelled")
        deleted = self.certs.delete_certificate_operation(name)
        self.assertEqual(deleted.id, f"{AUTHORITY}/certificates/{name}/pending")
        with self.assertRaises(ResourceNotFoundError):
            self.certs.get_certificate_operation(name)
        with self.assertRaises(ResourceNotFoundError):
            self.certs.get_certificate(name)


class ImportAndManage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.credential = credential()
        cls.certs, cls.secrets, cls.keys = clients(cls.credential)

    def test_import_pfx_with_password_and_chain(self):
        key, leaf, ca_cert = chain()
        pfx = pkcs12.serialize_key_and_certificates(
            b"imported", key, leaf, [ca_cert], serialization.BestAvailableEncryption(b"s3cret")
        )
        name = unique("imp")
        cert = self.certs.import_certificate(name, pfx, password="s3cret", tags={"source": "test"})
        self.assertEqual(cert.cer, der(leaf))
        self.assertEqual(cert.properties.tags, {"source": "test"})
        self.assertEqual(cert.policy.issuer_name, "Unknown")
        self.assertEqual(cert.policy.subject, "CN=leaf")
        self.assertEqual(cert.policy.san_dns_names, ["leaf.test"])
        self.assertEqual(cert.properties.not_before, leaf.not_valid_before_utc)
        self.assertEqual(cert.properties.expires_on, leaf.not_valid_after_utc)
        # The backing secret is re-exported without the password, chain included.
        secret = self.secrets.get_secret(name)
        private, back_leaf, extra = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
        self.assertEqual(der(back_leaf), der(leaf))
        self.assertEqual([der(c) for c in extra], [der(ca_cert)])
        self.assertEqual(private.private_numbers(), key.private_numbers())
        with self.assertRaises(HttpResponseError) as raised:
            self.certs.import_certificate(unique("badpw"), pfx, password="wrong")
        self.assertEqual(raised.exception.status_code, 400)

    def test_import_pfx_without_password(self):
        key, leaf, _ = chain()
        pfx = pkcs12.serialize_key_and_certificates(b"plain", key, leaf, None, serialization.NoEncryption())
        cert = self.certs.import_certificate(unique("plain"), pfx)
        self.assertEqual(cert.cer, der(leaf))

    def test_import_pem_with_key_and_chain(self):
        key, leaf, ca_cert = chain()
        pem = (
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            + leaf.public_bytes(serialization.Encoding.PEM)
            + ca_cert.public_bytes(serialization.Encoding.PEM)
        )
        name = unique("pemimp")
        policy = CertificatePolicy(WellKnownIssuerNames.unknown, content_type=CertificateContentType.pem)
        cert = self.certs.import_certificate(name, pem, policy=policy)
        self.assertEqual(cert.cer, der(leaf))
        value = self.secrets.get_secret(name).value
        self.assertTrue(value.startswith("-----BEGIN PRIVATE KEY-----\n"))
        self.assertEqual(value.count("-----BEGIN CERTIFICATE-----"), 2)
        # Without the PEM content type the service reads a PFX and refuses the file.
        with self.assertRaises(HttpResponseError) as raised:
            self.certs.import_certificate(unique("pemasfpx"), pem)
        self.assertEqual(raised.exception.status_code, 400)

    def test_import_ec_pem(self):
        key = ec.generate_private_key(ec.SECP384R1())
        leaf = issue("ecleaf", key.public_key(), "ecleaf", key)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ) + leaf.public_bytes(serialization.Encoding.PEM)
        name = unique("ecimp")
        policy = CertificatePolicy(WellKnownIssuerNames.unknown, content_type=CertificateContentType.pem)
        cert = self.certs.import_certificate(name, pem, policy=policy)
        self.assertEqual(cert.policy.key_type, "EC")
        self.assertEqual(cert.policy.key_curve_name, "P-384")
        self.assertEqual(self.keys.get_key(name).key.crv, "P-384")

    def test_versions_lists_update_and_policy(self):
        name = unique("ver")
        policy = CertificatePolicy("Self", subject="CN=ver", validity_in_months=6)
        first = self.certs.begin_create_certificate(name, policy, _polling_interval=0).result()
        second = self.certs.begin_create_certificate(name, policy, _polling_interval=0).result()
        self.assertEqual(self.certs.get_certificate(name).properties.version, second.properties.version)
        pinned = self.certs.get_certificate_version(name, first.properties.version)
        self.assertEqual(pinned.cer, first.cer)
        pages = list(self.certs.list_properties_of_certificate_versions(name, max_page_size=1).by_page())
        self.assertEqual(len(pages), 2)
        versions = sorted(p.version for page in pages for p in page)
        self.assertEqual(versions, sorted([first.properties.version, second.properties.version]))
        self.assertEqual(self.secrets.get_secret(name, first.properties.version).properties.version, first.properties.version)
        listed = [p for p in self.certs.list_properties_of_certificates() if p.name == name]
        self.assertEqual(len(listed), 1)
        self.assertEqual(listed[0].x509_thumbprint, second.properties.x509_thumbprint)

        updated = self.certs.update_certificate_properties(name, enabled=False, tags={"env": "test"})
        self.assertFalse(updated.properties.enabled)
        self.assertEqual(updated.properties.tags, {"env": "test"})
        with self.assertRaises(HttpResponseError) as raised:
            self.secrets.get_secret(name)
        self.assertEqual(raised.exception.status_code, 403)
        self.certs.update_certificate_properties(name, enabled=True)

        self.assertEqual(self.certs.get_certificate_policy(name).validity_in_months, 6)
        changed = self.certs.update_certificate_policy(name, CertificatePolicy("Self", subject="CN=ver", validity_in_months=24))
        self.assertEqual(changed.validity_in_months, 24)
        third = self.certs.begin_create_certificate(name, self.certs.get_certificate_policy(name), _polling_interval=0).result()
        self.assertGreater(third.properties.expires_on, third.properties.created_on + datetime.timedelta(days=700))

    def test_delete_recover_purge_take_key_and_secret_along(self):
        name = unique("cdel")
        self.certs.begin_create_certificate(name, CertificatePolicy.get_default(), _polling_interval=0).result()
        deleted = self.certs.begin_delete_certificate(name, _polling_interval=0).result()
        self.assertEqual(deleted.recovery_id, f"{AUTHORITY}/deletedcertificates/{name}")
        self.assertIsNotNone(deleted.cer)
        for read in (self.certs.get_certificate, self.secrets.get_secret, self.keys.get_key):
            with self.assertRaises(ResourceNotFoundError):
                read(name)
        self.assertEqual(self.certs.get_deleted_certificate(name).name, name)
        self.assertIn(name, [d.name for d in self.certs.list_deleted_certificates()])
        with self.assertRaises(ResourceExistsError) as raised:
            self.certs.begin_create_certificate(name, CertificatePolicy.get_default(), _polling_interval=0)
        self.assertEqual(raised.exception.error.innererror["code"], "ObjectIsDeletedButRecoverable")
        recovered = self.certs.begin_recover_deleted_certificate(name, _polling_interval=0).result()
        self.assertEqual(recovered.name, name)
        self.assertTrue(self.secrets.get_secret(name).properties.managed)
        self.assertEqual(self.keys.get_key(name).name, name)
        self.certs.begin_delete_certificate(name, _polling_interval=0).result()
        self.certs.purge_deleted_certificate(name)
        with self.assertRaises(ResourceNotFoundError):
            self.certs.get_deleted_certificate(name)
        with self.assertRaises(ResourceNotFoundError):
            self.secrets.get_deleted_secret(name)

    def test_certificate_permissions(self):
        name = unique("cperm")
        self.certs.begin_create_certificate(name, CertificatePolicy.get_default(), _polling_interval=0).result()
        reader, _, _ = clients(credential(["certificates/get"]))
        self.assertEqual(reader.get_certificate(name).name, name)
        with self.assertRaises(HttpResponseError) as raised:
            reader.begin_create_certificate(unique("no"), CertificatePolicy.get_default(), _polling_interval=0)
        self.assertEqual(raised.exception.status_code, 403)
        self.assertIn("does not have certificates create permission", raised.exception.error.message)
        with self.assertRaises(HttpResponseError):
            list(reader.list_properties_of_certificates())

    def test_certificate_reads_are_counted(self):
        name = unique("cread")
        self.certs.begin_create_certificate(name, CertificatePolicy.get_default(), _polling_interval=0).result()
        self.certs.get_certificate(name)
        counted = [r for r in admin("GET", "counters/reads") if r["kind"] == "certificate" and r["name"] == name]
        self.assertGreaterEqual(sum(r["requests"] for r in counted), 2)


class EcKeys(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cred = credential()
        cls.keys = clients(cred)[2]
        cls.token = bearer(cred)

    def test_create_ec_keys_on_every_curve(self):
        for curve, length in [("P-256", 32), ("P-384", 48), ("P-521", 66)]:
            name = unique("eck")
            key = self.keys.create_ec_key(name, curve=curve)
            self.assertEqual((key.key_type, key.key.crv), ("EC", curve))
            self.assertEqual((len(key.key.x), len(key.key.y)), (length, length))
            self.assertEqual(set(key.key_operations), {"sign", "verify"})
            fetched = self.keys.get_key(name)
            self.assertEqual((fetched.key.x, fetched.key.y), (key.key.x, key.key.y))
            # The point is on the curve: cryptography refuses it otherwise.
            curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
            ec.EllipticCurvePublicNumbers(
                int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big"), curves[curve]
            ).public_key()

    def test_import_an_ec_key(self):
        private = ec.generate_private_key(ec.SECP256R1())
        numbers = private.private_numbers()
        jwk = JsonWebKey(
            kty="EC",
            crv="P-256",
            x=numbers.public_numbers.x.to_bytes(32, "big"),
            y=numbers.public_numbers.y.to_bytes(32, "big"),
            d=numbers.private_value.to_bytes(32, "big"),
            key_ops=["sign", "verify"],
        )
        name = unique("ecimp")
        imported = self.keys.import_key(name, jwk)
        self.assertEqual(imported.key.crv, "P-256")
        self.assertEqual(int.from_bytes(imported.key.x, "big"), numbers.public_numbers.x)
        self.assertIsNone(imported.key.d)
        bad = JsonWebKey(kty="EC", crv="P-256", x=jwk.x, y=jwk.x, d=jwk.d)
        with self.assertRaises(HttpResponseError) as raised:
            self.keys.import_key(unique("bad"), bad)
        self.assertEqual(raised.exception.status_code, 400)

    def test_an_ec_key_refuses_rsa_algorithms(self):
        def wrap(key):
            return requests.post(
                f"{key.id}/wrapkey",
                params={"api-version": API},
                json={"alg": "RSA-OAEP-256", "value": "AAAA"},
                headers={"Authorization": f"Bearer {self.token}"},
                verify=CA,
                timeout=30,
            )

        default_ops = wrap(self.keys.create_ec_key(unique("ecwrap"), curve="P-256"))
        self.assertEqual(default_ops.status_code, 403)
        self.assertEqual(default_ops.json()["error"]["innererror"]["code"], "KeyOperationForbidden")
        with_wrap = self.keys.create_ec_key(unique("ecwrap"), curve="P-256", key_operations=["sign", "wrapKey"])
        response = wrap(with_wrap)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["error"]["code"], "BadParameter")


if __name__ == "__main__":
    unittest.main()
