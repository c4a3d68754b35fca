"""What the secrets and certificates suites share: the emulator's address (KV_* environment
variables set by crates/keyvault-emulator/tests/python_sdk.rs), its admin API, and identities
registered through it with client-secret credentials.
"""

import os
import uuid

import requests
from azure.identity import ClientSecretCredential

VAULT = os.environ["KV_VAULT_URL"]
TENANT = os.environ["KV_TENANT"]
CA = os.environ["REQUESTS_CA_BUNDLE"]
AUTHORITY = VAULT.rstrip("/")
API = "2025-07-01"
# The SDKs' retries would hide the emulator's answers; tests see every status.
NO_RETRY = {"retry_total": 0}


def admin(method, path, body=None):
    """Calls the emulator's admin API (`/_emulator/...`); fails the test on an error answer."""
    response = requests.request(method, AUTHORITY + "/_emulator/" + path, json=body, verify=CA, timeout=30)
    if response.status_code >= 400:
        raise AssertionError(f"admin {method} {path}: {response.status_code} {response.text}")
    return response.json() if response.content else None


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(permissions=None):
    """Registers an application with a client secret (all permissions unless given)."""
    client_id, secret = str(uuid.uuid4()), uuid.uuid4().hex
    spec = {"client_id": client_id, "client_secret": secret}
    if permissions is not None:
        spec["permissions"] = permissions
    admin("POST", "identities", spec)
    return client_id, secret


def credential(permissions=None):
    client_id, secret = register(permissions)
    return ClientSecretCredential(TENANT, client_id, secret, authority=AUTHORITY, disable_instance_discovery=True)


def bearer(cred):
    """A token for raw REST calls."""
    return cred.get_token("https://vault.azure.net/.default").token
