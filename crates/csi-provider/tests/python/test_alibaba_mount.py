"""kube-kms-csi-provider as `--provider alibabacloud`, as the Secrets Store CSI driver calls it:
Mount requests shaped exactly like the driver's (driver.py) for SecretProviderClasses written for
Alibaba's provider (csi-secrets-store-provider-alibabacloud), against the Alibaba Cloud emulator
(KMS, OOS, STS, ECS metadata; both request signatures verified as the gateway does).

Each test reads as one clause of the contract (shared/reference/alibaba-secrets-facts.md §10,
csi-provider-facts.md §1 and §6): what each object type and field mounts (text and binary KMS
secrets, version ids and stages, OOS parameters and their versions, `jmesPath`, aliases,
`pathTranslation`, ARNs), every identity mode of Alibaba's chain (the pod's RRSA role, the
provider's RRSA role, a RAM role, nodePublishSecretRef and provider AccessKeys, the ECS role) and
cross-account roles, every error (a gRPC code and a message naming the object and the field,
never a credential), and the calls made under 50 concurrent Mounts.

crates/csi-provider/tests/alibaba_driver_python.rs starts the emulator and four providers and
runs this module with:

    CSI_ALIBABA_SOCKET             the provider (pod RRSA, nodePublishSecretRef keys, ECS role)
    CSI_ALIBABA_RRSA_SOCKET        a provider with its own RRSA role
    CSI_ALIBABA_RAM_ROLE_SOCKET    a provider assuming a RAM role with its AccessKey
    CSI_ALIBABA_ACCESS_KEY_SOCKET  a provider with its own AccessKey
    CSI_HEALTH_ADDRESS             the first provider's health endpoint (host:port)
    CSI_EMULATOR_URL               the emulator (https://localhost:PORT; admin API under /_emulator/)
    CSI_CA                         the emulator's CA (PEM)
    CSI_ALIBABA_SEED               JSON: what was seeded (values, versions, ARNs, AccessKeys)

Run by hand with those set: python3 -m unittest -v test_alibaba_mount (from this directory).
"""

from __future__ import annotations

import base64
import json
import unittest
import urllib.request
import uuid

import grpc

import driver
import mount_fixture
from driver import Driver, Pod, files_by_path, service_account_token
from mount_fixture import BAD_REQUEST, DENIED, MODE_0644, NOT_FOUND, SEMVER, THROTTLED, _required, admin

RRSA_AUDIENCE = "sts.aliyuncs.com"
NOT_AUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED,)
PRECONDITION = (grpc.StatusCode.FAILED_PRECONDITION,)


class Alibaba:
    """What the harness passes (see the module docstring)."""

    socket: str
    rrsa_socket: str
    ram_role_socket: str
    access_key_socket: str
    seed: dict

    def load(self) -> None:
        self.socket = _required("CSI_ALIBABA_SOCKET")
        self.rrsa_socket = _required("CSI_ALIBABA_RRSA_SOCKET")
        self.ram_role_socket = _required("CSI_ALIBABA_RAM_ROLE_SOCKET")
        self.access_key_socket = _required("CSI_ALIBABA_ACCESS_KEY_SOCKET")
        with open(_required("CSI_ALIBABA_SEED"), encoding="utf-8") as seed:
            self.seed = json.load(seed)
        # The shared helpers (driver-rule checks, the emulator's admin API) read these.
        shared = mount_fixture.S
        shared.socket = self.socket
        shared.health_address = _required("CSI_HEALTH_ADDRESS")
        shared.emulator_url = _required("CSI_EMULATOR_URL").rstrip("/")
        shared.ca = _required("CSI_CA")
        # The Azure suites' default nodePublishSecretRef: never sent here (every call passes its
        # own, or None), but the shared `refused` builds it before looking.
        shared.sp_client_id = shared.sp_client_secret = ""
        driver.stubs()

    def value(self, name: str) -> bytes:
        return self.seed["secrets"][name].encode()

    @property
    def reader(self) -> dict[str, str]:
        """The nodePublishSecretRef Secret of an AccessKey that may read everything."""
        key_id, secret = self.seed["reader"]
        return {"access_key": key_id, "access_secret": secret}

    @property
    def nobody(self) -> dict[str, str]:
        """An AccessKey without any grant."""
        key_id, secret = self.seed["nobody"]
        return {"access_key": key_id, "access_secret": secret}

    def credentials(self) -> list[str]:
        """Every AccessKey secret and value seeded: none may appear in an error message."""
        seed = self.seed
        return [
            seed["reader"][1],
            seed["nobody"][1],
            seed["throttled_key"][1],
            seed["shared"],
            *seed["rotated"],
            *seed["parameter"],
            *seed["secrets"].values(),
        ]


