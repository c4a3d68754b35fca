"""kube-kms-csi-provider as the Secrets Store CSI driver calls it, checked by a second
implementation: Mount requests shaped exactly like the driver's (driver.py), every mounted file
parsed independently with Python's `cryptography`, against the Key Vault emulator.

Each test reads as one clause of the contract (shared/reference/csi-provider-facts.md §1–§3):
what each object type and parameter of an Azure SecretProviderClass mounts, kube-kms's additions
(jmesPath, tls output, several vaults, a PFX password), every identity mode, every error (a gRPC
error whose message names the object and the field; a failed Mount returns no files), and the
vault traffic under 50 concurrent Mounts and a 429 storm.

crates/csi-provider/tests/driver_python.rs starts the emulator and the provider and runs this
module with:

    CSI_SOCKET               the provider's Unix socket
    CSI_HEALTH_ADDRESS       its health endpoint (host:port)
    CSI_PROVIDER_LOG         its log file
    CSI_EMULATOR_URL         the emulator (https://localhost:PORT; admin API under /_emulator/)
    CSI_CA                   the emulator's CA (PEM)
    CSI_TENANT               the tenant
    CSI_VAULT, CSI_OTHER_VAULT   vault names (both served by the emulator)
    CSI_CLOUD_ENV_FILE       the AzureStackCloud file, under the provider's --cloud-env-dir
    CSI_SEED                 JSON: what was seeded (names, versions, values, keys, certificates)
    CSI_SP_CLIENT_ID, CSI_SP_CLIENT_SECRET           a service principal (every permission)
    CSI_NOPERM_CLIENT_ID, CSI_NOPERM_CLIENT_SECRET   one without secrets/get
    CSI_WI_CLIENT_ID, CSI_WI_ISSUER, CSI_WI_NAMESPACE, CSI_WI_SERVICE_ACCOUNT   workload identity
    CSI_MI_CLIENT_ID         the node's user-assigned managed identity (the system-assigned one
                             may read keys and certificates, not secrets)

Run by hand with those set: python3 -m unittest -v test_mount (from this directory). The shared
helpers are in mount_fixture.py, the driver-shaped client in driver.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import time
import unittest
import urllib.request
import uuid

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

import driver
from driver import Pod, files_by_path, service_account_token
from mount_fixture import (
    BAD_REQUEST,
    DENIED,
    EC_CURVES,
    MODE_0644,
    NO_CREDENTIAL,
    NOT_AUTHENTICATED,
    NOT_FOUND,
    SEMVER,
    THROTTLED,
    S,
    ProviderTestCase,
    admin,
    b64url_int,
    certificate,
    certificates_der,
    chain_der,
    latest,
    leaf_der,
    open_pfx,
    pem_blocks,
    reads_of,
    secret,
    secret_versions,
    sp_secret,
    spc,
    spki,
)


def setUpModule() -> None:  # noqa: N802 (unittest's name)
    S.load()


# =============================================================================================
# Version, health and the socket's :authority


class VersionAndHealth(ProviderTestCase):
    def test_version_names_the_api_and_this_provider_over_both_authorities(self):
        for through in (self.path_driver, self.localhost_driver):
            with self.subTest(authority=through.authority):
                version = through.version()
                self.assertEqual(version.version, "v1alpha1")
                self.assertEqual(version.runtime_name, "kube-kms-csi-provider")
                self.assertRegex(version.runtime_version, SEMVER)

    def test_grpc_health_check_answers_serving_over_both_authorities(self):
        for through in (self.path_driver, self.localhost_driver):
            for service in ("", "v1alpha1.CSIDriverProvider"):
                with self.subTest(authority=through.authority, service=service):
                    self.assertEqual(through.health_status(service), 1, "grpc.health.v1 SERVING")

    def test_healthz_and_readyz_answer_ok(self):
        for path in ("/healthz", "/readyz"):
            with self.subTest(path=path):
                with urllib.request.urlopen(f"http://{S.health_address}{path}", timeout=10) as response:
                    self.assertEqual(response.status, 200)

    def test_metrics_count_calls_with_labels_that_name_no_object_vault_or_pod(self):
        pod = Pod(name=f"metrics-probe-{uuid.uuid4().hex[:8]}")
        self.mount(spc([secret("app-password")]), pod=pod)
        self.path_driver.version()
        with urllib.request.urlopen(f"http://{S.health_address}/metrics", timeout=10) as response:
            self.assertEqual(response.status, 200)
            text = response.read().decode()
        self.assertIn("kube_kms_csi_grpc_requests_total", text)
        self.assertIn("Mount", text)
        for name in ("app-password", S.vault, pod.name, pod.uid, S.sp_client_id, S.tenant):
            self.assertNotIn(name, text, "a metric label holds an object, vault, pod or identity")


class Authority(ProviderTestCase):
    """Every driver before v1.6 sends the socket's full path as `:authority` (h2 refuses it
    unless the provider's socket layer tolerates it); v1.6+ sends `localhost`."""

    OBJECTS = [
        secret("app-password"),
        {"objectName": "rsa-key", "objectType": "key"},
        {"objectName": "web-chain-pfx", "objectType": "cert", "objectAlias": "web.crt"},
    ]

    def test_a_mount_answers_the_same_over_the_socket_path_and_localhost(self):
        by_path = self.mount(spc(self.OBJECTS), through=self.path_driver)
        by_localhost = self.mount(spc(self.OBJECTS), through=self.localhost_driver)
        as_tuples = lambda files: {p: (f.mode, f.contents) for p, f in files.items()}  # noqa: E731
        self.assertEqual(as_tuples(by_path[0]), as_tuples(by_localhost[0]))
        self.assertEqual(by_path[1], by_localhost[1])
        self.assertEqual(set(by_path[0]), {"app-password", "rsa-key", "web.crt"})

    def test_several_mounts_share_one_connection(self):
        # Later requests reference the :authority in the HPACK dynamic table.
        for _ in range(3):
            files, _ = self.mount(spc([secret("app-password")]))
            self.assertEqual(files["app-password"].contents, latest("app-password")["value"].encode())


