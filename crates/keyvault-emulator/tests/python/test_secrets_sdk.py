"""Fidelity suite: Microsoft's Python SDK (azure-keyvault-secrets, azure-identity) against the
keyvault-emulator's Secrets API, over HTTPS with the emulator's CA.

Run by crates/keyvault-emulator/tests/python_sdk.rs, which starts a Key Vault emulator (page size
2) and passes its URL in KV_* environment variables. Every secret operation the emulator serves is
driven here by a client we did not write, at the SDK's default api-version and at 7.4 (what the
CSI provider's Go SDK sends).
"""

import datetime
import time
import unittest

import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from vault_fixture import API, AUTHORITY, CA, NO_RETRY, TENANT, VAULT, admin, bearer, credential, register, unique

ALL_SECRET_PERMISSIONS = [
    "secrets/get",
    "secrets/list",
    "secrets/set",
    "secrets/delete",
    "secrets/recover",
    "secrets/purge",
]


def secret_client(cred, **kwargs):
    return SecretClient(VAULT, cred, verify_challenge_resource=False, **NO_RETRY, **kwargs)


def raw(method, path, token, api=API, **params):
    query = {"api-version": api, **params}
    return requests.request(
        method, AUTHORITY + path, params=query, headers={"Authorization": f"Bearer {token}"}, verify=CA, timeout=30
    )


def reads(name):
    return {r["version"]: r["requests"] for r in admin("GET", "counters/reads") if r["kind"] == "secret" and r["name"] == name.lower()}


