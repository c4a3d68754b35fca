"""kube-apiserver's side of the kube-kms socket, spoken by an independent gRPC client.

The client is Python grpcio with stubs generated at run time from proto/ (never from our Rust
code and never committed), so these tests check the wire contract as a second implementation
sees it: exact gRPC status codes, the size limits kube-apiserver enforces, v1beta1 on the same
socket, and a key rotation picked up without a restart.

tests/python_client.rs starts the server and runs this module with:

    KUBE_KMS_BIN        the kube-kms binary (for `keys rotate`)
    KUBE_KMS_SOCKET     the Unix socket the server listens on
    KUBE_KMS_STATE_DIR  the server's --state-dir
    KUBE_KMS_PID        the server's process id (for SIGHUP)

Run by hand against a running server with the same variables set:

    python3 -m unittest -v tests/python/test_kms_socket.py
"""

from __future__ import annotations

import concurrent.futures
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

import grpc
from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"

# kube-apiserver's call timeout (EncryptionConfiguration `timeout`, default 3s).
CALL_TIMEOUT_S = 3.0
# kube-apiserver's limits (k8s.io/apiserver envelope/kmsv2).
MAX_CIPHERTEXT = 1024
MAX_KEY_ID = 1024
MAX_ANNOTATIONS_TOTAL = 32 * 1024
# The largest v2 plaintext kube-kms accepts: 1024 - format byte - nonce (12) - tag (16).
MAX_V2_PLAINTEXT = 995

WRAPPED_KEK_ANNOTATION = "kek.kube-kms.io"
KEY_VERSION_ANNOTATION = "version.kube-kms.io"

# What a request that is malformed, altered or names a key the plugin cannot use may get back.
CLEAN_REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)

# A lowercase RFC 1123 DNS subdomain with at least two labels (no '/', no upper case).
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
ANNOTATION_KEY = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
# semver 2.0.0 (semver.org's suggested regular expression).
_SEMVER_NUM = r"(0|[1-9]\d*)"
_SEMVER_PRE = r"(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
SEMVER = re.compile(
    rf"^{_SEMVER_NUM}\.{_SEMVER_NUM}\.{_SEMVER_NUM}"
    rf"(-{_SEMVER_PRE}(\.{_SEMVER_PRE})*)?"
    r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$"
)

# Filled by setUpModule.
v2_pb2 = None
v2_grpc = None
v1_pb2 = None
v1_grpc = None
_stub_dir: str | None = None


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: run this module through `cargo test --test python_client`, "
            "or set KUBE_KMS_BIN, KUBE_KMS_SOCKET, KUBE_KMS_STATE_DIR and KUBE_KMS_PID for a "
            "running server"
        )
    return value


def _generate_stubs(out_dir: str) -> None:
    """Compiles proto/v2/api.proto and proto/v1beta1/api.proto into out_dir with grpc_tools."""
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "v2/api.proto",
        "v1beta1/api.proto",
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with exit code {code}: {' '.join(args)}")
    # Both protos are named api.proto; their packages v2 and v1beta1 become Python packages.
    for package in ("v2", "v1beta1"):
        Path(out_dir, package, "__init__.py").touch()


def setUpModule() -> None:  # noqa: N802 (unittest's name)
    global v2_pb2, v2_grpc, v1_pb2, v1_grpc, _stub_dir
    for name in ("KUBE_KMS_BIN", "KUBE_KMS_SOCKET", "KUBE_KMS_STATE_DIR", "KUBE_KMS_PID"):
        _required_env(name)
    _stub_dir = tempfile.mkdtemp(prefix="kube-kms-stubs-")
    _generate_stubs(_stub_dir)
    sys.path.insert(0, _stub_dir)
    v2_pb2 = importlib.import_module("v2.api_pb2")
    v2_grpc = importlib.import_module("v2.api_pb2_grpc")
    v1_pb2 = importlib.import_module("v1beta1.api_pb2")
    v1_grpc = importlib.import_module("v1beta1.api_pb2_grpc")