class DriverReleases(ProviderTestCase):
    """What driver v1.5's rotation reconciler sent differently from NodePublishVolume."""

    def test_a_v1_5_rotation_request_with_current_object_versions_mounts_the_latest(self):
        request = self.path_driver.mount_request(spc([secret("app-password")]), node_publish_secret=sp_secret())
        request.current_object_version.add(id="secret/app-password", version="0" * 32)
        response = self.path_driver.stub.Mount(request, timeout=60)
        self.assert_driver_accepts(response)
        files = files_by_path(response)
        self.assertEqual(files["app-password"].contents, latest("app-password")["value"].encode())

    def test_a_v1_5_rotation_sends_an_empty_secrets_map_instead_of_null(self):
        files, _ = self.mount(
            spc([{"objectName": "rsa-key", "objectType": "key"}], useVMManagedIdentity="true"),
            node_publish_secret={},
        )
        self.assertIn("rsa-key", files)
        self.refused(spc([secret("app-password")]), NO_CREDENTIAL, "clientid", node_publish_secret={})


# =============================================================================================
# Secrets


class Secrets(ProviderTestCase):
    def test_a_secret_is_mounted_as_stored_with_the_drivers_mode_and_its_version(self):
        files, versions = self.mount(spc([secret("app-password")]))
        self.assertEqual(set(files), {"app-password"})
        self.assertEqual(files["app-password"].contents, latest("app-password")["value"].encode())
        self.assertEqual(files["app-password"].mode, MODE_0644)
        self.assertEqual(versions, {"secret/app-password": latest("app-password")["version"]})

    def test_objectEncoding_utf8_writes_the_value_as_stored(self):
        files, _ = self.mount(spc([secret("app-blob-b64", objectEncoding="utf-8")]))
        self.assertEqual(files["app-blob-b64"].contents, latest("app-blob-b64")["value"].encode())

    def test_objectEncoding_base64_writes_the_decoded_bytes(self):
        files, _ = self.mount(spc([secret("app-blob-b64", objectEncoding="base64")]))
        expected = base64.b64decode(latest("app-blob-b64")["value"], validate=True)
        self.assertEqual(files["app-blob-b64"].contents, expected)
        self.assertEqual(expected[:4], b"\xff\x00\xfe\x80", "the seed holds bytes that are not UTF-8")

    def test_objectEncoding_hex_writes_the_decoded_bytes(self):
        files, _ = self.mount(spc([secret("app-blob-hex", objectEncoding="hex")]))
        self.assertEqual(files["app-blob-hex"].contents, binascii.unhexlify(latest("app-blob-hex")["value"]))

    def test_objectAlias_names_the_file_and_may_hold_sub_paths(self):
        files, versions = self.mount(
            spc(
                [
                    secret("app-password", objectAlias="db/credentials/password"),
                    secret("app-blob-hex", objectAlias="blob.bin", objectEncoding="hex"),
                ]
            )
        )
        self.assertEqual(set(files), {"db/credentials/password", "blob.bin"})
        self.assertEqual(files["db/credentials/password"].contents, latest("app-password")["value"].encode())
        # The id names the vault object, not the file.
        self.assertIn("secret/app-password", versions)
        self.assertIn("secret/app-blob-hex", versions)

    def test_objectVersion_pins_an_older_version(self):
        first = secret_versions("rotating")[0]
        files, versions = self.mount(spc([secret("rotating", objectVersion=first["version"])]))
        self.assertEqual(files["rotating"].contents, first["value"].encode())
        self.assertEqual(versions, {"secret/rotating": first["version"]})

    def test_objectVersion_latest_and_empty_mean_the_newest(self):
        for version in ("", "latest"):
            with self.subTest(objectVersion=version):
                files, versions = self.mount(spc([secret("rotating", objectVersion=version)]))
                self.assertEqual(files["rotating"].contents, latest("rotating")["value"].encode())
                self.assertEqual(versions, {"secret/rotating": latest("rotating")["version"]})

    def test_objectVersionHistory_writes_enabled_versions_newest_first_skipping_disabled(self):
        enabled = [v for v in reversed(secret_versions("rotating")) if v["enabled"]]
        self.assertEqual(len(enabled), 3, "the seed has 4 versions, one disabled")
        files, versions = self.mount(spc([secret("rotating", objectVersionHistory="10")]))
        self.assertEqual(set(files), {f"rotating/{i}" for i in range(3)})
        for index, version in enumerate(enabled):
            self.assertEqual(files[f"rotating/{index}"].contents, version["value"].encode(), index)
            self.assertEqual(versions[f"secret/rotating/{index}"], version["version"])
        disabled = [v["value"].encode() for v in secret_versions("rotating") if not v["enabled"]]
        self.assertNotIn(disabled[0], [f.contents for f in files.values()])

    def test_objectVersionHistory_writes_at_most_n_files(self):
        files, _ = self.mount(spc([secret("rotating", objectVersionHistory="2", objectAlias="hist")]))
        self.assertEqual(set(files), {"hist/0", "hist/1"})
        self.assertEqual(files["hist/0"].contents, latest("rotating")["value"].encode())

    def test_objectVersionHistory_starts_at_objectVersion(self):
        versions = secret_versions("rotating")  # v1, v2 (disabled), v3, v4
        files, ids = self.mount(
            spc([secret("rotating", objectVersion=versions[2]["version"], objectVersionHistory="5")])
        )
        self.assertEqual(set(files), {"rotating/0", "rotating/1"})
        self.assertEqual(files["rotating/0"].contents, versions[2]["value"].encode())
        self.assertEqual(files["rotating/1"].contents, versions[0]["value"].encode())
        self.assertEqual(ids["secret/rotating/0"], versions[2]["version"])

    def test_objectVersionHistory_of_one_is_a_single_file(self):
        files, versions = self.mount(spc([secret("rotating", objectVersionHistory="1")]))
        self.assertEqual(set(files), {"rotating"})
        self.assertEqual(versions, {"secret/rotating": latest("rotating")["version"]})

    def test_filePermission_sets_the_files_mode(self):
        files, _ = self.mount(
            spc(
                [
                    secret("app-password", filePermission="0400"),
                    secret("app-blob-hex", filePermission="755"),
                    secret("app-blob-b64"),
                ]
            )
        )
        self.assertEqual(files["app-password"].mode, 0o400)
        self.assertEqual(files["app-blob-hex"].mode, 0o755)
        self.assertEqual(files["app-blob-b64"].mode, MODE_0644)

    def test_the_requests_permission_is_the_default_mode(self):
        files, _ = self.mount(spc([secret("app-password")]), permission="384")  # 0600
        self.assertEqual(files["app-password"].mode, 0o600)

    def test_a_class_with_many_objects_returns_them_all(self):
        objects = [
            secret("app-password"),
            secret("app-blob-b64", objectEncoding="base64"),
            {"objectName": "ec-p256", "objectType": "key"},
            {"objectName": "web-selfsigned", "objectType": "cert"},
            secret("web-selfsigned", objectAlias="web-selfsigned.pem"),
        ]
        files, versions = self.mount(spc(objects))
        self.assertEqual(
            set(files), {"app-password", "app-blob-b64", "ec-p256", "web-selfsigned", "web-selfsigned.pem"}
        )
        self.assertEqual(versions["key/ec-p256"], S.seed["keys"]["ec-p256"]["version"])
        self.assertEqual(versions["cert/web-selfsigned"], certificate("web-selfsigned")["version"])
        self.assertEqual(versions["secret/web-selfsigned"], certificate("web-selfsigned")["version"])


