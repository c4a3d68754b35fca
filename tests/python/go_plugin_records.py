"""Writes Azure Go KMS plugin records with Microsoft's Python SDK, a client we did not write.

The JSON file named on the command line holds the vault, a client-secret identity with keys/get
and encrypt, and a list of records to make: a key version, the Go plugin's generation ("older":
the DEK encrypted, the base64url result stored as ASCII; "newer": the DEK's ASCII base64url
encrypted, the raw result stored), the algorithm (RSA-OAEP-256 for KMS v2, RSA1_5 for v1) and
the DEK (hex). azure-keyvault-keys' CryptographyClient encrypts: with the key version's public
key in Python's `cryptography` when it can read it, else with a remote `encrypt` at the emulator.
Prints one line per record, in order: "record <stored bytes in hex>".

Run by tests/azure_legacy.rs with REQUESTS_CA_BUNDLE pointing at the emulator's CA.
"""

import base64
import json
import sys

from azure.identity import ClientSecretCredential
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm

ALGORITHMS = {
    "RSA-OAEP-256": EncryptionAlgorithm.rsa_oaep_256,
    "RSA1_5": EncryptionAlgorithm.rsa1_5,
}


def base64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def main():
    with open(sys.argv[1], encoding="utf-8") as spec_file:
        spec = json.load(spec_file)
    vault = spec["vault_url"].rstrip("/")
    credential = ClientSecretCredential(
        spec["tenant_id"],
        spec["client_id"],
        spec["client_secret"],
        authority=vault,
        disable_instance_discovery=True,
    )
    clients = {}
    for record in spec["records"]:
        version = record["version"]
        if version not in clients:
            kid = f"{vault}/keys/{spec['key_name']}/{version}"
            clients[version] = CryptographyClient(
                kid, credential, verify_challenge_resource=False, retry_total=0
            )
        crypto = clients[version]
        algorithm = ALGORITHMS[record["algorithm"]]
        dek = bytes.fromhex(record["dek"])
        if record["generation"] == "older":
            stored = base64url(crypto.encrypt(algorithm, dek).ciphertext)
        elif record["generation"] == "newer":
            stored = crypto.encrypt(algorithm, base64url(dek)).ciphertext
        else:
            raise ValueError(f"unknown generation {record['generation']!r}")
        print(f"record {stored.hex()}")


if __name__ == "__main__":
    main()
