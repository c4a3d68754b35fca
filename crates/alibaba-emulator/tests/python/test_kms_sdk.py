"""alibabacloud-kms20160120 against the emulator: GetSecretValue (text, binary, by stage, by version
id, cross-account by ARN) and ListSecretVersionIds with the ACS3-HMAC-SHA256 signature (the SDK's
default) and the RPC HMAC-SHA1 one (`signature_algorithm="v2"`), with static AccessKeys and with
STS tokens; every error answer as the SDK's exception with its code; replayed and stale requests
signed by the SDK's own signing code.
"""

import base64
import hashlib
import re
import unittest
import uuid

import requests
from alibabacloud_credentials.client import Client as CredClient
from alibabacloud_credentials.models import Config as CredConfig
from alibabacloud_kms20160120 import models as kms_models
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException, ThrottlingException
from alibabacloud_tea_openapi.utils import Utils
from darabonba.request import DaraRequest
from darabonba.runtime import RuntimeOptions

from alibaba_fixture import (
    ErrorAssertions, ACCOUNT, CA, ENDPOINT, KMS_HOST, STS_HOST, admin, get_secret, kms, new_key, put_secret, reads, unique,
)

ALGORITHMS = [None, "v2"]  # None: the SDK's default ACS3-HMAC-SHA256


def sts_credentials(grants=None):
    """STS credentials of a fresh role, obtained by the credentials SDK's AssumeRole."""
    role = unique("reader")
    spec = {"name": role}
    if grants is not None:
        spec["grants"] = grants
    role_arn = admin("POST", "roles", spec)["arn"]
    key_id, secret = new_key()
    client = CredClient(CredConfig(
        type="ram_role_arn", access_key_id=key_id, access_key_secret=secret,
        role_arn=role_arn, role_session_name="kms-test", sts_endpoint=STS_HOST,
    ))
    credential = client.get_credential()
    return credential.access_key_id, credential.access_key_secret, credential.security_token