# =============================================================================================
# Certificates read as secrets (key and chain), as certificates (leaf) and kube-kms's outputs


class CertificateBackedSecrets(ProviderTestCase):
    def assert_key_then_chain(self, data: bytes, name: str) -> None:
        """PKCS#8 `PRIVATE KEY` first, then the chain leaf → root, the key the leaf's."""
        blocks = pem_blocks(data)
        labels = [label for label, _ in blocks]
        expected = chain_der(name)
        self.assertEqual(labels, ["PRIVATE KEY"] + ["CERTIFICATE"] * len(expected), labels)
        key = serialization.load_pem_private_key(blocks[0][1], password=None)
        self.assertEqual(certificates_der(data), expected, "the chain, leaf → root")
        leaf = x509.load_der_x509_certificate(expected[0])
        self.assertEqual(spki(key.public_key()), spki(leaf.public_key()), "the key is the leaf's")

    def test_a_pfx_backed_certificate_is_pkcs8_key_then_chain_leaf_to_root(self):
        files, versions = self.mount(spc([secret("web-chain-pfx")]))
        self.assert_key_then_chain(files["web-chain-pfx"].contents, "web-chain-pfx")
        self.assertEqual(versions, {"secret/web-chain-pfx": certificate("web-chain-pfx")["version"]})

    def test_a_pem_backed_certificate_is_pkcs8_key_then_chain_leaf_to_root(self):
        files, _ = self.mount(spc([secret("web-chain-pem")]))
        self.assert_key_then_chain(files["web-chain-pem"].contents, "web-chain-pem")
        key = serialization.load_pem_private_key(pem_blocks(files["web-chain-pem"].contents)[0][1], None)
        self.assertIsInstance(key, ec.EllipticCurvePrivateKey)

    def test_a_created_self_signed_certificate_is_key_then_leaf(self):
        files, _ = self.mount(spc([secret("web-selfsigned")]))
        self.assert_key_then_chain(files["web-selfsigned"].contents, "web-selfsigned")
        key = serialization.load_pem_private_key(pem_blocks(files["web-selfsigned"].contents)[0][1], None)
        self.assertIsInstance(key, rsa.RSAPrivateKey)
        self.assertEqual(key.key_size, 2048)

    def test_objectFormat_pfx_passes_the_pfx_through_as_base64(self):
        files, _ = self.mount(spc([secret("web-chain-pfx", objectFormat="pfx")]))
        text = files["web-chain-pfx"].contents
        der = base64.b64decode(text, validate=True)
        key, leaf, extra = open_pfx(der, None)
        self.assertEqual(leaf.public_bytes(serialization.Encoding.DER), leaf_der("web-chain-pfx"))
        self.assertEqual(spki(key.public_key()), spki(leaf.public_key()))
        self.assertEqual(
            {c.public_bytes(serialization.Encoding.DER) for c in extra}, set(chain_der("web-chain-pfx")[1:])
        )

    def test_objectFormat_pfx_with_objectEncoding_base64_is_the_binary_pfx(self):
        # objectFormat is case-insensitive.
        files, _ = self.mount(spc([secret("web-selfsigned", objectFormat="PFX", objectEncoding="base64")]))
        key, leaf, _ = open_pfx(files["web-selfsigned"].contents, None)
        self.assertEqual(leaf.public_bytes(serialization.Encoding.DER), leaf_der("web-selfsigned"))
        self.assertEqual(spki(key.public_key()), spki(leaf.public_key()))

    def test_pfxPasswordSecretName_protects_the_pfx_with_that_secrets_value(self):
        password = latest("pfx-password")["value"].encode()
        files, _ = self.mount(
            spc(
                [
                    secret(
                        "web-chain-pfx",
                        objectFormat="pfx",
                        objectEncoding="base64",
                        objectAlias="web.pfx",
                        pfxPasswordSecretName="pfx-password",
                    )
                ]
            )
        )
        pfx = files["web.pfx"].contents
        key, leaf, _ = pkcs12.load_key_and_certificates(pfx, password)
        self.assertEqual(leaf.public_bytes(serialization.Encoding.DER), leaf_der("web-chain-pfx"))
        self.assertEqual(spki(key.public_key()), spki(leaf.public_key()))
        for wrong in (None, b""):
            with self.subTest(password=wrong), self.assertRaises(ValueError):
                pkcs12.load_key_and_certificates(pfx, wrong)

    def test_objectFormat_tls_writes_tls_crt_tls_key_and_ca_crt(self):
        files, versions = self.mount(spc([secret("web-chain-pfx", objectFormat="tls", objectAlias="web-tls")]))
        self.assertEqual(set(files), {"web-tls/tls.crt", "web-tls/tls.key", "web-tls/ca.crt"})
        leaf, intermediate, root = chain_der("web-chain-pfx")
        self.assertEqual(certificates_der(files["web-tls/tls.crt"].contents), [leaf, intermediate])
        self.assertEqual(certificates_der(files["web-tls/ca.crt"].contents), [intermediate, root])
        self.assertEqual([label for label, _ in pem_blocks(files["web-tls/tls.key"].contents)], ["PRIVATE KEY"])
        key = serialization.load_pem_private_key(files["web-tls/tls.key"].contents, None)
        self.assertEqual(spki(key.public_key()), spki(x509.load_der_x509_certificate(leaf).public_key()))
        self.assertEqual(versions, {"secret/web-chain-pfx": certificate("web-chain-pfx")["version"]})


