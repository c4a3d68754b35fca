"""Reads what kube-kms's Azure provider wrote with Microsoft's Python SDK, a client we did not write.

For each case in the JSON file (binary fields in hex) named on the command line: recompute the key_id from the key
version's URL (lowercase hex SHA-256 of https://{vault-host}/keys/{name}/{version}), unwrap the
wrapped KEK from the annotations through azure-keyvault-keys' CryptographyClient (a remote
unwrapKey at the emulator, authenticated by azure-identity's ClientSecretCredential), and open
the KMS v2 ciphertext with that KEK (AES-256-GCM, nonce = bytes 1..13, associated data = 0x01 ‖
key_id, docs/format.md). Prints one line per case and exits non-zero on any mismatch.

Run by tests/azure_provider.rs with REQUESTS_CA_BUNDLE pointing at the emulator's CA.
"""

import hashlib
import json
import sys
from urllib.parse import urlparse

from azure.identity import ClientSecretCredential
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ALGORITHMS = {
    "RSA-OAEP-256": KeyWrapAlgorithm.rsa_oaep_256,
    "A256KW": KeyWrapAlgorithm.aes_256,
    "CKM_AES_KEY_WRAP_PAD": KeyWrapAlgorithm.ckm_aes_key_wrap_pad,
}


def check(case):
    vault = case["vault_url"].rstrip("/")
    host = urlparse(vault).netloc.lower()
    kid = f"https://{host}/keys/{case['key_name']}/{case['version']}"
    key_id = hashlib.sha256(kid.encode()).hexdigest()
    if key_id != case["key_id"]:
        raise AssertionError(f"key_id {case['key_id']} is not sha256({kid}) = {key_id}")

    credential = ClientSecretCredential(
        case["tenant_id"],
        case["client_id"],
        case["client_secret"],
        authority=vault,
        disable_instance_discovery=True,
    )
    crypto = CryptographyClient(kid, credential, verify_challenge_resource=False, retry_total=0)
    wrapped = bytes.fromhex(case["wrapped_kek"])
    kek = crypto.unwrap_key(ALGORITHMS[case["algorithm"]], wrapped).key
    if len(kek) != 32:
        raise AssertionError(f"the KEK is {len(kek)} bytes, not 32")

    ciphertext = bytes.fromhex(case["ciphertext"])
    if ciphertext[0] != 0x01:
        raise AssertionError(f"format byte {ciphertext[0]:#x}")
    plaintext = AESGCM(kek).decrypt(ciphertext[1:13], ciphertext[13:], b"\x01" + key_id.encode())
    if plaintext != bytes.fromhex(case["plaintext"]):
        raise AssertionError("the ciphertext opened to other bytes")
    print(f"ok {case['algorithm']} {kid}")


def main():
    with open(sys.argv[1], encoding="utf-8") as cases:
        for case in json.load(cases):
            check(case)


if __name__ == "__main__":
    main()