def tearDownModule() -> None:  # noqa: N802 (unittest's name)
    if _stub_dir is not None:
        if sys.path and sys.path[0] == _stub_dir:
            sys.path.pop(0)
        shutil.rmtree(_stub_dir, ignore_errors=True)


def open_channel(authority: str | None = "localhost") -> grpc.Channel:
    """A channel to the plugin the way kube-apiserver's KMS v2 client opens one: plaintext
    HTTP/2 over the Unix socket with :authority localhost. `authority=None` keeps grpcio's own
    default for a `unix:` target (the percent-encoded socket path)."""
    options = [
        # Let the client send more than the server accepts, so the server's limit is tested.
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    if authority is not None:
        options.append(("grpc.default_authority", authority))
    channel = grpc.insecure_channel("unix://" + os.environ["KUBE_KMS_SOCKET"], options=options)
    grpc.channel_ready_future(channel).result(timeout=10)
    return channel


class KmsTestCase(unittest.TestCase):
    """One channel per test class, like kube-apiserver's one connection per provider."""

    channel: grpc.Channel

    @classmethod
    def setUpClass(cls) -> None:
        cls.channel = open_channel()
        cls.v2 = v2_grpc.KeyManagementServiceStub(cls.channel)
        cls.v1 = v1_grpc.KeyManagementServiceStub(cls.channel)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.channel.close()

    # -- calls, with kube-apiserver's deadline and WaitForReady --

    def status(self):
        return self.v2.Status(
            v2_pb2.StatusRequest(), timeout=CALL_TIMEOUT_S, wait_for_ready=True
        )

    def encrypt(self, plaintext: bytes, uid: str = "encrypt-uid"):
        return self.v2.Encrypt(
            v2_pb2.EncryptRequest(plaintext=plaintext, uid=uid),
            timeout=CALL_TIMEOUT_S,
            wait_for_ready=True,
        )

    def decrypt(self, ciphertext: bytes, key_id: str, annotations, uid: str = "decrypt-uid"):
        return self.v2.Decrypt(
            v2_pb2.DecryptRequest(
                ciphertext=ciphertext, uid=uid, key_id=key_id, annotations=dict(annotations)
            ),
            timeout=CALL_TIMEOUT_S,
            wait_for_ready=True,
        )

    def decrypt_response(self, response, **changes):
        """Decrypts an EncryptResponse as kube-apiserver would, with fields replaced by
        `changes` (ciphertext=, key_id=, annotations=)."""
        return self.decrypt(
            changes.get("ciphertext", response.ciphertext),
            changes.get("key_id", response.key_id),
            changes.get("annotations", response.annotations),
        )

    # -- assertions --

    def assert_code(self, codes, call, *args, **kwargs) -> grpc.RpcError:
        """Runs `call` and asserts it fails with one of `codes` (a code or a tuple of codes)."""
        if isinstance(codes, grpc.StatusCode):
            codes = (codes,)
        with self.assertRaises(grpc.RpcError) as caught:
            call(*args, **kwargs)
        code = caught.exception.code()
        self.assertIn(
            code,
            codes,
            f"expected {[c.name for c in codes]}, got {code.name}: {caught.exception.details()!r}",
        )
        return caught.exception

    def assert_clean_refusal(self, call, *args, **kwargs) -> grpc.RpcError:
        """InvalidArgument or FailedPrecondition: never Unknown or Internal (a panic or an
        unmapped error), never OK."""
        return self.assert_code(CLEAN_REFUSALS, call, *args, **kwargs)


def env_without_kube_kms_settings() -> dict[str, str]:
    """This process's environment minus every KUBE_KMS_* variable: the CLI reads its settings
    from them, and the harness's names (KUBE_KMS_BIN, KUBE_KMS_PID) are not settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KUBE_KMS_")}


def run_keys(action: str) -> subprocess.CompletedProcess:
    """`kube-kms keys ACTION` on the server's key ring. The state dir goes in the environment,
    which every placement of the config flags honours (see TestKeysCommandLine)."""
    env = env_without_kube_kms_settings()
    env["KUBE_KMS_STATE_DIR"] = os.environ["KUBE_KMS_STATE_DIR"]
    return subprocess.run(
        [os.environ["KUBE_KMS_BIN"], "keys", action],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 1 << bit
    return bytes(changed)


class TestV2Status(KmsTestCase):
    def test_status_reports_v2_ok_and_a_key_id(self):
        response = self.status()
        self.assertEqual(response.version, "v2")
        self.assertEqual(response.healthz, "ok")
        self.assertTrue(response.key_id, "key_id must not be empty")
        self.assertLessEqual(len(response.key_id.encode()), MAX_KEY_ID)

    def test_status_is_stable_between_calls(self):
        first = self.status()
        second = self.status()
        self.assertEqual(first.version, second.version)
        self.assertEqual(first.key_id, second.key_id)


class TestV2Encrypt(KmsTestCase):
    def test_encrypt_key_id_equals_status_key_id(self):
        status = self.status()
        response = self.encrypt(os.urandom(32))
        self.assertEqual(response.key_id, status.key_id)

    def test_encrypt_response_respects_kube_apiserver_limits(self):
        for size in (1, 32, MAX_V2_PLAINTEXT):
            with self.subTest(plaintext_len=size):
                response = self.encrypt(os.urandom(size))
                self.assertTrue(response.ciphertext, "ciphertext must not be empty")
                self.assertLessEqual(len(response.ciphertext), MAX_CIPHERTEXT)
                self.assertTrue(response.key_id)
                self.assertLessEqual(len(response.key_id.encode()), MAX_KEY_ID)
                self.assertIn(WRAPPED_KEK_ANNOTATION, response.annotations)
                self.assertIn(KEY_VERSION_ANNOTATION, response.annotations)
                total = 0
                for key, value in response.annotations.items():
                    self.assertRegex(key, ANNOTATION_KEY)
                    self.assertNotIn("/", key)
                    self.assertLessEqual(len(key), 253)
                    total += len(key.encode()) + len(value)
                self.assertLessEqual(total, MAX_ANNOTATIONS_TOTAL)

    def test_round_trip_1_32_and_995_bytes(self):
        for size in (1, 32, MAX_V2_PLAINTEXT):
            with self.subTest(plaintext_len=size):
                plaintext = os.urandom(size)
                response = self.encrypt(plaintext)
                self.assertEqual(self.decrypt_response(response).plaintext, plaintext)

    def test_1000_encryptions_of_one_plaintext_are_distinct(self):
        plaintext = b"\x00" * 32
        ciphertexts = {self.encrypt(plaintext).ciphertext for _ in range(1000)}
        self.assertEqual(len(ciphertexts), 1000)

    def test_empty_plaintext_is_invalid_argument(self):
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.encrypt, b"")

    def test_996_byte_plaintext_is_invalid_argument(self):
        self.assert_code(
            grpc.StatusCode.INVALID_ARGUMENT, self.encrypt, os.urandom(MAX_V2_PLAINTEXT + 1)
        )


class TestV2DecryptRefusals(KmsTestCase):
    """Every altered or malformed Decrypt is refused cleanly: InvalidArgument or
    FailedPrecondition, never Unknown/Internal, never a plaintext."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.plaintext = os.urandom(32)
        cls.sealed = cls.v2.Encrypt(
            v2_pb2.EncryptRequest(plaintext=cls.plaintext, uid="setup"),
            timeout=CALL_TIMEOUT_S,
            wait_for_ready=True,
        )

    def test_unaltered_decrypts(self):
        self.assertEqual(self.decrypt_response(self.sealed).plaintext, self.plaintext)

    def test_a_flipped_bit_in_every_ciphertext_byte(self):
        ciphertext = self.sealed.ciphertext
        for index in range(len(ciphertext)):
            bit = index % 8
            with self.subTest(byte=index, bit=bit):
                self.assert_clean_refusal(
                    self.decrypt_response, self.sealed, ciphertext=flip_bit(ciphertext, index, bit)
                )

    def test_a_flipped_bit_in_the_last_byte_is_invalid_argument(self):
        # The tag: a plain authentication failure.
        ciphertext = flip_bit(self.sealed.ciphertext, len(self.sealed.ciphertext) - 1)
        self.assert_code(
            grpc.StatusCode.INVALID_ARGUMENT,
            self.decrypt_response,
            self.sealed,
            ciphertext=ciphertext,
        )

    def test_a_flipped_bit_in_the_wrapped_kek(self):
        wrapped = self.sealed.annotations[WRAPPED_KEK_ANNOTATION]
        for index in sorted({0, len(wrapped) // 2, len(wrapped) - 1}):
            with self.subTest(byte=index):
                annotations = dict(self.sealed.annotations)
                annotations[WRAPPED_KEK_ANNOTATION] = flip_bit(wrapped, index)
                self.assert_clean_refusal(
                    self.decrypt_response, self.sealed, annotations=annotations
                )

    def test_a_changed_key_version(self):
        version = self.sealed.annotations[KEY_VERSION_ANNOTATION]
        for changed in (version + b"0", b"999999", b"not a version", b"", b"\x00\xff"):
            with self.subTest(version=changed):
                annotations = dict(self.sealed.annotations)
                annotations[KEY_VERSION_ANNOTATION] = changed
                self.assert_clean_refusal(
                    self.decrypt_response, self.sealed, annotations=annotations
                )

    def test_a_wrong_key_id(self):
        # The key_id is bound into the AEAD: the ciphertext cannot be replayed under another.
        for key_id in ("0" * 64, self.sealed.key_id + "x", self.sealed.key_id[:-1]):
            with self.subTest(key_id=key_id):
                self.assert_clean_refusal(self.decrypt_response, self.sealed, key_id=key_id)

    def test_an_empty_key_id(self):
        self.assert_clean_refusal(self.decrypt_response, self.sealed, key_id="")

    def test_a_key_id_of_1025_bytes(self):
        self.assert_code(
            grpc.StatusCode.INVALID_ARGUMENT,
            self.decrypt_response,
            self.sealed,
            key_id="a" * (MAX_KEY_ID + 1),
        )

    def test_missing_annotations(self):
        self.assert_clean_refusal(self.decrypt_response, self.sealed, annotations={})
        for missing in (WRAPPED_KEK_ANNOTATION, KEY_VERSION_ANNOTATION):
            with self.subTest(missing=missing):
                annotations = dict(self.sealed.annotations)
                del annotations[missing]
                self.assert_clean_refusal(
                    self.decrypt_response, self.sealed, annotations=annotations
                )

    def test_annotations_that_break_kube_apiserver_rules(self):
        for key, value in (
            ("Upper.Case.io", b"x"),
            ("single", b"x"),
            ("a/b.io", b"x"),
            ("pad.example.com", b"\x00" * (MAX_ANNOTATIONS_TOTAL + 1)),
        ):
            with self.subTest(key=key, value_len=len(value)):
                annotations = dict(self.sealed.annotations)
                annotations[key] = value
                self.assert_clean_refusal(
                    self.decrypt_response, self.sealed, annotations=annotations
                )

    def test_annotations_from_another_encryption_of_the_same_kek_still_decrypt(self):
        # Not a refusal: the annotations name the KEK, and the KEK is shared between writes.
        other = self.encrypt(os.urandom(32))
        if other.key_id != self.sealed.key_id:
            self.skipTest("the key rotated between the two encryptions")
        self.assertEqual(
            self.decrypt_response(self.sealed, annotations=other.annotations).plaintext,
            self.plaintext,
        )

    def test_empty_ciphertext(self):
        self.assert_code(
            grpc.StatusCode.INVALID_ARGUMENT, self.decrypt_response, self.sealed, ciphertext=b""
        )

    def test_truncated_ciphertexts(self):
        ciphertext = self.sealed.ciphertext
        for length in (1, 13, 29, 30, len(ciphertext) - 1):
            with self.subTest(length=length):
                self.assert_clean_refusal(
                    self.decrypt_response, self.sealed, ciphertext=ciphertext[:length]
                )

    def test_ciphertext_longer_than_1024_bytes(self):
        ciphertext = self.sealed.ciphertext
        longer = ciphertext + b"\x00" * (MAX_CIPHERTEXT + 1 - len(ciphertext))
        self.assertEqual(len(longer), MAX_CIPHERTEXT + 1)
        self.assert_code(
            grpc.StatusCode.INVALID_ARGUMENT, self.decrypt_response, self.sealed, ciphertext=longer
        )


class TestMessageSizeLimit(KmsTestCase):
    HUGE = b"\x01" * (4 * 1024 * 1024)

    def huge_decrypt(self):
        return self.decrypt(
            self.HUGE,
            "0" * 64,
            {WRAPPED_KEK_ANNOTATION: b"x", KEY_VERSION_ANNOTATION: b"1"},
        )

    def test_a_request_of_several_megabytes_is_refused_and_serving_continues(self):
        # RESOURCE_EXHAUSTED, as gRPC (doc/statuscodes.md) and grpc-go answer an oversize
        # message; never OK, Unknown or Internal.
        self.assert_code(grpc.StatusCode.RESOURCE_EXHAUSTED, self.encrypt, self.HUGE)
        self.assert_code(grpc.StatusCode.RESOURCE_EXHAUSTED, self.huge_decrypt)
        # The same connection still serves...
        plaintext = os.urandom(32)
        self.assertEqual(self.decrypt_response(self.encrypt(plaintext)).plaintext, plaintext)
        # ...and so does a new one.
        channel = open_channel()
        try:
            stub = v2_grpc.KeyManagementServiceStub(channel)
            status = stub.Status(v2_pb2.StatusRequest(), timeout=CALL_TIMEOUT_S)
            self.assertEqual(status.healthz, "ok")
        finally:
            channel.close()


class TestConcurrency(KmsTestCase):
    THREADS = 64
    ROUND_TRIPS = 20

    def test_64_threads_of_round_trips_on_one_connection(self):
        start = threading.Barrier(self.THREADS)

        def worker(worker_id: int) -> int:
            start.wait(timeout=30)
            done = 0
            for round_trip in range(self.ROUND_TRIPS):
                plaintext = os.urandom(32)
                uid = f"worker-{worker_id}-{round_trip}"
                sealed = self.encrypt(plaintext, uid=uid)
                opened = self.decrypt(sealed.ciphertext, sealed.key_id, sealed.annotations, uid=uid)
                if opened.plaintext != plaintext:
                    raise AssertionError(f"{uid}: round trip returned a different plaintext")
                done += 1
            return done

        failures = []
        completed = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.THREADS) as pool:
            futures = [pool.submit(worker, n) for n in range(self.THREADS)]
            for future in concurrent.futures.as_completed(futures):
                try:
                    completed += future.result()
                except Exception as error:  # noqa: BLE001 (collect every failure)
                    failures.append(repr(error))
        self.assertEqual(failures, [], f"{len(failures)} workers failed")
        self.assertEqual(completed, self.THREADS * self.ROUND_TRIPS)


class TestV1beta1(KmsTestCase):
    def v1_encrypt(self, plain: bytes):
        return self.v1.Encrypt(
            v1_pb2.EncryptRequest(version="v1beta1", plain=plain),
            timeout=CALL_TIMEOUT_S,
            wait_for_ready=True,
        )

    def v1_decrypt(self, cipher: bytes):
        return self.v1.Decrypt(
            v1_pb2.DecryptRequest(version="v1beta1", cipher=cipher),
            timeout=CALL_TIMEOUT_S,
            wait_for_ready=True,
        )

    def test_version(self):
        response = self.v1.Version(
            v1_pb2.VersionRequest(version="v1beta1"), timeout=CALL_TIMEOUT_S, wait_for_ready=True
        )
        self.assertEqual(response.version, "v1beta1")
        self.assertEqual(response.runtime_name, "kube-kms")
        self.assertRegex(response.runtime_version, SEMVER)

    def test_round_trip(self):
        # kube-apiserver's KMS v1 sends a 32-byte DEK, and "ping" as its health check.
        for plain in (os.urandom(32), b"ping"):
            with self.subTest(plain_len=len(plain)):
                cipher = self.v1_encrypt(plain).cipher
                self.assertTrue(cipher)
                self.assertNotIn(plain, cipher)
                self.assertEqual(self.v1_decrypt(cipher).plain, plain)

    def test_two_encryptions_differ(self):
        plain = os.urandom(32)
        self.assertNotEqual(self.v1_encrypt(plain).cipher, self.v1_encrypt(plain).cipher)

    def test_empty_plain_is_invalid_argument(self):
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.v1_encrypt, b"")

    def test_tampered_blob_is_invalid_argument(self):
        cipher = self.v1_encrypt(os.urandom(32)).cipher
        # The tag and the sealed data: authentication failure.
        for index in (len(cipher) - 1, len(cipher) - 20):
            with self.subTest(byte=index):
                self.assert_code(
                    grpc.StatusCode.INVALID_ARGUMENT, self.v1_decrypt, flip_bit(cipher, index)
                )
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.v1_decrypt, b"")
        self.assert_code(grpc.StatusCode.INVALID_ARGUMENT, self.v1_decrypt, cipher[:-1])

    def test_a_flipped_bit_in_every_blob_byte(self):
        cipher = self.v1_encrypt(os.urandom(32)).cipher
        for index in range(len(cipher)):
            bit = index % 8
            with self.subTest(byte=index, bit=bit):
                self.assert_clean_refusal(self.v1_decrypt, flip_bit(cipher, index, bit))

    def test_v1_blob_passed_to_v2_decrypt_fails_cleanly(self):
        cipher = self.v1_encrypt(os.urandom(32)).cipher
        sealed = self.encrypt(os.urandom(32))
        self.assert_clean_refusal(self.decrypt_response, sealed, ciphertext=cipher)

    def test_v2_ciphertext_passed_to_v1_decrypt_fails_cleanly(self):
        sealed = self.encrypt(os.urandom(32))
        self.assert_clean_refusal(self.v1_decrypt, sealed.ciphertext)