A = Alibaba()


def setUpModule() -> None:  # noqa: N802 (unittest's name)
    A.load()


def objects_yaml(objects: list[dict]) -> str:
    """`objects` as Alibaba's SecretProviderClasses write it: a plain YAML list of mappings;
    scalars quoted (as JSON, valid YAML), `jmesPath` entries as flow mappings."""
    lines = []
    for obj in objects:
        prefix = "- "
        for key, value in obj.items():
            if isinstance(value, list):
                lines.append(f"{prefix}{key}:")
                for entry in value:
                    fields = ", ".join(f"{k}: {json.dumps(v)}" for k, v in entry.items())
                    lines.append(f"    - {{{fields}}}")
            else:
                lines.append(f"{prefix}{key}: {json.dumps(value)}")
            prefix = "  "
    return "\n".join(lines) + "\n"


def spc(objects: list[dict], **parameters: str) -> dict[str, str]:
    """An Alibaba SecretProviderClass's `spec.parameters`, as users write them."""
    return {"region": A.seed["region"], "objects": objects_yaml(objects), **parameters}


def pod_class(objects: list[dict], **parameters: str) -> dict[str, str]:
    """A class whose pod acts as its own RAM role (RRSA)."""
    return spc(
        objects,
        usePodServiceAccountToken="true",
        podServiceAccountRoleArn=A.seed["pod_role_arn"],
        **parameters,
    )


def pod_tokens(pod: Pod, subject: str | None = None) -> dict:
    """The tokens kubelet gives the driver for a CSIDriver requesting audience sts.aliyuncs.com."""
    return {RRSA_AUDIENCE: service_account_token(A.seed["issuer"], pod, audience=RRSA_AUDIENCE, subject=subject)}


class AlibabaTestCase(mount_fixture.ProviderTestCase):
    """Connections to the default provider over both `:authority` forms; Mounts checked
    against the driver's rules, refusals against the codes and names they must carry."""

    def mount(self, parameters: dict[str, str], through: Driver | None = None, **kwargs):
        kwargs.setdefault("node_publish_secret", None)
        return super().mount(parameters, through=through, **kwargs)

    def refused(self, parameters, codes, *needles, through: Driver | None = None, **kwargs) -> str:
        kwargs.setdefault("node_publish_secret", None)
        return super().refused(parameters, codes, *needles, through=through, **kwargs)

    def assert_no_credential_in(self, message: str) -> None:
        for credential in A.credentials():
            self.assertNotIn(credential, message, "a credential or value in an error message")
        self.assertNotIn("eyJ", message, "a JWT in an error message")
        self.assertNotIn(A.seed["reader"][0], message, "an AccessKey id in full")


# =============================================================================================
# Version and health


class VersionAndHealth(AlibabaTestCase):
    def test_every_provider_process_answers_version_and_health_as_kube_kms(self):
        sockets = (A.socket, A.rrsa_socket, A.ram_role_socket, A.access_key_socket)
        for socket in sockets:
            with self.subTest(socket=socket), _connected(socket) as through:
                answer = through.version()
                self.assertEqual((answer.version, answer.runtime_name), ("v1alpha1", "kube-kms-csi-provider"))
                self.assertRegex(answer.runtime_version, SEMVER)
                self.assertEqual(through.health_status("v1alpha1.CSIDriverProvider"), 1)
        self.assertEqual(self.localhost_driver.version().runtime_name, "kube-kms-csi-provider")

    def test_metrics_count_reads_by_object_type_without_names(self):
        self.mount(spc([{"objectName": "db-password"}, {"objectName": "app-param", "objectType": "oos"}]), node_publish_secret=A.reader)
        with urllib.request.urlopen(f"http://{mount_fixture.S.health_address}/metrics", timeout=10) as response:
            text = response.read().decode()
        self.assertIn('object_type="kms"', text)
        self.assertIn('object_type="oos"', text)
        for name in ("db-password", "app-param", A.seed["reader"][0], A.seed["account_id"]):
            self.assertNotIn(name, text, "a metric label holds a name or an identity")


# =============================================================================================
# KMS secrets