class Keys(ProviderTestCase):
    def public_key(self, name: str):
        files, versions = self.mount(spc([{"objectName": name, "objectType": "key"}]))
        data = files[name].contents
        self.assertEqual([label for label, _ in pem_blocks(data)], ["PUBLIC KEY"], "PKIX PUBLIC KEY PEM only")
        self.assertEqual(versions, {f"key/{name}": S.seed["keys"][name]["version"]})
        return serialization.load_pem_public_key(data)

    def test_an_rsa_key_is_its_public_half_equal_to_the_vaults_jwk(self):
        jwk = S.seed["keys"]["rsa-key"]
        key = self.public_key("rsa-key")
        self.assertIsInstance(key, rsa.RSAPublicKey)
        numbers = key.public_numbers()
        self.assertEqual(numbers.n, b64url_int(jwk["n"]))
        self.assertEqual(numbers.e, b64url_int(jwk["e"]))
        self.assertEqual(key.key_size, 2048)

    def test_ec_keys_on_p256_p384_p521_are_their_public_halves_equal_to_the_vaults_jwk(self):
        for name in ("ec-p256", "ec-p384", "ec-p521"):
            with self.subTest(key=name):
                jwk = S.seed["keys"][name]
                key = self.public_key(name)
                self.assertIsInstance(key, ec.EllipticCurvePublicKey)
                self.assertEqual(key.curve.name, EC_CURVES[jwk["crv"]])
                numbers = key.public_numbers()
                self.assertEqual((numbers.x, numbers.y), (b64url_int(jwk["x"]), b64url_int(jwk["y"])))


class Certificates(ProviderTestCase):
    def test_cert_is_the_leaf_alone_as_pem(self):
        for name in ("web-chain-pfx", "web-chain-pem", "web-selfsigned"):
            with self.subTest(certificate=name):
                files, versions = self.mount(spc([{"objectName": name, "objectType": "cert"}]))
                data = files[name].contents
                self.assertEqual([label for label, _ in pem_blocks(data)], ["CERTIFICATE"], "no chain, no key")
                self.assertEqual(certificates_der(data), [leaf_der(name)])
                self.assertEqual(versions, {f"cert/{name}": certificate(name)["version"]})


# =============================================================================================
# kube-kms's additions: JSON fields, several vaults


class KubeKmsAdditions(ProviderTestCase):
    def test_jmesPath_writes_each_field_to_its_own_file_besides_the_secret(self):
        fields = S.seed["json_secret"]["fields"]
        files, versions = self.mount(
            spc(
                [
                    secret(
                        "app-config-json",
                        objectAlias="config.json",
                        jmesPath=[
                            {"path": "username", "objectAlias": "db/username"},
                            {"path": "password", "objectAlias": "db/password"},
                            {"path": "database.host", "objectAlias": "db/host"},
                        ],
                    )
                ]
            )
        )
        self.assertEqual(set(files), {"config.json", "db/username", "db/password", "db/host"})
        self.assertEqual(json.loads(files["config.json"].contents), fields)
        self.assertEqual(files["db/username"].contents, fields["username"].encode())
        self.assertEqual(files["db/password"].contents, fields["password"].encode())
        self.assertEqual(files["db/host"].contents, fields["database"]["host"].encode())
        self.assertEqual(versions, {"secret/app-config-json": latest("app-config-json")["version"]})

    def test_jmesPath_that_selects_nothing_fails_naming_the_object_and_the_path(self):
        self.refused(
            spc([secret("app-config-json", jmesPath=[{"path": "no_such_field", "objectAlias": "x"}])]),
            (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT),
            "app-config-json",
            "no_such_field",
        )

    def test_jmesPath_that_does_not_compile_is_refused_before_any_vault_call(self):
        self.refused(
            spc([secret("app-config-json", jmesPath=[{"path": "[[", "objectAlias": "x"}])]),
            BAD_REQUEST,
            "app-config-json",
            "jmesPath",
        )

    def test_objects_may_name_their_own_vault(self):
        files, versions = self.mount(
            spc(
                [
                    secret("app-password"),
                    secret("app-password", keyvaultName=S.other_vault, objectAlias="other/app-password"),
                    secret("app-blob-hex", keyvaultName=S.other_vault, objectAlias="other/blob", objectEncoding="hex"),
                ]
            )
        )
        self.assertEqual(set(files), {"app-password", "other/app-password", "other/blob"})
        self.assertEqual(files["other/app-password"].contents, latest("app-password")["value"].encode())
        self.assertEqual(files["other/blob"].contents, binascii.unhexlify(latest("app-blob-hex")["value"]))
        # An object from another vault has its vault in its id, so the same name from two vaults
        # keeps two entries in the pod's SecretProviderClassPodStatus (the driver keys them by id).
        self.assertEqual(
            versions,
            {
                "secret/app-password": latest("app-password")["version"],
                f"{S.other_vault}/secret/app-password": latest("app-password")["version"],
                f"{S.other_vault}/secret/app-blob-hex": latest("app-blob-hex")["version"],
            },
        )

    def test_an_objects_vault_name_is_checked_like_the_classs(self):
        self.refused(
            spc([secret("app-password", keyvaultName="evil.example.com/x")]),
            BAD_REQUEST,
            "keyvaultName",
            "app-password",
        )


