"""What the provider's Python suites share: the settings the harness passes (CSI_*), the
emulator's admin API, what was seeded, parsers for mounted files (PEM blocks, PFX, public keys),
SecretProviderClass builders, and a TestCase whose Mount helpers check every response against
the driver's rules (crates/csi-provider/tests/driver_python.rs runs the suites).
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import unittest
import urllib.error
import urllib.request

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

import driver
from driver import Driver, files_by_path, objects_parameter, versions_by_id

MODE_0644 = 0o644
# semver 2.0.0 (semver.org's suggested regular expression).
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-((0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$"
)
PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----\r?\n?", re.DOTALL)
EC_CURVES = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}

# Codes a refused Mount may carry, by kind of failure. Never UNKNOWN or INTERNAL: the code tells a
# typo from an unreachable vault (Azure's provider answers Unknown for everything).
BAD_REQUEST = (grpc.StatusCode.INVALID_ARGUMENT,)
NOT_FOUND = (grpc.StatusCode.NOT_FOUND,)
DENIED = (grpc.StatusCode.PERMISSION_DENIED,)
NOT_AUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
NO_CREDENTIAL = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
)
THROTTLED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


class Settings:
    """What the harness passes in CSI_* variables (see test_mount.py's docstring), loaded by
    `load` in each suite's setUpModule; one shared instance, `S`."""

    socket: str
    health_address: str
    provider_log: str
    emulator_url: str
    ca: str
    tenant: str
    vault: str
    other_vault: str
    cloud_env_file: str
    seed: dict
    sp_client_id: str
    sp_client_secret: str
    noperm_client_id: str
    noperm_client_secret: str
    wi_client_id: str
    wi_issuer: str
    wi_namespace: str
    wi_service_account: str
    mi_client_id: str

    def load(self) -> None:
        with open(_required("CSI_SEED"), encoding="utf-8") as seed:
            self.seed = json.load(seed)
        self.socket = _required("CSI_SOCKET")
        self.health_address = _required("CSI_HEALTH_ADDRESS")
        self.provider_log = _required("CSI_PROVIDER_LOG")
        self.emulator_url = _required("CSI_EMULATOR_URL").rstrip("/")
        self.ca = _required("CSI_CA")
        self.tenant = _required("CSI_TENANT")
        self.vault = _required("CSI_VAULT")
        self.other_vault = _required("CSI_OTHER_VAULT")
        self.cloud_env_file = _required("CSI_CLOUD_ENV_FILE")
        self.sp_client_id = _required("CSI_SP_CLIENT_ID")
        self.sp_client_secret = _required("CSI_SP_CLIENT_SECRET")
        self.noperm_client_id = _required("CSI_NOPERM_CLIENT_ID")
        self.noperm_client_secret = _required("CSI_NOPERM_CLIENT_SECRET")
        self.wi_client_id = _required("CSI_WI_CLIENT_ID")
        self.wi_issuer = _required("CSI_WI_ISSUER")
        self.wi_namespace = _required("CSI_WI_NAMESPACE")
        self.wi_service_account = _required("CSI_WI_SERVICE_ACCOUNT")
        self.mi_client_id = _required("CSI_MI_CLIENT_ID")
        driver.stubs()


S = Settings()


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: run the suites through "
            "`cargo test -p csi-provider --test driver_python` (see test_mount.py's docstring)"
        )
    return value


# ----- the emulator's admin API -----


def admin(method: str, path: str, body=None):
    """Calls the emulator's admin API (`/_emulator/...`); fails the test on an error answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{S.emulator_url}/_emulator/{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    context = ssl.create_default_context(cafile=S.ca)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            text = response.read()
    except urllib.error.HTTPError as error:
        raise AssertionError(f"admin {method} {path}: {error.code} {error.read()!r}") from error
    return json.loads(text) if text else None


def reads_of(*names: str) -> dict[tuple[str, str, str], int]:
    """The emulator's authenticated GET counts of these secrets and certificates, by (kind,
    name, requested version)."""
    wanted = {name.lower() for name in names}
    return {
        (entry["kind"], entry["name"], entry["version"]): entry["requests"]
        for entry in admin("GET", "counters/reads")
        if entry["name"] in wanted
    }


# ----- what was seeded -----


def secret_versions(name: str) -> list[dict]:
    """Every version of a seeded secret, oldest first: {version, value, enabled, created}."""
    return S.seed["secrets"][name]["versions"]


def latest(name: str) -> dict:
    return secret_versions(name)[-1]


def certificate(name: str) -> dict:
    """A seeded certificate: version, cer (base64 DER of the leaf), content_type, chain (PEM
    leaf → root; empty for a self-signed one)."""
    return S.seed["certificates"][name]


def leaf_der(name: str) -> bytes:
    return base64.b64decode(certificate(name)["cer"])


def chain_der(name: str) -> list[bytes]:
    """The certificate's chain, leaf → root, as DER."""
    pems = certificate(name)["chain"]
    if not pems:
        return [leaf_der(name)]
    return [x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER) for pem in pems]


def b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


# ----- parsing what was mounted -----


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """The PEM blocks of `data` in order, as (label, whole block); fails on anything else but
    whitespace between them."""
    blocks = []
    position = 0
    for match in PEM_BLOCK.finditer(data):
        if data[position : match.start()].strip():
            raise AssertionError(f"text outside PEM blocks: {data[position:match.start()]!r}")
        blocks.append((match.group(1).decode(), match.group(0)))
        position = match.end()
    if data[position:].strip():
        raise AssertionError(f"text after the PEM blocks: {data[position:]!r}")
    return blocks


