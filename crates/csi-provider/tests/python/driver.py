"""A client shaped like the Secrets Store CSI driver, for kube-kms-csi-provider's socket.

The stubs are generated at run time from crates/csi-provider/proto/v1alpha1/service.proto with
grpc_tools (never from our Rust code, never committed), and every request is built the way the
driver builds it (kubernetes-sigs/secrets-store-csi-driver pkg/secrets-store/nodeserver.go and
provider_client.go, see shared/reference/csi-provider-facts.md §1):

- attributes: JSON of the SecretProviderClass's `spec.parameters` overlaid with the CSI volume
  context kubelet passes (pod name, namespace, UID, service account, `ephemeral`, the class
  name, and `csi.storage.k8s.io/serviceAccount.tokens` when the CSIDriver requests tokens: a
  JSON *string* of {audience: {token, expirationTimestamp}}); volume keys win on a clash;
- secrets: the literal `null` without a nodePublishSecretRef, else JSON of the Secret's decoded
  data;
- target_path: /var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount;
- permission: "420" (JSON of os.FileMode 0644); current_object_version: empty.

The channel is plaintext HTTP/2 over the Unix socket with the `:authority` a driver release
sends: the socket's full path (every driver before v1.6, grpc-go 1.56 `Dial(path)`) or
`localhost` (v1.6 and later).
"""

from __future__ import annotations

import atexit
import base64
import dataclasses
import datetime
import hashlib
import hmac
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
SERVICE_PROTO = "v1alpha1/service.proto"

TOKEN_AUDIENCE = "api://AzureADTokenExchange"
# The default file mode every driver release sends: JSON of os.FileMode(0644).
DRIVER_PERMISSION = "420"
# kubelet's NodePublishVolume deadline, which a Mount inherits (csiTimeout).
KUBELET_DEADLINE_S = 120.0

# Where the pod keys come from (kubelet, podInfoOnMount: true) and what the driver adds.
POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_UID = "csi.storage.k8s.io/pod.uid"
SERVICE_ACCOUNT_NAME = "csi.storage.k8s.io/serviceAccount.name"
SERVICE_ACCOUNT_TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"
EPHEMERAL = "csi.storage.k8s.io/ephemeral"
SECRET_PROVIDER_CLASS = "secretProviderClass"

_stubs = None


def stubs():
    """(service_pb2, service_pb2_grpc), compiled once per process into a temporary directory."""
    global _stubs
    if _stubs is None:
        out_dir = tempfile.mkdtemp(prefix="csi-stubs-")
        atexit.register(shutil.rmtree, out_dir, True)
        include = Path(protoc.__file__).resolve().parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            SERVICE_PROTO,
        ]
        code = protoc.main(args)
        if code != 0:
            raise RuntimeError(f"grpc_tools.protoc failed with exit code {code}: {' '.join(args)}")
        Path(out_dir, "v1alpha1", "__init__.py").touch()
        sys.path.insert(0, out_dir)
        _stubs = (
            importlib.import_module("v1alpha1.service_pb2"),
            importlib.import_module("v1alpha1.service_pb2_grpc"),
        )
    return _stubs


@dataclasses.dataclass
class Pod:
    """The pod a volume is mounted for, as kubelet names it."""

    name: str = "checkout-7d9f8b6c5-x2k4q"
    namespace: str = "payments"
    service_account: str = "checkout"
    uid: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    volume: str = "secrets-store-inline"

    @property
    def target_path(self) -> str:
        return f"/var/lib/kubelet/pods/{self.uid}/volumes/kubernetes.io~csi/{self.volume}/mount"


