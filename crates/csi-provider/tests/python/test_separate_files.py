"""`--write-cert-and-key-in-separate-files`, as Azure's provider has it: a certificate read as a
secret in PEM form is mounted as `<file>` (key then chain) and also as `<file>.crt` (its
certificates, leaf → root) and `<file>.key` (its private key), all under the object's one
version; nothing else is split.

crates/csi-provider/tests/driver_python.rs runs this module against a provider started with
that flag, with the environment test_mount.py's docstring lists.
"""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mount_fixture import (
    S,
    ProviderTestCase,
    certificate,
    certificates_der,
    chain_der,
    latest,
    open_pfx,
    pem_blocks,
    secret,
    spc,
    spki,
)


def setUpModule() -> None:  # noqa: N802 (unittest's name)
    S.load()


class SeparateCertAndKeyFiles(ProviderTestCase):
    def assert_split(self, files: dict, file: str, name: str) -> None:
        self.assertEqual(set(files), {file, f"{file}.crt", f"{file}.key"})
        chain = chain_der(name)
        self.assertEqual(certificates_der(files[file].contents), chain)
        self.assertEqual([label for label, _ in pem_blocks(files[file].contents)][0], "PRIVATE KEY")
        self.assertEqual([label for label, _ in pem_blocks(files[f"{file}.crt"].contents)], ["CERTIFICATE"] * len(chain))
        self.assertEqual(certificates_der(files[f"{file}.crt"].contents), chain)
        self.assertEqual([label for label, _ in pem_blocks(files[f"{file}.key"].contents)], ["PRIVATE KEY"])
        key = serialization.load_pem_private_key(files[f"{file}.key"].contents, None)
        leaf = x509.load_der_x509_certificate(chain[0])
        self.assertEqual(spki(key.public_key()), spki(leaf.public_key()))
        modes = {files[path].mode for path in (file, f"{file}.crt", f"{file}.key")}
        self.assertEqual(len(modes), 1, "the three files share the object's mode")

    def test_a_pfx_backed_certificate_also_mounts_as_crt_and_key(self):
        files, versions = self.mount(spc([secret("web-chain-pfx")]))
        self.assert_split(files, "web-chain-pfx", "web-chain-pfx")
        self.assertEqual(versions, {"secret/web-chain-pfx": certificate("web-chain-pfx")["version"]})

    def test_a_pem_backed_certificate_also_mounts_as_crt_and_key(self):
        files, _ = self.mount(spc([secret("web-chain-pem")]))
        self.assert_split(files, "web-chain-pem", "web-chain-pem")

    def test_the_extra_files_follow_the_alias_and_filePermission(self):
        files, _ = self.mount(spc([secret("web-selfsigned", objectAlias="tls/server.pem", filePermission="0440")]))
        self.assert_split(files, "tls/server.pem", "web-selfsigned")
        self.assertEqual(files["tls/server.pem.key"].mode, 0o440)

    def test_a_plain_secret_a_cert_object_and_a_key_are_not_split(self):
        files, _ = self.mount(
            spc(
                [
                    secret("split-plain"),
                    {"objectName": "web-selfsigned", "objectType": "cert"},
                    {"objectName": "rsa-key", "objectType": "key"},
                ]
            )
        )
        self.assertEqual(set(files), {"split-plain", "web-selfsigned", "rsa-key"})
        self.assertEqual(files["split-plain"].contents, latest("split-plain")["value"].encode())

    def test_a_pfx_passes_through_unchanged(self):
        # Azure's provider also writes `<file>.crt` and `<file>.key` here, cut from the base64
        # text, so empty; only the PFX itself is part of the contract.
        files, _ = self.mount(spc([secret("web-chain-pfx", objectFormat="pfx", objectAlias="web.pfx")]))
        self.assertIn("web.pfx", files)
        _, leaf, _ = open_pfx(base64.b64decode(files["web.pfx"].contents, validate=True), None)
        self.assertEqual(leaf.public_bytes(serialization.Encoding.DER), chain_der("web-chain-pfx")[0])
        for extra in ("web.pfx.crt", "web.pfx.key"):
            if extra in files:
                self.assertEqual(pem_blocks(files[extra].contents), [], extra)