class TestAuthorities(unittest.TestCase):
    """The :authority values real clients send over a Unix socket are all served: grpcio's
    default for a `unix:` target (the percent-encoded path) and the raw socket path, which
    kube-apiserver's KMS v1 client (grpc-go) sends. h2 alone refuses both."""

    def calls_succeed(self, channel: grpc.Channel) -> None:
        v2 = v2_grpc.KeyManagementServiceStub(channel)
        v1 = v1_grpc.KeyManagementServiceStub(channel)
        call = {"timeout": CALL_TIMEOUT_S, "wait_for_ready": True}
        status = v2.Status(v2_pb2.StatusRequest(), **call)
        self.assertEqual((status.version, status.healthz), ("v2", "ok"))
        plaintext = os.urandom(32)
        sealed = v2.Encrypt(v2_pb2.EncryptRequest(plaintext=plaintext, uid="authority"), **call)
        self.assertEqual(sealed.key_id, status.key_id)
        opened = v2.Decrypt(
            v2_pb2.DecryptRequest(
                ciphertext=sealed.ciphertext,
                uid="authority",
                key_id=sealed.key_id,
                annotations=dict(sealed.annotations),
            ),
            **call,
        )
        self.assertEqual(opened.plaintext, plaintext)
        version = v1.Version(v1_pb2.VersionRequest(version="v1beta1"), **call)
        self.assertEqual(version.version, "v1beta1")
        cipher = v1.Encrypt(v1_pb2.EncryptRequest(version="v1beta1", plain=plaintext), **call)
        plain = v1.Decrypt(v1_pb2.DecryptRequest(version="v1beta1", cipher=cipher.cipher), **call)
        self.assertEqual(plain.plain, plaintext)

    def test_grpcio_default_authority_for_a_unix_target(self):
        channel = open_channel(authority=None)
        try:
            for _ in range(3):  # later calls reference the authority in the HPACK table
                self.calls_succeed(channel)
        finally:
            channel.close()

    def test_the_raw_socket_path_as_authority(self):
        channel = open_channel(authority=os.environ["KUBE_KMS_SOCKET"])
        try:
            for _ in range(3):
                self.calls_succeed(channel)
        finally:
            channel.close()


