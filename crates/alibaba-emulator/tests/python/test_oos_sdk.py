"""alibabacloud-oos20190601 against the emulator: GetSecretParameter with and without decryption,
by version, cross-account by ARN, with both signatures and STS tokens; its errors as the SDK's
exceptions.
"""

import unittest

from alibabacloud_tea_openapi.exceptions import ClientException, ServerException, ThrottlingException

from alibaba_fixture import ErrorAssertions, admin, get_parameter, new_key, oos, reads, unique
from test_kms_sdk import ALGORITHMS, sts_credentials


def put_parameter(name, versions, account_id=None):
    body = {"versions": versions, "description": "for tests"}
    if account_id is not None:
        body["account_id"] = account_id
    return admin("PUT", f"parameters/{name}", body)


class OosSdkTest(ErrorAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.key_id, cls.secret = new_key()


    def test_value_only_with_decryption(self):
        name = unique("db-password")
        put_parameter(name, ["first", "second value"])
        for algorithm in ALGORITHMS:
            with self.subTest(algorithm=algorithm):
                client = oos(self.key_id, self.secret, algorithm=algorithm)
                parameter = get_parameter(client, name).parameter
                self.assertEqual(parameter.name, name)
                self.assertEqual(parameter.value, "second value")
                self.assertEqual(parameter.parameter_version, 2)
                self.assertEqual(parameter.type, "Secret")
                self.assertEqual(parameter.description, "for tests")
                self.assertTrue(parameter.id.startswith("p-"))
                self.assertRegex(parameter.created_date, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
                hidden = get_parameter(client, name, decrypt=False).parameter
                self.assertIsNone(hidden.value)
                self.assertEqual(hidden.parameter_version, 2)

    def test_versions(self):
        name = unique("versioned")
        put_parameter(name, ["v1", "v2"])
        admin("POST", f"parameters/{name}", {"value": "v3"})
        client = oos(self.key_id, self.secret)
        self.assertEqual(get_parameter(client, name).parameter.value, "v3")
        first = get_parameter(client, name, version=1).parameter
        self.assertEqual((first.value, first.parameter_version), ("v1", 1))
        self.assert_error(lambda: get_parameter(client, name, version=4), ClientException,
                          "EntityNotExists.Parameter", 404)
        self.assert_error(lambda: get_parameter(client, name, version=101), ClientException,
                          "InvalidParameter", 400)

    def test_not_found_and_permissions(self):
        allowed = unique("app-a")
        put_parameter(allowed, ["x"])
        client = oos(self.key_id, self.secret)
        self.assert_error(lambda: get_parameter(client, unique("missing")), ClientException,
                          "EntityNotExists.Parameter", 404)
        a = new_key(grants={"parameters": ["app-a-*"]})
        b = new_key(grants={"parameters": ["app-b-*"], "secrets": ["*"]})
        self.assertEqual(get_parameter(oos(*a), allowed).parameter.value, "x")
        self.assert_error(lambda: get_parameter(oos(*b), allowed), ClientException, "Forbidden.RAM", 403)
        key_id, secret, token = sts_credentials(grants={"parameters": ["app-a-*"]})
        for algorithm in ALGORITHMS:
            self.assertEqual(
                get_parameter(oos(key_id, secret, token, algorithm=algorithm), allowed).parameter.value, "x")

    def test_cross_account_by_arn(self):
        other = "9999888877776666"
        name = unique("shared")
        put_parameter(name, ["theirs"], account_id=other)
        arn = f"acs:oos:cn-hangzhou:{other}:secretparameter/{name}"
        granted = new_key(grants={"parameters": [f"acs:oos:*:{other}:secretparameter/*"]})
        self.assertEqual(get_parameter(oos(*granted), arn).parameter.value, "theirs")
        self.assert_error(lambda: get_parameter(oos(self.key_id, self.secret), arn), ClientException,
                          "Forbidden.RAM", 403)

    def test_errors_and_throttling(self):
        name = unique("flaky")
        put_parameter(name, ["x"])
        client = oos(self.key_id, self.secret, algorithm="v2")
        self.assert_error(lambda: get_parameter(oos(self.key_id, "bad", algorithm="v2"), name),
                          ClientException, "SignatureDoesNotMatch", 400)
        try:
            admin("POST", "faults", {"action": "GetSecretParameter", "fault": {"kind": "status", "status": 500},
                                     "count": 1})
            self.assert_error(lambda: get_parameter(client, name), ServerException, "InternalFailure", 500)
            admin("PUT", "throttle", {"requests": 1, "window_millis": 30000, "actions": ["GetSecretParameter"]})
            get_parameter(client, name)
            error = self.assert_error(lambda: get_parameter(client, name), ThrottlingException,
                                      "Throttling.User", 400)
            self.assertGreater(error.retry_after, 0)
        finally:
            admin("DELETE", "faults")
            admin("DELETE", "throttle")
        self.assertEqual(reads("GetSecretParameter", name), 3)


if __name__ == "__main__":
    unittest.main()
