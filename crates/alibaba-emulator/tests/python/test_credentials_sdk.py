"""alibabacloud-credentials against the emulator's STS and ECS metadata service, and KMS with the
credentials they yield: `oidc_role_arn` (AssumeRoleWithOIDC with an RRSA-style token file, STS at
sts.aliyuncs.com resolved to the emulator and trusted through SSL_CERT_FILE), `ram_role_arn`
(AssumeRole signed with HMAC-SHA1 by the credentials package itself) and `ecs_ram_role` (the
metadata service at 100.100.100.200 reached through the emulator's metadata listener as an HTTP
proxy, with and without IMDSv2 tokens).
"""

import os
import tempfile
import unittest

from alibabacloud_credentials.client import Client as CredClient
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_credentials.models import Config as CredConfig
from alibabacloud_tea_openapi.exceptions import ClientException

from alibaba_fixture import METADATA_URL, STS_HOST, admin, get_secret, kms, new_key, put_secret, unique
from test_kms_sdk import ALGORITHMS

ISSUER = "https://oidc-ack-cn-hangzhou.oss-cn-hangzhou.aliyuncs.com/c1234567890"
SUBJECT = "system:serviceaccount:kube-system:csi-secrets-store-provider-alibabacloud"


class OidcRoleArnTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.provider_arn = admin("POST", "oidc-providers", {"name": unique("ack-rrsa"), "issuer": ISSUER})["arn"]
        cls.role_arn = admin("POST", "roles", {
            "name": unique("csi-reader"),
            "grants": {"secrets": ["rrsa-*"], "parameters": [], "roles": []},
            "oidc": [{"provider_arn": cls.provider_arn, "subjects": [SUBJECT]}],
        })["arn"]
        cls.dir = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def token_file(self, subject=SUBJECT, audience=None, lifetime=3600, provider=None):
        body = {"provider_arn": provider or self.provider_arn, "subject": subject, "lifetime_seconds": lifetime}
        if audience is not None:
            body["audience"] = audience
        token = admin("POST", "oidc-tokens", body)["token"]
        path = os.path.join(self.dir.name, unique("token"))
        with open(path, "w") as f:
            f.write(token + "\n")  # a trailing newline, as some token writers leave it
        return path

    def client(self, token_file, role_arn=None, provider_arn=None):
        return CredClient(CredConfig(
            type="oidc_role_arn",
            role_arn=role_arn or self.role_arn,
            oidc_provider_arn=provider_arn or self.provider_arn,
            oidc_token_file_path=token_file,
            role_session_name="csi-secrets-store-provider-alibaba",
            sts_endpoint=STS_HOST,
        ))

    def test_sts_credentials_read_kms_with_both_signatures(self):
        name = unique("rrsa")
        put_secret(name, [{"data": "from rrsa"}])
        credentials = self.client(self.token_file())
        credential = credentials.get_credential()
        self.assertTrue(credential.access_key_id.startswith("STS."))
        self.assertTrue(credential.security_token.startswith("CAIS"))
        self.assertEqual(credential.provider_name, "oidc_role_arn")
        for algorithm in ALGORITHMS:
            with self.subTest(algorithm=algorithm):
                client = kms(credential=credentials, algorithm=algorithm)
                self.assertEqual(get_secret(client, name).secret_data, "from rrsa")
        outside = unique("other")
        put_secret(outside, [{"data": "no"}])
        with self.assertRaises(ClientException) as raised:
            get_secret(kms(credential=credentials), outside)
        self.assertEqual(raised.exception.code, "Forbidden.NoPermission")

    def assert_refused(self, client, code):
        with self.assertRaises(CredentialException) as raised:
            client.get_credential()
        self.assertIn(code, str(raised.exception))

    def test_token_and_trust_are_checked(self):
        self.assert_refused(self.client(self.token_file(audience="other-audience")),
                            "AuthenticationFail.OIDCToken.AudienceNotMatch")
        self.assert_refused(self.client(self.token_file(lifetime=-60)), "AuthenticationFail.OIDCToken.Expired")
        self.assert_refused(self.client(self.token_file(subject="system:serviceaccount:default:intruder")),
                            "AuthenticationFail.NoPermission")
        other_provider = admin("POST", "oidc-providers",
                               {"name": unique("other"), "issuer": "https://other.example"})["arn"]
        self.assert_refused(self.client(self.token_file(), provider_arn=other_provider),
                            "AuthenticationFail.OIDCToken.IssuerNotMatch")
        self.assert_refused(self.client(self.token_file(), provider_arn=self.provider_arn + "x"),
                            "No such OIDC Provider registered")
        self.assert_refused(self.client(self.token_file(), role_arn=self.role_arn + "x"), "EntityNotExist.Role")
        path = os.path.join(self.dir.name, "garbage")
        with open(path, "w") as f:
            f.write("not-a-jwt")
        self.assert_refused(self.client(path), "AuthenticationFail.OIDCToken.Invalid")