# =============================================================================================
# Identity modes


def imds_tokens() -> int:
    """Tokens the emulator's IMDS issued so far (a credential is cached per identity, so
    another test may have fetched one's token already: only the total says IMDS was used)."""
    return admin("GET", "counters").get("imds_token", {}).get("succeeded", 0)


class Identities(ProviderTestCase):
    def wi_tokens(self, pod: Pod, **kwargs) -> dict[str, tuple[str, float]]:
        return {driver.TOKEN_AUDIENCE: service_account_token(S.wi_issuer, pod, **kwargs)}

    def wi_pod(self, **kwargs) -> Pod:
        return Pod(namespace=S.wi_namespace, service_account=S.wi_service_account, **kwargs)

    def test_service_principal_from_the_nodePublishSecretRef(self):
        files, _ = self.mount(spc([secret("identity-check")]), node_publish_secret=sp_secret())
        self.assertEqual(files["identity-check"].contents, latest("identity-check")["value"].encode())

    def test_service_principal_keys_are_case_insensitive(self):
        files, _ = self.mount(
            spc([secret("identity-check")]),
            node_publish_secret={"ClientID": S.sp_client_id, "ClientSecret": S.sp_client_secret},
        )
        self.assertIn("identity-check", files)

    def test_workload_identity_from_the_pods_service_account_token(self):
        pod = self.wi_pod()
        files, _ = self.mount(
            spc([secret("identity-check")], clientID=S.wi_client_id),
            pod=pod,
            tokens=self.wi_tokens(pod),
            node_publish_secret=None,
        )
        self.assertEqual(files["identity-check"].contents, latest("identity-check")["value"].encode())

    def test_workload_identity_refuses_a_token_of_another_service_account_even_after_a_good_mount(self):
        pod = self.wi_pod()
        params = spc([secret("identity-check")], clientID=S.wi_client_id)
        self.mount(params, pod=pod, tokens=self.wi_tokens(pod), node_publish_secret=None)
        intruder = Pod(namespace=S.wi_namespace, service_account="not-federated")
        self.refused(params, NOT_AUTHENTICATED, pod=intruder, tokens=self.wi_tokens(intruder), node_publish_secret=None)

    def test_workload_identity_refuses_an_expired_token(self):
        pod = self.wi_pod()
        self.refused(
            spc([secret("identity-check")], clientID=S.wi_client_id),
            NOT_AUTHENTICATED + NO_CREDENTIAL,
            pod=pod,
            tokens=self.wi_tokens(pod, lifetime_s=-600),
            node_publish_secret=None,
        )

    def test_vm_managed_identity_user_assigned(self):
        files, _ = self.mount(
            spc([secret("identity-check")], useVMManagedIdentity="true", userAssignedIdentityID=S.mi_client_id),
            node_publish_secret=None,
        )
        self.assertEqual(files["identity-check"].contents, latest("identity-check")["value"].encode())
        self.assertGreater(imds_tokens(), 0, "the token came from IMDS")

    def test_vm_managed_identity_system_assigned(self):
        params = spc(
            [{"objectName": "web-selfsigned", "objectType": "cert"}, {"objectName": "rsa-key", "objectType": "key"}],
            useVMManagedIdentity="true",
        )
        files, _ = self.mount(params, node_publish_secret=None)
        self.assertEqual(set(files), {"web-selfsigned", "rsa-key"})
        self.assertGreater(imds_tokens(), 0, "the token came from IMDS")
        # The system-assigned identity may not read secrets: it, not the user-assigned one, was used.
        self.refused(
            spc([secret("identity-check")], useVMManagedIdentity="true"),
            DENIED,
            "identity-check",
            node_publish_secret=None,
        )

    def test_an_unknown_user_assigned_identity_fails(self):
        self.refused(
            spc([secret("identity-check")], useVMManagedIdentity="true", userAssignedIdentityID=str(uuid.uuid4())),
            NOT_AUTHENTICATED + (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION),
            node_publish_secret=None,
        )

    def test_the_deprecated_tenantId_spelling_is_accepted(self):
        files, _ = self.mount(spc([secret("identity-check")], tenantID=None, tenantId=S.tenant))
        self.assertIn("identity-check", files)

    def test_the_cache_is_per_identity(self):
        params = spc([secret("identity-check")])
        self.mount(params)  # read and cached for the service principal
        self.refused(
            params,
            DENIED,
            "identity-check",
            node_publish_secret=sp_secret(S.noperm_client_id, S.noperm_client_secret),
        )
        wrong = f"wrong-{uuid.uuid4().hex}"
        message = self.refused(params, NOT_AUTHENTICATED, node_publish_secret=sp_secret(client_secret=wrong))
        self.assertNotIn(wrong, message)