def objects_parameter(objects: list[dict]) -> str:
    """The `objects` parameter as Azure's SecretProviderClasses write it: YAML with an `array:`
    of strings, each a YAML object. Scalars are quoted (as JSON, valid YAML); lists, such as
    `jmesPath`, are YAML flow sequences."""
    lines = ["array:"]
    for obj in objects:
        lines.append("  - |")
        for key, value in obj.items():
            lines.append(f"    {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def rfc3339(seconds: float) -> str:
    return (
        datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def service_account_token(
    issuer: str,
    pod: Pod,
    audience: str = TOKEN_AUDIENCE,
    lifetime_s: int = 3600,
    subject: str | None = None,
) -> tuple[str, float]:
    """A pod-bound service-account token as kubelet requests it for the CSIDriver's
    tokenRequests: a JWT with the cluster's issuer, sub system:serviceaccount:<ns>:<sa>, the
    audience and the pod binding. HS256-signed with a throwaway key (the emulator matches
    iss/sub/aud/exp, not the signature). Returns the token and its expiry (unix seconds)."""
    now = int(time.time())
    exp = now + lifetime_s
    header = {"alg": "HS256", "typ": "JWT", "kid": "csi-test"}
    claims = {
        "iss": issuer,
        "sub": subject or f"system:serviceaccount:{pod.namespace}:{pod.service_account}",
        "aud": [audience],
        "iat": now,
        "nbf": now,
        "exp": exp,
        "kubernetes.io": {
            "namespace": pod.namespace,
            "pod": {"name": pod.name, "uid": pod.uid},
            "serviceaccount": {"name": pod.service_account, "uid": str(uuid.uuid4())},
        },
    }
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = hmac.new(os.urandom(32), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}", float(exp)


def tokens_attribute(tokens: dict[str, tuple[str, float]]) -> str:
    """`csi.storage.k8s.io/serviceAccount.tokens`: a JSON string of
    {audience: {"token", "expirationTimestamp"}}."""
    return json.dumps(
        {aud: {"token": token, "expirationTimestamp": rfc3339(exp)} for aud, (token, exp) in tokens.items()}
    )


class Driver:
    """One driver's connection to the provider: one channel, concurrent Mounts as streams."""

    def __init__(self, socket: str, authority: str):
        self.socket = socket
        self.authority = authority
        self.channel = grpc.insecure_channel(
            "unix://" + socket,
            options=[
                ("grpc.default_authority", authority),
                # The driver's default --max-call-recv-msg-size.
                ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ],
        )
        grpc.channel_ready_future(self.channel).result(timeout=10)
        pb2, pb2_grpc = stubs()
        self.pb2 = pb2
        self.stub = pb2_grpc.CSIDriverProviderStub(self.channel)
        # grpc.health.v1.Health/Check, framed by hand: HealthCheckRequest{service} is field 1
        # (string), HealthCheckResponse{status} is field 1 (enum; SERVING = 1).
        self._health = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )

    def close(self) -> None:
        self.channel.close()

    def version(self, timeout: float = 5.0):
        """Version, as the driver's --provider-health-check calls it (5 s timeout)."""
        return self.stub.Version(self.pb2.VersionRequest(version="v1alpha1"), timeout=timeout)

    def health_status(self, service: str = "", timeout: float = 5.0) -> int:
        request = b""
        if service:
            encoded = service.encode()
            request = b"\x0a" + bytes([len(encoded)]) + encoded
        response = self._health(request, timeout=timeout)
        if response == b"":
            return 0  # UNKNOWN, the proto3 default
        match = re.fullmatch(rb"\x08([\x00-\x7f])", response)
        if match is None:
            raise AssertionError(f"not a HealthCheckResponse: {response!r}")
        return match.group(1)[0]

    def mount_request(
        self,
        parameters: dict[str, str],
        pod: Pod | None = None,
        node_publish_secret: dict[str, str] | None = None,
        tokens: dict[str, tuple[str, float]] | None = None,
        class_name: str = "payments-secrets",
        volume_attributes: dict[str, str] | None = None,
        permission: str = DRIVER_PERMISSION,
    ):
        """The MountRequest NodePublishVolume sends for `pod` and a class with `parameters`."""
        pod = pod or Pod()
        volume_context = {
            SECRET_PROVIDER_CLASS: class_name,
            POD_NAME: pod.name,
            POD_NAMESPACE: pod.namespace,
            POD_UID: pod.uid,
            SERVICE_ACCOUNT_NAME: pod.service_account,
            EPHEMERAL: "true",
        }
        if tokens is not None:
            volume_context[SERVICE_ACCOUNT_TOKENS] = tokens_attribute(tokens)
        volume_context.update(volume_attributes or {})
        attributes = dict(parameters)
        attributes.update(volume_context)  # the volume context wins on a clash
        return self.pb2.MountRequest(
            attributes=json.dumps(attributes),
            secrets="null" if node_publish_secret is None else json.dumps(node_publish_secret),
            target_path=pod.target_path,
            permission=permission,
        )

    def mount(self, parameters: dict[str, str], timeout: float = KUBELET_DEADLINE_S, **kwargs):
        """Mount; raises grpc.RpcError when the provider refuses."""
        return self.stub.Mount(self.mount_request(parameters, **kwargs), timeout=timeout)

    def mount_future(self, parameters: dict[str, str], timeout: float = KUBELET_DEADLINE_S, **kwargs):
        """Mount without waiting, as the driver does for concurrent NodePublishVolumes."""
        return self.stub.Mount.future(self.mount_request(parameters, **kwargs), timeout=timeout)


def files_by_path(response) -> dict:
    """The response's files by path; fails on a duplicate path (the driver would keep only the
    last one)."""
    files = {}
    for file in response.files:
        if file.path in files:
            raise AssertionError(f"the provider returned {file.path!r} twice")
        files[file.path] = file
    return files


def versions_by_id(response) -> dict[str, str]:
    versions = {}
    for version in response.object_version:
        if version.id in versions and versions[version.id] != version.version:
            raise AssertionError(f"object_version {version.id!r} has two versions")
        versions[version.id] = version.version
    return versions