class RamRoleArnTest(unittest.TestCase):
    def test_assume_role_within_grants_and_trust(self):
        name = unique("ops")
        put_secret(name, [{"data": "for ops"}])
        role_arn = admin("POST", "roles", {"name": unique("ops"), "grants": {"secrets": ["ops-*"]}})["arn"]
        key_id, secret = new_key()
        credentials = CredClient(CredConfig(
            type="ram_role_arn", access_key_id=key_id, access_key_secret=secret, role_arn=role_arn,
            role_session_name="ops-session", sts_endpoint=STS_HOST))
        credential = credentials.get_credential()
        self.assertTrue(credential.access_key_id.startswith("STS."))
        for algorithm in ALGORITHMS:
            self.assertEqual(get_secret(kms(credential=credentials, algorithm=algorithm), name).secret_data,
                             "for ops")
        no_roles = new_key(grants={"secrets": ["*"], "roles": []})
        refused = CredClient(CredConfig(
            type="ram_role_arn", access_key_id=no_roles[0], access_key_secret=no_roles[1], role_arn=role_arn,
            role_session_name="ops-session", sts_endpoint=STS_HOST))
        with self.assertRaises(CredentialException) as raised:
            refused.get_credential()
        self.assertIn("NoPermission", str(raised.exception))
        other_account = new_key(account_id="5555666677778888")
        untrusted = CredClient(CredConfig(
            type="ram_role_arn", access_key_id=other_account[0], access_key_secret=other_account[1],
            role_arn=role_arn, role_session_name="ops-session", sts_endpoint=STS_HOST))
        with self.assertRaises(CredentialException) as raised:
            untrusted.get_credential()
        self.assertIn("NoPermission", str(raised.exception))
        wrong_secret = CredClient(CredConfig(
            type="ram_role_arn", access_key_id=key_id, access_key_secret="wrong", role_arn=role_arn,
            role_session_name="ops-session", sts_endpoint=STS_HOST))
        with self.assertRaises(CredentialException) as raised:
            wrong_secret.get_credential()
        self.assertIn("SignatureDoesNotMatch", str(raised.exception))

    def test_cross_account_role(self):
        other = "7777666655554444"
        name = unique("theirs")
        put_secret(name, [{"data": "cross"}], account_id=other)
        role_arn = admin("POST", "roles", {"name": unique("shared"), "account_id": other,
                                           "trusted_accounts": [admin("GET", "info")["account_id"]]})["arn"]
        self.assertIn(f"acs:ram::{other}:role/", role_arn)
        key_id, secret = new_key()
        credentials = CredClient(CredConfig(
            type="ram_role_arn", access_key_id=key_id, access_key_secret=secret, role_arn=role_arn,
            role_session_name="cross", sts_endpoint=STS_HOST))
        self.assertEqual(get_secret(kms(credential=credentials), name).secret_data, "cross")


class EcsRamRoleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.role = unique("ecs-node")
        admin("POST", "roles", {"name": cls.role, "grants": {"secrets": ["node-*"]}})
        admin("PUT", "ecs-role", {"role_name": cls.role})

    @classmethod
    def tearDownClass(cls):
        admin("PUT", "metadata", {"require_token": False})
        admin("DELETE", "ecs-role")

    def client(self, role_name=None, disable_imds_v1=None):
        return CredClient(CredConfig(type="ecs_ram_role", role_name=role_name, disable_imds_v1=disable_imds_v1,
                                     proxy=METADATA_URL))

    def test_role_credentials_read_kms(self):
        name = unique("node")
        put_secret(name, [{"data": "from ecs"}])
        for role_name in [None, self.role]:
            with self.subTest(role_name=role_name):
                credentials = self.client(role_name)
                credential = credentials.get_credential()
                self.assertTrue(credential.access_key_id.startswith("STS."))
                self.assertEqual(credential.provider_name, "ecs_ram_role")
                for algorithm in ALGORITHMS:
                    self.assertEqual(
                        get_secret(kms(credential=credentials, algorithm=algorithm), name).secret_data, "from ecs")

    def test_imdsv2_tokens(self):
        admin("PUT", "metadata", {"require_token": True})
        try:
            credential = self.client(disable_imds_v1=True).get_credential()
            self.assertTrue(credential.access_key_id.startswith("STS."))
        finally:
            admin("PUT", "metadata", {"require_token": False})
        counts = admin("GET", "counters")["EcsMetadata"]
        self.assertGreaterEqual(counts["succeeded"], 3)

    def test_metadata_faults_surface(self):
        admin("POST", "faults", {"action": "EcsMetadata", "fault": {"kind": "status", "status": 500}})
        try:
            with self.assertRaises(CredentialException):
                self.client(self.role).get_credential()
        finally:
            admin("DELETE", "faults")


if __name__ == "__main__":
    unittest.main()