# =============================================================================================
# Errors: a gRPC error naming the object and the field; a failed Mount returns no files


class Errors(ProviderTestCase):
    def test_missing_keyvaultName(self):
        self.refused(spc([secret("app-password")], keyvaultName=None), BAD_REQUEST, "keyvaultName")

    def test_a_keyvaultName_that_is_not_a_vault_name(self):
        for name in ("kv", "a" * 25, "kv.evil.example", "kv/../x", "kv_main"):
            with self.subTest(keyvaultName=name):
                self.refused(spc([secret("app-password")], keyvaultName=name), BAD_REQUEST, "keyvaultName")

    def test_missing_tenantID(self):
        self.refused(spc([secret("app-password")], tenantID=None), BAD_REQUEST, "tenant")

    def test_missing_objects(self):
        self.refused(spc(None), BAD_REQUEST, "objects")

    def test_objects_that_are_not_an_array_of_yaml_objects(self):
        for objects in ("- objectName: app-password\n  objectType: secret\n", "array: [", "array:\n  - 42\n"):
            with self.subTest(objects=objects):
                params = spc([])
                params["objects"] = objects
                self.refused(params, BAD_REQUEST, "objects")

    def test_an_empty_objects_array(self):
        # Azure's provider answers no versions, which the driver rejects; refuse it clearly.
        self.refused(spc([]), BAD_REQUEST, "objects")

    def test_an_object_without_objectName(self):
        self.refused(spc([{"objectType": "secret"}]), BAD_REQUEST, "objectName")

    def test_a_bad_objectType(self):
        for kind in ("secrets", "Secret", "certificate", ""):
            with self.subTest(objectType=kind):
                self.refused(spc([secret("app-password", objectType=kind)]), BAD_REQUEST, "objectType", "app-password")

    def test_a_bad_objectEncoding(self):
        self.refused(
            spc([secret("app-password", objectEncoding="base32")]), BAD_REQUEST, "objectEncoding", "app-password"
        )

    def test_a_bad_objectFormat(self):
        self.refused(spc([secret("web-chain-pfx", objectFormat="der")]), BAD_REQUEST, "objectFormat", "web-chain-pfx")

    def test_objectFormat_pfx_on_a_key(self):
        self.refused(
            spc([{"objectName": "rsa-key", "objectType": "key", "objectFormat": "pfx"}]),
            BAD_REQUEST,
            "objectFormat",
            "rsa-key",
        )

    def test_a_bad_filePermission(self):
        for mode in ("0999", "rw-r--r--", "01777", "-1"):
            with self.subTest(filePermission=mode):
                self.refused(
                    spc([secret("app-password", filePermission=mode)]), BAD_REQUEST, "filePermission", "app-password"
                )

    def test_a_bad_objectVersionHistory(self):
        self.refused(
            spc([secret("rotating", objectVersionHistory="many")]), BAD_REQUEST, "objectVersionHistory", "rotating"
        )

    def test_an_objectAlias_that_leaves_the_volume(self):
        for alias in ("../escape", "a/../../b", "/etc/passwd", "..data", "a//b", "a/"):
            with self.subTest(objectAlias=alias):
                self.refused(spc([secret("app-password", objectAlias=alias)]), BAD_REQUEST, "objectAlias")

    def test_two_objects_writing_the_same_file(self):
        self.refused(
            spc([secret("app-password", objectAlias="shared"), secret("app-blob-hex", objectAlias="shared")]),
            BAD_REQUEST,
            "shared",
        )
        self.refused(spc([secret("app-password"), secret("app-password")]), BAD_REQUEST, "app-password")
        # A file inside another object's file: the driver could write neither.
        self.refused(
            spc([secret("app-password", objectAlias="conf"), secret("app-blob-hex", objectAlias="conf/blob")]),
            BAD_REQUEST,
            "conf",
        )

    def test_a_missing_secret_fails_the_whole_mount_naming_it(self):
        message = self.refused(
            spc([secret("app-password"), secret("no-such-secret"), {"objectName": "rsa-key", "objectType": "key"}]),
            NOT_FOUND,
            "no-such-secret",
            "secret",
        )
        self.assertNotIn("A secret with (name/id)", message, "the vault's own text is not passed on")

    def test_a_missing_key_and_certificate_fail_naming_them(self):
        self.refused(spc([{"objectName": "no-such-key", "objectType": "key"}]), NOT_FOUND, "no-such-key")
        self.refused(spc([{"objectName": "no-such-cert", "objectType": "cert"}]), NOT_FOUND, "no-such-cert")

    def test_a_missing_objectVersion_fails_naming_the_object(self):
        self.refused(spc([secret("rotating", objectVersion="0" * 32)]), NOT_FOUND, "rotating")

    def test_a_pinned_disabled_version_fails_naming_the_object(self):
        disabled = next(v for v in secret_versions("rotating") if not v["enabled"])
        self.refused(
            spc([secret("rotating", objectVersion=disabled["version"])]),
            DENIED + (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND),
            "rotating",
        )

    def test_an_identity_without_secrets_get(self):
        self.refused(
            spc([secret("app-password")]),
            DENIED,
            "app-password",
            node_publish_secret=sp_secret(S.noperm_client_id, S.noperm_client_secret),
        )

    def test_a_wrong_client_secret(self):
        wrong = f"wrong-{uuid.uuid4().hex}"
        message = self.refused(spc([secret("app-password")]), NOT_AUTHENTICATED, node_publish_secret=sp_secret(client_secret=wrong))
        self.assertNotIn(wrong, message)

    def test_a_service_principal_without_nodePublishSecretRef(self):
        self.refused(spc([secret("app-password")]), NO_CREDENTIAL, "clientid", node_publish_secret=None)
        self.refused(
            spc([secret("app-password")]), NO_CREDENTIAL, "clientsecret", node_publish_secret={"clientid": S.sp_client_id}
        )

    def test_workload_identity_without_tokens(self):
        pod = Pod(namespace=S.wi_namespace, service_account=S.wi_service_account)
        self.refused(
            spc([secret("app-password")], clientID=S.wi_client_id), NO_CREDENTIAL, "token", pod=pod, node_publish_secret=None
        )
        # A token for another audience only.
        other = {"api://AKSIdentityBinding": service_account_token(S.wi_issuer, pod, audience="api://AKSIdentityBinding")}
        self.refused(
            spc([secret("app-password")], clientID=S.wi_client_id),
            NO_CREDENTIAL,
            "api://AzureADTokenExchange",
            pod=pod,
            tokens=other,
            node_publish_secret=None,
        )

    def test_identity_modes_kube_kms_does_not_implement(self):
        for parameters in ({"usePodIdentity": "true"}, {"useAzureTokenProxy": "true", "clientID": S.wi_client_id}):
            with self.subTest(**parameters):
                self.refused(
                    spc([secret("app-password")], **parameters),
                    (grpc.StatusCode.UNIMPLEMENTED,),
                    next(iter(parameters)),
                    node_publish_secret=None,
                )
        self.refused(spc([secret("app-password")], tenantID="adfs"), (grpc.StatusCode.UNIMPLEMENTED,), "adfs")

    def test_two_identity_modes_at_once(self):
        self.refused(
            spc([secret("app-password")], useVMManagedIdentity="true", usePodIdentity="true"), BAD_REQUEST, "identity"
        )

    def test_a_bad_boolean(self):
        self.refused(spc([secret("app-password")], useVMManagedIdentity="yes please"), BAD_REQUEST, "useVMManagedIdentity")

    def test_a_cloud_file_outside_the_cloud_env_dir(self):
        outside = os.path.join(os.path.dirname(os.path.dirname(S.cloud_env_file)), "seed.json")
        self.assertTrue(os.path.exists(outside))
        for path in (outside, "/etc/passwd", os.path.join(os.path.dirname(S.cloud_env_file), "..", "seed.json")):
            with self.subTest(cloudEnvFileName=path):
                message = self.refused(
                    spc([secret("app-password")], cloudEnvFileName=path),
                    BAD_REQUEST + (grpc.StatusCode.FAILED_PRECONDITION,),
                    "cloudEnvFileName",
                )
                self.assertNotIn("root:", message, "the file's content in an error")

    def test_an_unknown_cloudName(self):
        self.refused(
            spc([secret("app-password")], cloudName="AzureMoonCloud", cloudEnvFileName=None),
            BAD_REQUEST + (grpc.StatusCode.FAILED_PRECONDITION,),
            "cloudName",
        )

    def test_an_answer_over_the_drivers_4_MiB_limit_is_refused_naming_the_limit(self):
        # 200 files of a 24 KB secret: one vault read, 4.8 MB of files.
        objects = [secret("big-blob", objectAlias=f"big/{i:03}") for i in range(200)]
        message = self.refused(
            spc(objects),
            (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.OUT_OF_RANGE,
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        )
        self.assertNotIn("Received message larger than max", message, "the client's limit, not the provider's")
        # The provider's own answer, before encoding (tonic's encoder would say bytes, not MiB).
        self.assertIn("4 MiB", message, "the message names the driver's limit")

    def test_attributes_that_are_not_json(self):
        request = self.path_driver.mount_request(spc([secret("app-password")]), node_publish_secret=sp_secret())
        request.attributes = "{not json"
        with self.assertRaises(grpc.RpcError) as raised:
            self.path_driver.stub.Mount(request, timeout=30)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, raised.exception.details())
        self.assertIn("attributes", raised.exception.details())