class SecretLifecycle(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.credential = credential()
        cls.client = secret_client(cls.credential)
        cls.token = bearer(cls.credential)

    def test_set_get_latest_and_by_version(self):
        name = unique("db")
        first = self.client.set_secret(name, "one", content_type="text/plain", tags={"team": "kms"})
        self.assertRegex(first.properties.version, r"^[0-9a-f]{32}$")
        self.assertEqual(first.id, f"{AUTHORITY}/secrets/{name}/{first.properties.version}")
        self.assertEqual(first.value, "one")
        self.assertEqual(first.properties.content_type, "text/plain")
        self.assertEqual(first.properties.tags, {"team": "kms"})
        self.assertTrue(first.properties.enabled)
        self.assertEqual(first.properties.recovery_level, "Recoverable+Purgeable")
        self.assertIsNone(first.properties.managed)
        second = self.client.set_secret(name, "two")
        self.assertNotEqual(second.properties.version, first.properties.version)
        self.assertEqual(self.client.get_secret(name).value, "two")
        self.assertEqual(self.client.get_secret(name, first.properties.version).value, "one")
        self.assertGreater(second.properties.created_on, first.properties.created_on)

    def test_missing_secret_and_version_are_secret_not_found(self):
        with self.assertRaises(ResourceNotFoundError) as raised:
            self.client.get_secret(unique("none"))
        self.assertEqual(raised.exception.error.code, "SecretNotFound")
        name = unique("db")
        self.client.set_secret(name, "v")
        with self.assertRaises(ResourceNotFoundError) as raised:
            self.client.get_secret(name, "0" * 32)
        self.assertEqual(raised.exception.error.code, "SecretNotFound")
        self.assertIn("was not found in this key vault", raised.exception.error.message)

    def test_lists_page_with_next_link(self):
        name = unique("paged")
        made = [self.client.set_secret(name, f"v{i}").properties.version for i in range(5)]
        pages = list(self.client.list_properties_of_secret_versions(name, max_page_size=2).by_page())
        versions = [p.version for page in pages for p in page]
        self.assertEqual(len(pages), 3)
        self.assertEqual(sorted(versions), sorted(made))
        # The service orders versions by version id, and never sends values in lists.
        self.assertEqual(versions, sorted(versions))
        first = raw("GET", f"/secrets/{name}/versions", self.token, maxresults="2").json()
        self.assertTrue(first["nextLink"].startswith(f"{AUTHORITY}/secrets/{name}/versions?api-version={API}&$skiptoken="))
        self.assertTrue(all("value" not in item and item["id"].count("/") == 5 for item in first["value"]))
        for other in range(3):
            self.client.set_secret(unique("list"), "x")
        listed = list(self.client.list_properties_of_secrets())
        names = [p.name for p in listed]
        self.assertIn(name, names)
        self.assertEqual(len(names), len(set(names)))
        item = next(p for p in listed if p.name == name)
        self.assertEqual(item.id, f"{AUTHORITY}/secrets/{name}")
        self.assertIsNone(item.version)

    def test_update_attributes_and_the_disabled_rule(self):
        name = unique("upd")
        secret = self.client.set_secret(name, "v")
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        updated = self.client.update_secret_properties(
            name,
            secret.properties.version,
            content_type="application/json",
            tags={"a": "b"},
            not_before=now - datetime.timedelta(days=2),
            expires_on=now - datetime.timedelta(days=1),
        )
        self.assertEqual(updated.content_type, "application/json")
        self.assertEqual(updated.tags, {"a": "b"})
        self.assertEqual(updated.expires_on, now - datetime.timedelta(days=1))
        # Expired and not-yet-valid secrets are still returned, as the service does.
        self.assertEqual(self.client.get_secret(name).value, "v")
        self.client.update_secret_properties(name, not_before=now + datetime.timedelta(days=1), expires_on=None)
        self.assertEqual(self.client.get_secret(name).value, "v")

        self.client.update_secret_properties(name, enabled=False)
        with self.assertRaises(HttpResponseError) as raised:
            self.client.get_secret(name)
        self.assertEqual(raised.exception.status_code, 403)
        self.assertEqual(raised.exception.error.code, "Forbidden")
        self.assertEqual(raised.exception.error.innererror["code"], "SecretDisabled")
        self.assertEqual(raised.exception.error.message, "Operation get is not allowed on a disabled secret.")
        listed = {p.name: p for p in self.client.list_properties_of_secrets()}
        self.assertFalse(listed[name].enabled)
        self.client.update_secret_properties(name, enabled=True)
        self.assertEqual(self.client.get_secret(name).value, "v")

    def test_soft_delete_recover_purge(self):
        name = unique("del")
        self.client.set_secret(name, "v")
        deleted = self.client.begin_delete_secret(name, _polling_interval=0).result()
        self.assertEqual(deleted.recovery_id, f"{AUTHORITY}/deletedsecrets/{name}")
        self.assertIsNotNone(deleted.deleted_date)
        self.assertGreater(deleted.scheduled_purge_date, deleted.deleted_date)
        with self.assertRaises(ResourceNotFoundError):
            self.client.get_secret(name)
        self.assertEqual(self.client.get_deleted_secret(name).name, name)
        self.assertIn(name, [d.name for d in self.client.list_deleted_secrets()])
        with self.assertRaises(ResourceExistsError) as raised:
            self.client.set_secret(name, "again")
        self.assertEqual(raised.exception.status_code, 409)
        self.assertEqual(raised.exception.error.innererror["code"], "ObjectIsDeletedButRecoverable")
        recovered = self.client.begin_recover_deleted_secret(name, _polling_interval=0).result()
        self.assertEqual(recovered.name, name)
        self.assertEqual(self.client.get_secret(name).value, "v")
        self.client.begin_delete_secret(name, _polling_interval=0).result()
        self.client.purge_deleted_secret(name)
        with self.assertRaises(ResourceNotFoundError):
            self.client.get_deleted_secret(name)
        self.assertEqual(self.client.set_secret(name, "new").value, "new")

    def test_service_limits(self):
        with self.assertRaises(HttpResponseError) as raised:
            self.client.set_secret(unique("big"), "x" * (25 * 1024 + 1))
        self.assertEqual(raised.exception.status_code, 400)
        self.assertEqual(self.client.set_secret(unique("big"), "x" * (25 * 1024)).value, "x" * 25 * 1024)

    def test_older_api_versions_work_too(self):
        client = secret_client(self.credential, api_version="7.4")
        name = unique("old")
        client.set_secret(name, "v")
        self.assertEqual(client.get_secret(name).value, "v")
        self.assertEqual(raw("GET", f"/secrets/{name}/", self.token, api="2026-04-01").json()["value"], "v")


class SecretPermissions(unittest.TestCase):
    def test_each_operation_needs_its_secret_permission(self):
        owner = secret_client(credential())
        name = unique("perm")
        owner.set_secret(name, "v")
        reader = secret_client(credential(["secrets/get"]))
        self.assertEqual(reader.get_secret(name).value, "v")
        with self.assertRaises(HttpResponseError) as raised:
            list(reader.list_properties_of_secrets())
        self.assertEqual(raised.exception.status_code, 403)
        self.assertIn("does not have secrets list permission", raised.exception.error.message)
        with self.assertRaises(HttpResponseError) as raised:
            reader.set_secret(name, "w")
        self.assertIn("does not have secrets set permission", raised.exception.error.message)
        with self.assertRaises(HttpResponseError):
            reader.begin_delete_secret(name, _polling_interval=0)
        keys_only = secret_client(credential(["get", "list", "wrapKey", "unwrapKey"]))
        with self.assertRaises(HttpResponseError) as raised:
            keys_only.get_secret(name)
        self.assertEqual(raised.exception.status_code, 403)
        self.assertIn("does not have secrets get permission", raised.exception.error.message)

    def test_revoking_a_permission_takes_effect_at_once(self):
        client_id, secret = register(ALL_SECRET_PERMISSIONS)
        client = secret_client(
            ClientSecretCredential(TENANT, client_id, secret, authority=AUTHORITY, disable_instance_discovery=True)
        )
        name = unique("rev")
        client.set_secret(name, "v")
        admin("POST", f"identities/{client_id}/revoke", {"permissions": ["secrets/get"]})
        with self.assertRaises(HttpResponseError) as raised:
            client.get_secret(name)
        self.assertEqual(raised.exception.status_code, 403)
        admin("POST", f"identities/{client_id}/grant", {"permissions": ["secrets/get"]})
        self.assertEqual(client.get_secret(name).value, "v")


class SecretFaultsAndCounters(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.credential = credential()
        cls.client = secret_client(cls.credential)

    def tearDown(self):
        admin("DELETE", "faults")
        admin("DELETE", "throttle")

    def test_reads_are_counted_per_name_and_version(self):
        name = unique("count")
        version = self.client.set_secret(name, "v").properties.version
        before = reads(name)
        self.client.get_secret(name)
        self.client.get_secret(name)
        self.client.get_secret(name, version)
        after = reads(name)
        self.assertEqual(after.get("latest", 0) - before.get("latest", 0), 2)
        self.assertEqual(after.get(version, 0) - before.get(version, 0), 1)
        counts = admin("GET", "counters")["get_secret"]
        self.assertGreaterEqual(counts["succeeded"], 3)

    def test_secret_get_budget_answers_429_with_retry_after(self):
        name = unique("throttle")
        self.client.set_secret(name, "v")
        admin("PUT", "throttle", {"secret_get": 2, "window_seconds": 60})
        self.client.get_secret(name)
        self.client.get_secret(name)
        with self.assertRaises(HttpResponseError) as raised:
            self.client.get_secret(name)
        self.assertEqual(raised.exception.status_code, 429)
        self.assertEqual(raised.exception.error.code, "Throttled")
        retry_after = int(raised.exception.response.headers["Retry-After"])
        self.assertTrue(1 <= retry_after <= 60, retry_after)
        # Other secret operations draw from other budgets.
        self.client.set_secret(name, "w")
        admin("DELETE", "throttle")
        self.assertEqual(self.client.get_secret(name).value, "w")

    def test_a_fault_can_target_one_secret(self):
        name, other = unique("fault"), unique("fine")
        self.client.set_secret(name, "v")
        self.client.set_secret(other, "v")
        admin("POST", "faults", {"operation": "get_secret", "name": name, "fault": {"kind": "status", "status": 503}, "count": 1})
        self.assertEqual(self.client.get_secret(other).value, "v")
        with self.assertRaises(HttpResponseError) as raised:
            self.client.get_secret(name)
        self.assertEqual(raised.exception.status_code, 503)
        self.assertEqual(self.client.get_secret(name).value, "v")
        admin("POST", "faults", {"operation": "get_secret", "fault": {"kind": "throttle", "retry_after": 1}, "count": 1})
        start = time.monotonic()
        # With retries on, azure-core honours the Retry-After and succeeds on the second try.
        retrying = SecretClient(VAULT, self.credential, verify_challenge_resource=False)
        self.assertEqual(retrying.get_secret(name).value, "v")
        self.assertGreaterEqual(time.monotonic() - start, 0.9)


if __name__ == "__main__":
    unittest.main()