class TestRotation(KmsTestCase):
    """`keys rotate` + SIGHUP moves the running plugin to a new key without a restart.

    Order-independent (it reads the key_id before rotating), and load_tests runs it last."""

    ROTATION_DEADLINE_S = 15.0

    def test_rotate_and_sighup_switch_key_id_and_old_ciphertexts_still_decrypt(self):
        before = self.status().key_id
        old_plaintext = os.urandom(32)
        old = self.encrypt(old_plaintext)
        self.assertEqual(old.key_id, before)
        old_v1_plain = os.urandom(32)
        old_v1 = self.v1.Encrypt(
            v1_pb2.EncryptRequest(version="v1beta1", plain=old_v1_plain), timeout=CALL_TIMEOUT_S
        ).cipher

        rotate = run_keys("rotate")
        self.assertEqual(
            rotate.returncode, 0, f"keys rotate failed:\n{rotate.stdout}\n{rotate.stderr}"
        )
        os.kill(int(os.environ["KUBE_KMS_PID"]), signal.SIGHUP)

        deadline = time.monotonic() + self.ROTATION_DEADLINE_S
        after = before
        while after == before:
            if time.monotonic() > deadline:
                self.fail(
                    f"Status key_id still {before} {self.ROTATION_DEADLINE_S}s after "
                    "`keys rotate` and SIGHUP"
                )
            time.sleep(0.02)
            status = self.status()
            self.assertEqual(status.healthz, "ok")
            after = status.key_id
        self.assertTrue(after)
        self.assertLessEqual(len(after.encode()), MAX_KEY_ID)

        new = self.encrypt(os.urandom(32))
        self.assertEqual(new.key_id, after)
        self.assertEqual(self.status().key_id, after)
        self.assertNotEqual(
            new.annotations[WRAPPED_KEK_ANNOTATION], old.annotations[WRAPPED_KEK_ANNOTATION]
        )
        # What was written before the rotation still decrypts, with its own key_id...
        self.assertEqual(self.decrypt_response(old).plaintext, old_plaintext)
        self.assertEqual(
            self.v1.Decrypt(
                v1_pb2.DecryptRequest(version="v1beta1", cipher=old_v1), timeout=CALL_TIMEOUT_S
            ).plain,
            old_v1_plain,
        )
        # ...but not under the new key_id.
        self.assert_clean_refusal(self.decrypt_response, old, key_id=after)


class TestKeysCommandLine(unittest.TestCase):
    # Regression: the config flags belong to each `keys` action (`keys list --state-dir D`).
    def test_keys_list_takes_state_dir_after_the_action(self):
        listed = subprocess.run(
            [
                os.environ["KUBE_KMS_BIN"],
                "keys",
                "list",
                "--state-dir",
                os.environ["KUBE_KMS_STATE_DIR"],
            ],
            env=env_without_kube_kms_settings(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(listed.returncode, 0, f"{listed.stdout}\n{listed.stderr}")


def load_tests(loader: unittest.TestLoader, standard_tests, pattern):  # noqa: ARG001
    """Every class in definition order, so the rotation runs last."""
    suite = unittest.TestSuite()
    for case in (
        TestV2Status,
        TestV2Encrypt,
        TestV2DecryptRefusals,
        TestMessageSizeLimit,
        TestConcurrency,
        TestV1beta1,
        TestAuthorities,
        TestKeysCommandLine,
        TestRotation,
    ):
        suite.addTests(loader.loadTestsFromTestCase(case))
    return suite


if __name__ == "__main__":
    unittest.main(verbosity=2)