class KmsSecrets(AlibabaTestCase):
    def test_a_text_secret_is_mounted_as_stored_with_the_drivers_mode_and_its_version_id(self):
        files, versions = self.mount(spc([{"objectName": "db-password", "objectType": "kms"}]), node_publish_secret=A.reader)
        self.assertEqual(set(files), {"db-password"})
        self.assertEqual(files["db-password"].contents, A.value("db-password"))
        self.assertEqual(files["db-password"].mode, MODE_0644)
        self.assertEqual(set(versions), {"db-password"}, "the id is the file's name, as Alibaba's")
        self.assertTrue(versions["db-password"])

    def test_the_default_object_type_is_kms_and_the_mode_is_the_requests(self):
        files, _ = self.mount(spc([{"objectName": "db-password"}]), node_publish_secret=A.reader, permission="256")
        self.assertEqual(files["db-password"].mode, 0o400)

    def test_a_binary_secret_is_written_as_its_decoded_bytes(self):
        files, _ = self.mount(spc([{"objectName": "tls-blob", "objectAlias": "blob.bin"}]), node_publish_secret=A.reader)
        expected = base64.b64decode(A.seed["binary_b64"], validate=True)
        self.assertEqual(files["blob.bin"].contents, expected)
        self.assertEqual(expected[:4], b"\xff\x00\xfe\x80", "bytes that are not UTF-8")

    def test_objectVersion_and_objectVersionLabel_pick_the_version(self):
        old, new = A.seed["rotated"]
        objects = [
            {"objectName": "rotated", "objectAlias": "current"},
            {"objectName": "rotated", "objectAlias": "previous", "objectVersionLabel": "ACSPrevious"},
            {"objectName": "rotated", "objectAlias": "v1", "objectVersion": "v1"},
            {"objectName": "rotated", "objectAlias": "both", "objectVersion": "v2", "objectVersionLabel": "ACSCurrent"},
        ]
        files, versions = self.mount(spc(objects), node_publish_secret=A.reader)
        contents = {path: file.contents for path, file in files.items()}
        self.assertEqual(contents, {"current": new.encode(), "previous": old.encode(), "v1": old.encode(), "both": new.encode()})
        self.assertEqual(versions, {"current": "v2", "previous": "v1", "v1": "v1", "both": "v2"})

    def test_a_version_and_stage_that_match_no_version_are_refused(self):
        self.refused(
            spc([{"objectName": "rotated", "objectVersion": "v1", "objectVersionLabel": "ACSCurrent"}]),
            PRECONDITION,
            "objectName:rotated",
            "InvalidParameter",
            node_publish_secret=A.reader,
        )

    def test_path_translation_replaces_slashes_by_default_and_can_be_changed_or_off(self):
        value = A.value("app/config")
        for parameters, path in [({}, "app_config"), ({"pathTranslation": "-"}, "app-config"), ({"pathTranslation": "False"}, "app/config")]:
            with self.subTest(**parameters):
                files, versions = self.mount(spc([{"objectName": "app/config"}], **parameters), node_publish_secret=A.reader)
                self.assertEqual({p: f.contents for p, f in files.items()}, {path: value})
                self.assertEqual(set(versions), {path})

    def test_an_arn_names_the_secret_and_its_translated_file(self):
        arn = f"acs:kms:{A.seed['region']}:{A.seed['account_id']}:secret/db-password"
        files, _ = self.mount(spc([{"objectName": arn}]), node_publish_secret=A.reader)
        path = arn.replace("/", "_")
        self.assertEqual(files[path].contents, A.value("db-password"))

    def test_jmesPath_writes_each_field_to_its_own_file_beside_the_secret(self):
        config = json.loads(A.value("app/config"))
        objects = [
            {
                "objectName": "app/config",
                "objectAlias": "config.json",
                "jmesPath": [
                    {"path": "username", "objectAlias": "username"},
                    {"path": "password", "objectAlias": "db/password"},
                    {"path": "port", "objectAlias": "port"},
                    {"path": "nested.host", "objectAlias": "host"},
                ],
            }
        ]
        files, versions = self.mount(spc(objects), node_publish_secret=A.reader)
        self.assertEqual(files["config.json"].contents, A.value("app/config"))
        self.assertEqual(files["username"].contents, config["username"].encode())
        self.assertEqual(files["db_password"].contents, config["password"].encode(), "aliases are translated")
        self.assertEqual(files["port"].contents, b"5432", "a number as compact JSON")
        self.assertEqual(files["host"].contents, b"db.payments.internal")
        self.assertEqual(len({versions[path] for path in files}), 1, "every field carries the secret's version")

    def test_kms_and_oos_objects_of_one_name_need_their_own_aliases(self):
        objects = [
            {"objectName": "db-password", "objectType": "kms", "objectAlias": "db-kms"},
            {"objectName": "app-param", "objectType": "oos", "objectAlias": "db-oos"},
        ]
        files, _ = self.mount(spc(objects), node_publish_secret=A.reader)
        self.assertEqual(set(files), {"db-kms", "db-oos"})


