"""What the Alibaba Cloud suites share: the emulator's address (ALI_* environment variables set by
crates/alibaba-emulator/tests/python_sdk.rs), its admin API, identities registered through it, SDK
clients, and name resolution that sends every *.aliyuncs.com host to the emulator, so the SDKs
connect with real service host names and verify the emulator's certificate against them.
"""

import os
import socket
import uuid

import requests
from alibabacloud_kms20160120.client import Client as KmsClient
from alibabacloud_kms20160120 import models as kms_models
from alibabacloud_oos20190601.client import Client as OosClient
from alibabacloud_oos20190601 import models as oos_models
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.runtime import RuntimeOptions

ENDPOINT = os.environ["ALI_ENDPOINT"]  # localhost:PORT
PORT = ENDPOINT.rsplit(":", 1)[1]
CA = os.environ["ALI_CA"]
METADATA_URL = os.environ["ALI_METADATA_URL"]
ACCOUNT = os.environ["ALI_ACCOUNT_ID"]
REGION = os.environ["ALI_REGION"]
ADMIN = f"https://{ENDPOINT}/_emulator/"

KMS_HOST = f"kms-vpc.{REGION}.aliyuncs.com:{PORT}"
OOS_HOST = f"oos-vpc.{REGION}.aliyuncs.com:{PORT}"
STS_HOST = f"sts.aliyuncs.com:{PORT}"

_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    """*.aliyuncs.com resolves to the emulator on loopback; nothing else changes."""
    if isinstance(host, str) and host.endswith(".aliyuncs.com"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo


def admin(method, path, body=None, expect_error=False):
    """Calls the emulator's admin API (`/_emulator/...`); fails the test on an error answer."""
    response = requests.request(method, ADMIN + path, json=body, verify=CA, timeout=30)
    if response.status_code >= 400 and not expect_error:
        raise AssertionError(f"admin {method} {path}: {response.status_code} {response.text}")
    return response.json() if response.content else None


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_key(grants=None, account_id=None):
    """Registers an AccessKey (every grant in its account unless given); returns (id, secret)."""
    key_id, secret = "LTAI" + uuid.uuid4().hex[:20], uuid.uuid4().hex
    spec = {"id": key_id, "secret": secret}
    if grants is not None:
        spec["grants"] = grants
    if account_id is not None:
        spec["account_id"] = account_id
    admin("POST", "access-keys", spec)
    return key_id, secret


def put_secret(name, versions, account_id=None):
    body = {"versions": versions}
    if account_id is not None:
        body["account_id"] = account_id
    return admin("PUT", f"secrets/{name}", body)


def _client(cls, key_id, secret, token, algorithm, endpoint, credential, ca=None):
    return cls(Config(
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=token,
        credential=credential,
        endpoint=endpoint,
        signature_algorithm=algorithm,
        ca=ca,
    ))


def kms(key_id=None, secret=None, token=None, algorithm=None, endpoint=KMS_HOST, credential=None, ca=None):
    return _client(KmsClient, key_id, secret, token, algorithm, endpoint, credential, ca)


def oos(key_id=None, secret=None, token=None, algorithm=None, endpoint=OOS_HOST, credential=None):
    return _client(OosClient, key_id, secret, token, algorithm, endpoint, credential)


class ErrorAssertions:
    """`assert_error`: the call raises `exception` with this code and status, and a request id."""

    def assert_error(self, call, exception, code, status):
        with self.assertRaises(exception) as raised:
            call()
        self.assertEqual(raised.exception.code, code, raised.exception.message)
        self.assertEqual(raised.exception.status_code, status)
        self.assertTrue(raised.exception.request_id)
        return raised.exception


def get_secret(client, name, version_id=None, stage=None, **extra):
    request = kms_models.GetSecretValueRequest(
        secret_name=name, version_id=version_id, version_stage=stage, **extra
    )
    return client.get_secret_value_with_options(request, RuntimeOptions()).body


def get_parameter(client, name, decrypt=True, version=None):
    request = oos_models.GetSecretParameterRequest(
        name=name, with_decryption=decrypt, parameter_version=version
    )
    return client.get_secret_parameter_with_options(request, RuntimeOptions()).body


def reads(action, name):
    for row in admin("GET", "counters/reads"):
        if row["action"] == action and row["name"] == name:
            return row["requests"]
    return 0