class KmsSdkTest(ErrorAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.key_id, cls.secret = new_key()


    def test_text_secret_with_both_signatures(self):
        name = unique("db")
        put_secret(name, [{"data": "s3cret value é", "version_id": "00001"}])
        for algorithm in ALGORITHMS:
            with self.subTest(algorithm=algorithm):
                body = get_secret(kms(self.key_id, self.secret, algorithm=algorithm), name)
                self.assertEqual(body.secret_name, name)
                self.assertEqual(body.secret_data, "s3cret value é")
                self.assertEqual(body.secret_data_type, "text")
                self.assertEqual(body.secret_type, "Generic")
                self.assertEqual(body.version_id, "00001")
                self.assertEqual(body.version_stages.version_stage, ["ACSCurrent"])
                self.assertRegex(body.create_time, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
                self.assertRegex(body.request_id, r"^[0-9A-F-]{36}$")

    def test_plain_endpoint_with_a_ca_file(self):
        name = unique("db")
        put_secret(name, [{"data": "v"}])
        body = get_secret(kms(self.key_id, self.secret, endpoint=ENDPOINT, ca=CA), name)
        self.assertEqual(body.secret_data, "v")

    def test_binary_secret_is_standard_base64(self):
        name = unique("bin")
        raw = bytes(range(256)) + b"\xfb\xff"
        put_secret(name, [{"data": base64.b64encode(raw).decode(), "data_type": "binary"}])
        for algorithm in ALGORITHMS:
            body = get_secret(kms(self.key_id, self.secret, algorithm=algorithm), name)
            self.assertEqual(body.secret_data_type, "binary")
            self.assertEqual(base64.b64decode(body.secret_data, validate=True), raw)

    def test_stages_and_version_ids(self):
        name = unique("rot")
        put_secret(name, [
            {"data": "one", "version_id": "v1", "stages": ["ACSPrevious"]},
            {"data": "two", "version_id": "v2", "stages": ["ACSCurrent"]},
            {"data": "three", "version_id": "v3", "stages": ["Pending"]},
            {"data": "zero", "version_id": "v0", "stages": []},
        ])
        client = kms(self.key_id, self.secret)
        self.assertEqual(get_secret(client, name).secret_data, "two")
        self.assertEqual(get_secret(client, name, stage="ACSCurrent").version_id, "v2")
        self.assertEqual(get_secret(client, name, stage="ACSPrevious").secret_data, "one")
        self.assertEqual(get_secret(client, name, stage="Pending").secret_data, "three")
        self.assertEqual(get_secret(client, name, version_id="v0").secret_data, "zero")
        by_id = get_secret(client, name, version_id="v3")
        self.assertEqual((by_id.secret_data, by_id.version_stages.version_stage), ("three", ["Pending"]))
        self.assertEqual(get_secret(client, name, version_id="v1", stage="ACSPrevious").secret_data, "one")
        self.assert_error(lambda: get_secret(client, name, version_id="v1", stage="ACSCurrent"),
                          ClientException, "InvalidParameter", 400)
        self.assert_error(lambda: get_secret(client, name, version_id="v9"),
                          ClientException, "Forbidden.ResourceNotFound", 404)
        self.assert_error(lambda: get_secret(client, name, stage="Nope"),
                          ClientException, "Forbidden.ResourceNotFound", 404)
        extended = get_secret(client, name, fetch_extended_config=True)
        self.assertEqual(extended.automatic_rotation, "Disabled")
        # PutSecretValue semantics: the new version is current, the old current is previous.
        admin("POST", f"secrets/{name}", {"data": "four", "version_id": "v4"})
        self.assertEqual(get_secret(client, name).version_id, "v4")
        self.assertEqual(get_secret(client, name, stage="ACSPrevious").version_id, "v2")

    def test_list_secret_version_ids_pages(self):
        name = unique("list")
        put_secret(name, [
            {"data": "a", "version_id": "a", "stages": []},
            {"data": "b", "version_id": "b", "stages": ["ACSPrevious"]},
            {"data": "c", "version_id": "c", "stages": ["ACSCurrent"]},
            {"data": "d", "version_id": "d", "stages": ["Next"]},
        ])
        for algorithm in ALGORITHMS:
            client = kms(self.key_id, self.secret, algorithm=algorithm)
            request = kms_models.ListSecretVersionIdsRequest(secret_name=name, page_size=2, page_number=1)
            first = client.list_secret_version_ids_with_options(request, RuntimeOptions()).body
            self.assertEqual((first.total_count, first.page_number, first.page_size), (3, 1, 2))
            self.assertEqual([v.version_id for v in first.version_ids.version_id], ["b", "c"])
            self.assertEqual(first.version_ids.version_id[1].version_stages.version_stage, ["ACSCurrent"])
            request.page_number = 2
            second = client.list_secret_version_ids_with_options(request, RuntimeOptions()).body
            self.assertEqual([v.version_id for v in second.version_ids.version_id], ["d"])
            request = kms_models.ListSecretVersionIdsRequest(secret_name=name, include_deprecated="true")
            everything = client.list_secret_version_ids_with_options(request, RuntimeOptions()).body
            self.assertEqual(everything.total_count, 4)
            self.assertEqual(everything.version_ids.version_id[0].version_stages.version_stage, [])

    def test_sts_tokens_with_both_signatures(self):
        name = unique("sts")
        put_secret(name, [{"data": "via sts"}])
        key_id, secret, token = sts_credentials()
        self.assertTrue(key_id.startswith("STS."))
        for algorithm in ALGORITHMS:
            with self.subTest(algorithm=algorithm):
                client = kms(key_id, secret, token, algorithm=algorithm)
                self.assertEqual(get_secret(client, name).secret_data, "via sts")
                wrong = kms(key_id, secret, "CAIS" + token[4:-4] + "AAAA", algorithm=algorithm)
                self.assert_error(lambda: get_secret(wrong, name), ClientException,
                                  "InvalidSecurityToken.MismatchWithAccessKey", 400)
                missing = kms(key_id, secret, algorithm=algorithm)
                self.assert_error(lambda: get_secret(missing, name), ClientException,
                                  "MissingSecurityToken", 400)
        admin("POST", "sts/expire")
        for algorithm in ALGORITHMS:
            client = kms(key_id, secret, token, algorithm=algorithm)
            self.assert_error(lambda: get_secret(client, name), ClientException,
                              "InvalidSecurityToken.Expired", 400)

    def test_identity_a_reads_what_identity_b_cannot(self):
        allowed, denied = unique("team-a"), unique("team-b")
        put_secret(allowed, [{"data": "a"}])
        put_secret(denied, [{"data": "b"}])
        a = new_key(grants={"secrets": ["team-a-*"]})
        b = new_key(grants={"secrets": ["team-b-*"]})
        for algorithm in ALGORITHMS:
            self.assertEqual(get_secret(kms(*a, algorithm=algorithm), allowed).secret_data, "a")
            self.assertEqual(get_secret(kms(*b, algorithm=algorithm), denied).secret_data, "b")
            error = self.assert_error(lambda: get_secret(kms(*b, algorithm=algorithm), allowed),
                                      ClientException, "Forbidden.NoPermission", 403)
            self.assertIn("forbidden by permission system", error.message)
        # Permission comes before existence: no grant, no hint that a name exists.
        self.assert_error(lambda: get_secret(kms(*b), "team-a-missing"), ClientException,
                          "Forbidden.NoPermission", 403)
        error = self.assert_error(lambda: get_secret(kms(*a), "team-a-missing"), ClientException,
                                  "Forbidden.ResourceNotFound", 404)
        self.assertIn("code: 404, Resource not found", error.message)
        # A role's STS session reads with the role's grants.
        key_id, secret, token = sts_credentials(grants={"secrets": ["team-a-*"]})
        self.assertEqual(get_secret(kms(key_id, secret, token), allowed).secret_data, "a")
        self.assert_error(lambda: get_secret(kms(key_id, secret, token), denied), ClientException,
                          "Forbidden.NoPermission", 403)

    def test_cross_account_by_arn(self):
        other = "2222333344445555"
        name = unique("shared")
        put_secret(name, [{"data": "theirs"}], account_id=other)
        arn = f"acs:kms:cn-hangzhou:{other}:secret/{name}"
        granted = new_key(grants={"secrets": [f"acs:kms:*:{other}:secret/shared-*"]})
        body = get_secret(kms(*granted), arn)
        self.assertEqual((body.secret_data, body.secret_name), ("theirs", name))
        # "*" covers the caller's own account only.
        self.assert_error(lambda: get_secret(kms(self.key_id, self.secret), arn), ClientException,
                          "Forbidden.NoPermission", 403)
        self.assert_error(lambda: get_secret(kms(self.key_id, self.secret), name), ClientException,
                          "Forbidden.ResourceNotFound", 404)
        owner = new_key(account_id=other)
        self.assertEqual(get_secret(kms(*owner), name).secret_data, "theirs")

    def test_credential_errors(self):
        name = unique("auth")
        put_secret(name, [{"data": "x"}])
        for algorithm in ALGORITHMS:
            with self.subTest(algorithm=algorithm):
                self.assert_error(lambda: get_secret(kms(self.key_id, "wrong", algorithm=algorithm), name),
                                  ClientException, "SignatureDoesNotMatch", 400)
                self.assert_error(lambda: get_secret(kms("LTAIunknown", "x", algorithm=algorithm), name),
                                  ClientException, "InvalidAccessKeyId.NotFound", 404)
        disabled = new_key()
        admin("PATCH", f"access-keys/{disabled[0]}", {"enabled": False})
        self.assert_error(lambda: get_secret(kms(*disabled), name), ClientException,
                          "InvalidAccessKeyId.Inactive", 400)

    def test_server_errors_and_throttling(self):
        name = unique("flaky")
        put_secret(name, [{"data": "x"}])
        client = kms(self.key_id, self.secret)
        try:
            admin("POST", "faults", {"action": "GetSecretValue", "name": name,
                                     "fault": {"kind": "status", "status": 500}, "count": 1})
            admin("POST", "faults", {"action": "GetSecretValue", "name": name,
                                     "fault": {"kind": "status", "status": 503}, "count": 1})
            admin("POST", "faults", {"action": "GetSecretValue", "name": name,
                                     "fault": {"kind": "throttle"}, "count": 1})
            admin("POST", "faults", {"action": "GetSecretValue", "name": name,
                                     "fault": {"kind": "throttle", "retry_after_millis": 1500}, "count": 1})
            self.assert_error(lambda: get_secret(client, name), ServerException, "InternalFailure", 500)
            self.assert_error(lambda: get_secret(client, name), ServerException,
                              "ServiceUnavailableTemporary", 503)
            self.assert_error(lambda: get_secret(client, name), ClientException, "Rejected.Throttling", 429)
            error = self.assert_error(lambda: get_secret(client, name), ThrottlingException,
                                      "Rejected.Throttling", 429)
            self.assertEqual(error.retry_after, 1500)
            self.assertEqual(get_secret(client, name).secret_data, "x")

            admin("PUT", "throttle", {"requests": 2, "window_millis": 60000, "actions": ["GetSecretValue"]})
            get_secret(client, name)
            get_secret(client, name)
            error = self.assert_error(lambda: get_secret(client, name), ThrottlingException,
                                      "Rejected.Throttling", 429)
            self.assertGreater(error.retry_after, 0)
            self.assertLessEqual(error.retry_after, 60000)
            self.assertIn("QPS Limit Exceeded", error.message)
        finally:
            admin("DELETE", "faults")
            admin("DELETE", "throttle")

    def test_reads_are_counted_per_action_and_name(self):
        name = unique("counted")
        put_secret(name, [{"data": "x"}])
        client = kms(self.key_id, self.secret)
        for _ in range(3):
            get_secret(client, name)
        client.list_secret_version_ids_with_options(
            kms_models.ListSecretVersionIdsRequest(secret_name=name), RuntimeOptions())
        self.assertEqual(reads("GetSecretValue", name), 3)
        self.assertEqual(reads("ListSecretVersionIds", name), 1)
        # Unauthenticated requests are not reads.
        with self.assertRaises(ClientException):
            get_secret(kms(self.key_id, "wrong"), name)
        self.assertEqual(reads("GetSecretValue", name), 3)
        counts = admin("GET", "counters")["GetSecretValue"]
        self.assertGreaterEqual(counts["requests"], 4)


class RawSignedRequestTest(unittest.TestCase):
    """Requests signed by the SDK's own signing code and sent twice, or with an old date."""

    def signed(self, key_id, secret, name, date=None):
        payload = hashlib.sha256(b"").hexdigest()
        request = DaraRequest()
        request.method = "POST"
        request.pathname = "/"
        request.query = {"SecretName": name}
        request.headers = {
            "host": KMS_HOST,
            "x-acs-action": "GetSecretValue",
            "x-acs-version": "2016-01-20",
            "x-acs-date": date or Utils.get_timestamp(),
            "x-acs-signature-nonce": uuid.uuid4().hex,
            "x-acs-content-sha256": payload,
            "accept": "application/json",
        }
        request.headers["Authorization"] = Utils.get_authorization(
            request, "ACS3-HMAC-SHA256", payload, key_id, secret)
        return request

    def send(self, request):
        return requests.post(f"https://{KMS_HOST}/", params=request.query, headers=request.headers,
                             verify=CA, timeout=30)

    def test_replayed_nonce_and_stale_date(self):
        key_id, secret = new_key()
        name = unique("raw")
        put_secret(name, [{"data": "x"}])
        request = self.signed(key_id, secret, name)
        first = self.send(request)
        self.assertEqual(first.status_code, 200, first.text)
        self.assertEqual(first.json()["SecretData"], "x")
        replay = self.send(request)
        self.assertEqual((replay.status_code, replay.json()["Code"]), (400, "SignatureNonceUsed"))
        stale = self.send(self.signed(key_id, secret, name, date="2020-01-01T00:00:00Z"))
        self.assertEqual((stale.status_code, stale.json()["Code"]), (400, "InvalidTimeStamp.Expired"))
        self.assertRegex(stale.headers["content-type"], r"^application/json")
        self.assertEqual(stale.headers["x-acs-request-id"], stale.json()["RequestId"])
        unsigned_header = self.signed(key_id, secret, name)
        unsigned_header.headers["x-acs-security-token"] = "CAISnotsigned"
        refused = self.send(unsigned_header)
        self.assertEqual(refused.json()["Code"], "IncompleteSignature")
        unknown = requests.post(f"https://{KMS_HOST}/", params={"Action": "Encrypt", "Version": "2016-01-20"},
                                verify=CA, timeout=30)
        self.assertEqual((unknown.status_code, unknown.json()["Code"]), (404, "InvalidApi.NotFound"))
        self.assertTrue(re.match(r"^[0-9A-F-]{36}$", unknown.json()["RequestId"]))
        self.assertEqual(ACCOUNT, admin("GET", "info")["account_id"])


if __name__ == "__main__":
    unittest.main()