# =============================================================================================
# OOS secret parameters


class OosParameters(AlibabaTestCase):
    def test_a_parameter_is_decrypted_and_reports_its_parameter_version(self):
        first, latest = A.seed["parameter"]
        objects = [
            {"objectName": "app-param", "objectType": "oos"},
            {"objectName": "app-param", "objectType": "oos", "objectVersion": "1", "objectAlias": "app-param-1"},
        ]
        files, versions = self.mount(spc(objects), node_publish_secret=A.reader)
        self.assertEqual(files["app-param"].contents, latest.encode())
        self.assertEqual(files["app-param-1"].contents, first.encode())
        self.assertEqual(versions, {"app-param": "2", "app-param-1": "1"})

    def test_a_parameter_version_outside_1_to_100_is_refused_before_any_call(self):
        for version in ("0", "101", "v1"):
            with self.subTest(version=version):
                self.refused(
                    spc([{"objectName": "app-param", "objectType": "oos", "objectVersion": version}]),
                    BAD_REQUEST,
                    "objectVersion",
                    "ParameterVersion",
                    node_publish_secret=A.reader,
                )


# =============================================================================================
# Identities


class Identities(AlibabaTestCase):
    def test_the_pods_own_role_is_assumed_with_its_service_account_token(self):
        pod = Pod()
        files, _ = self.mount(pod_class([{"objectName": "db-password"}, {"objectName": "app-param", "objectType": "oos"}]), pod=pod, tokens=pod_tokens(pod))
        self.assertEqual(files["db-password"].contents, A.value("db-password"))
        self.assertEqual(files["app-param"].contents, A.seed["parameter"][1].encode())

    def test_the_pods_token_may_come_in_secrets_as_kubernetes_1_35_sends_it(self):
        pod = Pod()
        secrets = {driver.SERVICE_ACCOUNT_TOKENS: driver.tokens_attribute(pod_tokens(pod))}
        files, _ = self.mount(pod_class([{"objectName": "db-password"}]), pod=pod, node_publish_secret=secrets)
        self.assertEqual(files["db-password"].contents, A.value("db-password"))

    def test_a_pod_whose_service_account_the_role_does_not_trust_is_refused(self):
        pod = Pod(service_account="intruder")
        self.refused(pod_class([{"objectName": "db-password"}]), NOT_AUTHENTICATED, "pod's RAM role", "AuthenticationFail", pod=pod, tokens=pod_tokens(pod))

    def test_the_pods_role_may_only_read_what_it_was_granted(self):
        pod = Pod()
        self.refused(pod_class([{"objectName": "tls-blob"}]), DENIED, "objectName:tls-blob", "Forbidden.NoPermission", pod=pod, tokens=pod_tokens(pod))

    def test_a_class_asking_for_the_pods_identity_never_falls_back_to_another(self):
        self.refused(pod_class([{"objectName": "db-password"}]), PRECONDITION, RRSA_AUDIENCE, "tokenRequests", node_publish_secret=A.reader)
        pod = Pod(service_account="bare")
        self.refused(
            spc([{"objectName": "db-password"}], usePodServiceAccountToken="true"),
            PRECONDITION,
            "ack.alibabacloud.com/role-arn",
            "payments/bare",
            pod=pod,
            tokens=pod_tokens(pod),
            node_publish_secret=A.reader,
        )

    def test_the_pods_role_may_come_from_its_service_accounts_annotation_as_alibabas_does(self):
        pod = Pod()
        files, _ = self.mount(spc([{"objectName": "db-password"}], usePodServiceAccountToken="true"), pod=pod, tokens=pod_tokens(pod))
        self.assertEqual(files["db-password"].contents, A.value("db-password"))

    def test_a_node_publish_secret_access_key_is_used_and_checked(self):
        files, _ = self.mount(spc([{"objectName": "db-password"}]), node_publish_secret=A.reader)
        self.assertEqual(files["db-password"].contents, A.value("db-password"))
        self.refused(spc([{"objectName": "db-password"}]), DENIED, "Forbidden.NoPermission", "kms:GetSecretValue", node_publish_secret=A.nobody)
        forged = {**A.reader, "access_secret": "not-the-secret"}
        self.refused(spc([{"objectName": "db-password"}]), NOT_AUTHENTICATED, "SignatureDoesNotMatch", node_publish_secret=forged)
        upper = {"ACCESS_KEY": A.reader["access_key"], "Access_Secret": A.reader["access_secret"]}
        self.mount(spc([{"objectName": "db-password"}]), node_publish_secret=upper)

    def test_without_any_credential_the_ecs_instances_role_is_lent(self):
        files, _ = self.mount(spc([{"objectName": "db-password"}]))
        self.assertEqual(files["db-password"].contents, A.value("db-password"))
        self.refused(spc([{"objectName": "app/config"}]), DENIED, "objectName:app/config")

    def test_the_providers_own_rrsa_role(self):
        with _connected(A.rrsa_socket) as through:
            files, _ = self.mount(spc([{"objectName": "tls-blob"}]), through=through)
            self.assertEqual(files["tls-blob"].contents, base64.b64decode(A.seed["binary_b64"]))

    def test_a_ram_role_assumed_with_the_providers_access_key(self):
        with _connected(A.ram_role_socket) as through:
            files, _ = self.mount(spc([{"objectName": "db-password"}]), through=through)
            self.assertEqual(files["db-password"].contents, A.value("db-password"))

    def test_the_providers_access_key_comes_after_a_node_publish_secret(self):
        with _connected(A.access_key_socket) as through:
            files, _ = self.mount(spc([{"objectName": "db-password"}]), through=through)
            self.assertEqual(files["db-password"].contents, A.value("db-password"))
            self.refused(spc([{"objectName": "db-password"}]), DENIED, "Forbidden.NoPermission", through=through, node_publish_secret=A.nobody)

    def test_a_cross_account_role_is_assumed_for_its_object(self):
        objects = [
            {"objectName": "shared", "crossAccountRoleArn": A.seed["cross_role_arn"], "objectAlias": "shared"},
            {"objectName": "db-password"},
        ]
        files, _ = self.mount(spc(objects), node_publish_secret=A.reader)
        self.assertEqual(files["shared"].contents, A.seed["shared"].encode())
        self.assertEqual(files["db-password"].contents, A.value("db-password"))
        self.refused(spc([{"objectName": "shared"}]), NOT_FOUND, "objectName:shared", node_publish_secret=A.reader)