# =============================================================================================
# Vault traffic: coalescing and throttling


def total(counts: dict) -> int:
    return sum(counts.values())


def report(line: str) -> None:
    """A measurement for the log (the harness prints the suite's output)."""
    print(f"\n    {line}", file=sys.stderr, end=" ")


class VaultTraffic(ProviderTestCase):
    def test_a_slow_vault_fails_the_mount_in_time_for_the_driver_naming_the_object(self):
        admin("POST", "faults", {"operation": "get_secret", "name": "slow-secret", "fault": {"kind": "latency", "millis": 20000}})
        deadline = 4.0
        started = time.monotonic()
        try:
            with self.assertRaises(grpc.RpcError) as raised:
                self.path_driver.mount(spc([secret("slow-secret")]), node_publish_secret=sp_secret(), timeout=deadline)
        finally:
            admin("DELETE", "faults")
        elapsed = time.monotonic() - started
        error = raised.exception
        self.assertEqual(error.code(), grpc.StatusCode.DEADLINE_EXCEEDED, error.details())
        # The provider's own answer (naming what it waited for), not the client's deadline.
        self.assertIn("slow-secret", error.details() or "")
        self.assertLess(elapsed, deadline + 3, "answered by the deadline, not after the vault")

    def test_fifty_concurrent_mounts_of_one_class_read_each_object_a_handful_of_times(self):
        admin("DELETE", "counters")
        objects = [
            secret("coalesce-a"),
            secret("coalesce-b", objectEncoding="utf-8"),
            secret("coalesce-cert", objectAlias="coalesce-cert.pem"),
            {"objectName": "coalesce-cert", "objectType": "cert"},
        ]
        params = spc(objects)
        futures = [
            self.path_driver.mount_future(params, pod=Pod(name=f"web-{i}"), node_publish_secret=sp_secret())
            for i in range(50)
        ]
        responses = []
        for future in futures:
            try:
                responses.append(future.result())
            except grpc.RpcError as error:
                self.fail(f"a concurrent Mount failed: {error.code()}: {error.details()}")
        contents = {tuple(sorted((f.path, f.contents) for f in r.files)) for r in responses}
        self.assertEqual(len(contents), 1, "every Mount got the same files")
        self.assertEqual(
            {f.path for f in responses[0].files}, {"coalesce-a", "coalesce-b", "coalesce-cert.pem", "coalesce-cert"}
        )
        counts = reads_of("coalesce-a", "coalesce-b", "coalesce-cert")
        self.assertEqual(
            {(kind, name) for kind, name, _ in counts},
            {("secret", "coalesce-a"), ("secret", "coalesce-b"), ("secret", "coalesce-cert"), ("certificate", "coalesce-cert")},
            counts,
        )
        report(f"50 concurrent Mounts of 4 objects: {total(counts)} GETs {sorted(counts.values())}")
        # One fetch per object when coalesced; a few more are tolerated (e.g. a retried GET),
        # against 200 uncoalesced.
        for key, requests in counts.items():
            self.assertLessEqual(requests, 3, f"{key} was read {requests} times by 50 Mounts: {counts}")
        self.assertLessEqual(total(counts), 8, counts)

    def test_a_429_storm_ends_in_success_after_retry_after_or_a_clear_throttled_error(self):
        admin("DELETE", "counters")
        # One secret GET per 2-second window: the three objects need three windows, and every
        # throttled answer says how long to wait.
        admin("PUT", "throttle", {"secret_get": 1, "window_seconds": 2})
        names = ("storm-a", "storm-b", "storm-c")
        params = spc([secret(name) for name in names])
        started = time.monotonic()
        try:
            futures = [
                self.path_driver.mount_future(params, pod=Pod(name=f"storm-{i}"), node_publish_secret=sp_secret(), timeout=90)
                for i in range(20)
            ]
            outcomes = []
            for future in futures:
                try:
                    outcomes.append(future.result())
                except grpc.RpcError as error:
                    outcomes.append(error)
        finally:
            admin("DELETE", "throttle")
        elapsed = time.monotonic() - started
        for outcome in outcomes:
            if isinstance(outcome, grpc.RpcError):
                message = outcome.details() or ""
                self.assertIn(outcome.code(), THROTTLED, message)
                self.assertRegex(message.lower(), r"throttl|429|too many requests|retry", message)
                self.assertTrue(any(name in message for name in names), f"names no object: {message}")
                self.assert_no_credential_in(message)
            else:
                files = files_by_path(outcome)
                for name in names:
                    self.assertEqual(files[name].contents, latest(name)["value"].encode())
        throttled = admin("GET", "counters").get("get_secret", {}).get("failed", 0)
        self.assertGreater(throttled, 0, "the storm throttled no GET: the test proved nothing")
        counts = reads_of(*names)
        # Each object's fetch waits Retry-After (at least 1 s) between attempts, and concurrent
        # Mounts share it: GETs grow with time, not with Mounts × attempts.
        successes = sum(1 for outcome in outcomes if not isinstance(outcome, grpc.RpcError))
        report(f"429 storm: {successes}/20 Mounts succeeded in {elapsed:.1f}s, {throttled} GETs throttled, {total(counts)} GETs")
        bound = 2 * len(names) * (int(elapsed) + 2)
        self.assertLessEqual(total(counts), bound, f"{total(counts)} GETs in {elapsed:.1f}s: {counts}")

    def test_a_vault_that_keeps_throttling_fails_with_a_throttled_error_within_the_deadline(self):
        admin("DELETE", "counters")
        admin("POST", "faults", {"operation": "get_secret", "name": "storm-hard", "fault": {"kind": "throttle", "retry_after": 1}})
        params = spc([secret("app-password"), secret("storm-hard")])
        deadline = 15.0
        started = time.monotonic()
        try:
            futures = [
                self.path_driver.mount_future(params, pod=Pod(name=f"hard-{i}"), node_publish_secret=sp_secret(), timeout=deadline)
                for i in range(5)
            ]
            errors = []
            for future in futures:
                try:
                    response = future.result()
                except grpc.RpcError as error:
                    errors.append(error)
                else:
                    self.fail(f"a Mount succeeded though storm-hard is always throttled: {[f.path for f in response.files]}")
        finally:
            admin("DELETE", "faults")
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, deadline + 5, "the Mounts ended by their deadline")
        for error in errors:
            message = error.details() or ""
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                continue  # the driver's own deadline ended the wait for Retry-After
            self.assertIn(error.code(), THROTTLED, message)
            self.assertIn("storm-hard", message)
            self.assertRegex(message.lower(), r"throttl|429|too many requests|retry", message)
        self.assertEqual(len(errors), 5)
        counts = reads_of("storm-hard")
        self.assertGreater(total(counts), 0, counts)
        report(f"throttled vault: 5 Mounts failed in {elapsed:.1f}s ({sorted({e.code().name for e in errors})}), {total(counts)} GETs")
        # Retry-After is 1 s: about one GET a second for all five Mounts together, not a loop.
        bound = 2 * (int(elapsed) + 2)
        self.assertLessEqual(total(counts), bound, f"{total(counts)} GETs in {elapsed:.1f}s: {counts}")
        # Once the vault recovers, the next Mount succeeds: no failure is cached.
        files, _ = self.mount(params)
        self.assertEqual(files["storm-hard"].contents, latest("storm-hard")["value"].encode())


if __name__ == "__main__":
    unittest.main()