def certificates_der(pem: bytes) -> list[bytes]:
    return [cert.public_bytes(serialization.Encoding.DER) for cert in x509.load_pem_x509_certificates(pem)]


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def open_pfx(data: bytes, password: bytes | None):
    """(key, certificate, additional certificates) of a PFX. An empty password is tried both
    as no password and as the empty string (Go and Key Vault write it either way)."""
    if password:
        return pkcs12.load_key_and_certificates(data, password)
    try:
        return pkcs12.load_key_and_certificates(data, None)
    except ValueError:
        return pkcs12.load_key_and_certificates(data, b"")


# ----- SecretProviderClasses -----


def sp_secret(client_id: str | None = None, client_secret: str | None = None) -> dict[str, str]:
    """The nodePublishSecretRef Secret of a service principal, as the driver decodes it."""
    return {
        "clientid": client_id or S.sp_client_id,
        "clientsecret": client_secret or S.sp_client_secret,
    }


def spc(objects: list[dict] | None, **parameters: str | None) -> dict[str, str]:
    """An Azure SecretProviderClass's `spec.parameters` for the emulated cloud, as users write
    them; a parameter given as None is left out."""
    params: dict[str, str | None] = {
        "usePodIdentity": "false",
        "useVMManagedIdentity": "false",
        "keyvaultName": S.vault,
        "tenantID": S.tenant,
        "cloudName": "AzureStackCloud",
        "cloudEnvFileName": S.cloud_env_file,
        "objects": None if objects is None else objects_parameter(objects),
    }
    params.update(parameters)
    return {key: value for key, value in params.items() if value is not None}


def secret(name: str, **fields: str) -> dict:
    return {"objectName": name, "objectType": "secret", **fields}


class ProviderTestCase(unittest.TestCase):
    """One connection per test class for each `:authority` a driver release sends; the
    contract tests go through the socket-path one (the Azure chart installs driver v1.5.6)."""

    path_driver: Driver
    localhost_driver: Driver

    @classmethod
    def setUpClass(cls) -> None:
        cls.path_driver = Driver(S.socket, authority=S.socket)
        cls.localhost_driver = Driver(S.socket, authority="localhost")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.path_driver.close()
        cls.localhost_driver.close()

    # -- calling --

    def mount(self, parameters: dict[str, str], through: Driver | None = None, **kwargs):
        """A Mount that must succeed; checks the response against the driver's rules and
        returns (files by path, versions by id)."""
        kwargs.setdefault("node_publish_secret", sp_secret())
        try:
            response = (through or self.path_driver).mount(parameters, **kwargs)
        except grpc.RpcError as error:
            self.fail(f"Mount refused: {error.code()}: {error.details()}")
        self.assert_driver_accepts(response)
        return files_by_path(response), versions_by_id(response)

    def assert_driver_accepts(self, response) -> None:
        """What the driver requires of a successful MountResponse (facts §1.3)."""
        self.assertEqual(response.error.code, "", "error.code set: the driver fails the mount")
        self.assertTrue(response.object_version, "no object_version: the driver fails the mount")
        self.assertTrue(response.files, "no files")
        for file in response.files:
            path = file.path
            self.assertTrue(path, "an empty path")
            self.assertFalse(path.startswith("/"), f"absolute path {path!r}")
            self.assertNotIn("..", path.split("/"), f"path {path!r} has a '..' element")
            self.assertEqual(os.path.normpath(path), path, f"path {path!r} is not clean")
            self.assertLessEqual(len(path), 4096)
            self.assertTrue(all(len(part) <= 255 for part in path.split("/")), path)
            self.assertTrue(0 <= file.mode <= 0o777, f"mode {file.mode:o} of {path!r}")
        for version in response.object_version:
            self.assertTrue(version.id and version.version, f"empty object_version {version}")

    def refused(
        self,
        parameters: dict[str, str],
        codes: tuple,
        *needles: str,
        through: Driver | None = None,
        **kwargs,
    ) -> str:
        """A Mount that must fail as a whole with one of `codes`, its message naming every
        needle (case-insensitive) and holding no credential. Returns the message."""
        kwargs.setdefault("node_publish_secret", sp_secret())
        try:
            response = (through or self.path_driver).mount(parameters, **kwargs)
        except grpc.RpcError as error:
            code, message = error.code(), error.details() or ""
        else:
            self.fail(
                f"Mount succeeded with {len(response.files)} files: {[f.path for f in response.files]}"
                f" (expected one of {codes} naming {needles})"
            )
        self.assertIn(code, codes, f"{code}: {message}")
        for needle in needles:
            self.assertIn(needle.lower(), message.lower(), f"the message does not name {needle!r}: {message}")
        self.assert_no_credential_in(message)
        return message

    def assert_no_credential_in(self, message: str) -> None:
        for credential in (S.sp_client_secret, S.noperm_client_secret):
            self.assertNotIn(credential, message)
        self.assertNotIn("eyJ", message, "a JWT in an error message")
        for entry in S.seed["secrets"].values():
            for version in entry["versions"]:
                self.assertNotIn(version["value"], message, "a secret's value in an error message")