class _connected:
    """A driver connection to another provider's socket, closed on exit."""

    def __init__(self, socket: str):
        self.driver = Driver(socket, authority=socket)

    def __enter__(self) -> Driver:
        return self.driver

    def __exit__(self, *exc) -> None:
        self.driver.close()


# =============================================================================================
# Errors


class Errors(AlibabaTestCase):
    def test_a_missing_object_is_not_found_naming_it_as_alibabas_provider_shapes_errors(self):
        message = self.refused(spc([{"objectName": "missing"}]), NOT_FOUND, "failed to get objectType:kms, objectName:missing", "Forbidden.ResourceNotFound", node_publish_secret=A.reader)
        self.assertTrue(message.startswith("failed to mount objects, error: "), message)
        self.refused(spc([{"objectName": "missing", "objectType": "oos"}]), NOT_FOUND, "objectType:oos", "EntityNotExists.Parameter", node_publish_secret=A.reader)
        self.refused(spc([{"objectName": "rotated", "objectVersion": "v9"}]), NOT_FOUND, "objectVersion:v9", node_publish_secret=A.reader)

    def test_one_failing_object_fails_the_whole_mount(self):
        self.refused(spc([{"objectName": "db-password"}, {"objectName": "missing"}]), NOT_FOUND, "objectName:missing", node_publish_secret=A.reader)

    def test_class_mistakes_name_the_object_and_the_field(self):
        cases = [
            ({"objects": ""}, "objects is not set"),
            ({"objects": "array:\n  - |\n    objectName: db-password\n"}, "plain YAML list"),
            ({"objects": objects_yaml([{"objectName": "a", "objectType": "secret"}])}, "objectType"),
            ({"objects": objects_yaml([{"objectAlias": "a"}])}, "Object name must be specified"),
            ({"objects": objects_yaml([{"objectName": "a"}, {"objectName": "a"}])}, "duplicate object name"),
            ({"objects": objects_yaml([{"objectName": "a", "objectAlias": "f"}, {"objectName": "b", "objectAlias": "f"}])}, "duplicate object alias"),
            ({"objects": objects_yaml([{"objectName": "a", "kmsEndpoint": "kms.attacker.example"}])}, "kmsEndpoint"),
            ({"objects": objects_yaml([{"objectName": "a", "kmsEndpoint": "https://kms-vpc.cn-hangzhou.aliyuncs.com/x"}])}, "kmsEndpoint"),
            ({"objects": objects_yaml([{"objectName": "a", "crossAccountRoleArn": "role/x"}])}, "crossAccountRoleArn"),
            ({"objects": objects_yaml([{"objectName": "a", "jmesPath": [{"path": "a.["}]}])}, "jmesPath"),
            ({"objects": objects_yaml([{"objectName": "a", "objectAlias": "../escape"}]), "pathTranslation": "False"}, "'..'"),
            ({"objects": objects_yaml([{"objectName": "a"}]), "pathTranslation": "ab"}, "pathTranslation"),
            ({"objects": objects_yaml([{"objectName": "a"}]), "region": "evil.example/"}, "region"),
            ({"objects": objects_yaml([{"objectName": "a"}]), "usePodServiceAccountToken": "maybe"}, "usePodServiceAccountToken"),
        ]
        for parameters, needle in cases:
            with self.subTest(needle=needle):
                self.refused({"region": A.seed["region"], **parameters}, BAD_REQUEST, needle, node_publish_secret=A.reader)

    def test_a_jmesPath_on_a_secret_that_is_not_json_or_matches_nothing(self):
        self.refused(
            spc([{"objectName": "db-password", "jmesPath": [{"path": "user", "objectAlias": "user"}]}]),
            PRECONDITION,
            "objectName:db-password",
            "not a JSON document",
            node_publish_secret=A.reader,
        )
        self.refused(
            spc([{"objectName": "app/config", "jmesPath": [{"path": "missing", "objectAlias": "m"}]}]),
            PRECONDITION,
            "matched nothing",
            node_publish_secret=A.reader,
        )

    def test_throttling_past_the_deadline_is_resource_exhausted_saying_when_to_retry(self):
        key_id, secret = A.seed["throttled_key"]
        throttled = {"access_key": key_id, "access_secret": secret}
        admin("POST", "faults", {"action": "GetSecretValue", "name": "throttled", "fault": {"kind": "throttle", "retry_after_millis": 60000}})
        try:
            message = self.refused(spc([{"objectName": "throttled"}]), THROTTLED, "Rejected.Throttling", "retry after 60 s", node_publish_secret=throttled, timeout=10)
            self.assertIn("objectName:throttled", message)
        finally:
            admin("DELETE", "faults")
        # The identity waits out its retry-after (no call is sent for it); another identity's
        # reads of the same endpoint go on.
        self.refused(spc([{"objectName": "db-password"}]), THROTTLED, "retry after", node_publish_secret=throttled, timeout=10)
        files, _ = self.mount(spc([{"objectName": "db-password"}]), node_publish_secret=A.reader)
        self.assertEqual(files["db-password"].contents, A.value("db-password"))


# =============================================================================================
# Calls under load


class Traffic(AlibabaTestCase):
    def test_fifty_concurrent_pods_cost_one_sts_call_and_one_read(self):
        admin("POST", "faults", {"action": "GetSecretValue", "name": "storm", "fault": {"kind": "latency", "millis": 300}})
        admin("DELETE", "counters")
        try:
            pod = Pod(name=f"storm-{uuid.uuid4().hex[:6]}")
            tokens = pod_tokens(pod)
            futures = [self.path_driver.mount_future(pod_class([{"objectName": "storm"}]), pod=pod, tokens=tokens) for _ in range(50)]
            for future in futures:
                files = files_by_path(future.result())
                self.assertEqual(files["storm"].contents, A.value("storm"))
        finally:
            admin("DELETE", "faults")
        reads = {(entry["action"], entry["name"]): entry["requests"] for entry in admin("GET", "counters/reads")}
        self.assertEqual(reads.get(("GetSecretValue", "storm")), 1, reads)
        counts = admin("GET", "counters")
        self.assertEqual(counts.get("AssumeRoleWithOIDC", {}).get("requests", 0), 1, counts)


if __name__ == "__main__":
    unittest.main()
