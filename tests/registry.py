"""Test support for image-registry tests: a real registry, a token server, OCI layouts, skopeo pushes.

Nothing here is a test. Everything talks only to 127.0.0.1 and writes only under the directory it is given:

* `Registry` runs the Debian `docker-registry` (distribution 2.8) with no auth, htpasswd or token auth;
  for token auth it also runs a small Docker-token-protocol server in a thread (ES256 JWTs signed with
  the `openssl` CLI, the self-signed certificate sent in the `x5c` header).
* `oci_layout` / `docker_archive` build image layouts and `docker save` archives in pure Python and
  return the digests to assert on.
* `push` copies a layout into a registry with `skopeo`, hermetically (no auth files, caches or
  policies read from or written to the host).
* `http_request` / `fetch_manifest` talk to the registry by hand, following the auth challenge.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "diy-test-registry"
ISSUER = "diy-test-issuer"

OCI_LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
LAYER_MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "none": "application/vnd.oci.image.layer.v1.tar",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
MANIFEST_ACCEPT = ", ".join([MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST])
REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
PLATFORMS = [("amd64", None), ("arm64", None), ("arm", "v7")]


def require_tools(*names: str) -> None:
    """Skip the calling test when one of the external programs is missing."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def spill_paths() -> set[str]:
    """Host paths skopeo/containers-image would write to if not kept hermetic; the ones that exist now."""
    home = os.path.expanduser("~")
    candidates = ["/var/lib/containers/cache", f"/run/containers/{os.getuid()}", f"/run/user/{os.getuid()}/containers",
                  os.path.join(home, ".docker"), os.path.join(home, ".config", "containers"),
                  os.path.join(home, ".local", "share", "containers")]
    return {p for p in candidates if os.path.lexists(p)}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------- raw HTTP

@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(url: str, method: str = "GET", headers: dict[str, str] | None = None,
                 body: bytes | None = None, timeout: float = 10) -> Response:
    """One plain-HTTP request, never through a proxy (urllib would honour *_proxy variables)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1":
        raise ValueError(f"tests only talk to http://127.0.0.1: {url}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="x",service="y",scope="a,b"' -> ("bearer", {"realm": "x", ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    while rest:
        key, _, rest = rest.strip().partition("=")
        if rest.startswith('"'):
            value, _, rest = rest[1:].partition('"')
        else:
            value, _, rest = rest.partition(",")
        params[key.strip()] = value
        rest = rest.lstrip(" ,")
    return scheme.lower(), params


def fetch_token(challenge: dict[str, str], creds: tuple[str, str] | None = None) -> Response:
    """GET the token endpoint named by a Bearer challenge, with Basic auth when creds are given."""
    query = {k: challenge[k] for k in ("service", "scope") if k in challenge}
    headers = {"Authorization": basic_auth(*creds)} if creds else {}
    return http_request(f"{challenge['realm']}?{urllib.parse.urlencode(query)}", headers=headers)


def fetch_manifest(registry: Registry, repo: str, ref: str, creds: tuple[str, str] | None = None,
                   accept: str = MANIFEST_ACCEPT, method: str = "GET") -> Response:
    """GET /v2/REPO/manifests/REF, answering a Basic or Bearer challenge like a client would."""
    url = f"{registry.url}/v2/{repo}/manifests/{ref}"
    resp = http_request(url, method, {"Accept": accept})
    if resp.status != 401 or (creds is None and registry.auth != "token"):
        return resp
    scheme, challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
    if scheme == "basic":
        return http_request(url, method, {"Accept": accept, "Authorization": basic_auth(*creds)})
    token = fetch_token(challenge, creds)
    if token.status != 200:
        return token
    return http_request(url, method, {"Accept": accept, "Authorization": "Bearer " + token.json()["token"]})


# ----------------------------------------------------------------------------------------- token server

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_to_raw_ecdsa(der: bytes, size: int = 32) -> bytes:
    """ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (DER) -> r || s, as JWS ES256 wants."""
    def read_tlv(buf: bytes, pos: int) -> tuple[int, bytes, int]:
        tag, length = buf[pos], buf[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(buf[pos:pos + n], "big")
            pos += n
        return tag, buf[pos:pos + length], pos + length

    _, seq, _ = read_tlv(der, 0)
    _, r, pos = read_tlv(seq, 0)
    _, s, _ = read_tlv(seq, pos)
    return int.from_bytes(r, "big").to_bytes(size, "big") + int.from_bytes(s, "big").to_bytes(size, "big")


class TokenSigner:
    """An EC P-256 key and self-signed certificate made with `openssl`; signs ES256 JWTs with x5c."""

    def __init__(self, directory: str):
        self.key = os.path.join(directory, "token-key.pem")
        self.cert = os.path.join(directory, "token-cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", f"/CN={ISSUER}"],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        with open(self.cert) as f:
            pem = f.read()
        self.cert_b64 = "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self.cert_b64]}
        signing_input = f"{b64url(canonical_json(header))}.{b64url(canonical_json(claims))}"
        der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        return f"{signing_input}.{b64url(der_to_raw_ecdsa(der))}"


def parse_scope(scope: str) -> dict[str, Any] | None:
    """'repository:NAME:pull,push' -> {"type", "name", "actions"}; NAME may itself hold colons (ports)."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2:
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


class TokenServer:
    """The Docker token protocol (GET /token?service=..&scope=..) for one user, in a background thread."""

    def __init__(self, directory: str, username: str, password: str, anonymous_pull: bool = False):
        self.signer = TokenSigner(directory)
        self.username, self.password, self.anonymous_pull = username, password, anonymous_pull
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, name="token-server", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Idempotent: stop serving, close the socket, join the thread."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server dispatches to
                status, body = owner.answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _user(self, authorization: str | None) -> tuple[str | None, bool]:
        """(basic-auth user or None, credentials valid)."""
        if not authorization or not authorization.lower().startswith("basic "):
            return None, True
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return "", False
        return user, (user, password) == (self.username, self.password)

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        url = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(url.query)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        service = query.get("service", [""])[0]
        user, valid = self._user(authorization)
        record = {"path": url.path, "service": service, "scope": " ".join(scopes), "scopes": scopes,
                  "user": user, "account": query.get("account", [None])[0]}
        if url.path != "/token" or not valid:
            record.update(status=404 if url.path != "/token" else 401, access=[])
            self.requests.append(record)
            return record["status"], {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        access = self.grant(scopes, user)
        record.update(status=200, access=access)
        self.requests.append(record)
        token = self.signer.sign(self.claims(service, user, access))
        return 200, {"token": token, "access_token": token, "expires_in": 300,
                     "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def grant(self, scopes: list[str], user: str | None) -> list[dict[str, Any]]:
        """Everything requested for the user; pull only (or nothing) for anonymous requests."""
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            if user is None:
                parsed["actions"] = [a for a in parsed["actions"] if a == "pull" and self.anonymous_pull]
            if parsed["actions"]:
                access.append(parsed)
        return access

    @staticmethod
    def claims(service: str, user: str | None, access: list[dict[str, Any]]) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": ISSUER, "sub": user or "", "aud": service, "exp": now + 300, "nbf": now - 10,
                "iat": now, "jti": secrets.token_hex(8), "access": access}


# --------------------------------------------------------------------------------------------- registry

class Registry:
    """A real `docker-registry serve` on 127.0.0.1, storage under WORKDIR; a context manager.

    auth: None, "htpasswd" (bcrypt file) or "token" (a TokenServer; see `token_requests`).
    """

    def __init__(self, workdir: str, auth: str | None = None, username: str = "u", password: str = "p",
                 anonymous_pull: bool = False, start_timeout: float = 10):
        if auth not in (None, "htpasswd", "token"):
            raise ValueError(f"unknown auth mode {auth!r}")
        self.workdir = os.path.abspath(workdir)
        self.auth, self.username, self.password = auth, username, password
        self.anonymous_pull, self.start_timeout = anonymous_pull, start_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.token_server: TokenServer | None = None
        self.log_path = os.path.join(self.workdir, "registry.log")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def creds(self) -> tuple[str, str]:
        return self.username, self.password

    @property
    def token_requests(self) -> list[dict[str, Any]]:
        """Every request the token server answered: path, service, scope, scopes, user, status, access."""
        return self.token_server.requests if self.token_server else []

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Registry:
        """Start and wait until GET /v2/ answers; retries a lost port race; never leaks a process."""
        os.makedirs(self.workdir, exist_ok=True)
        try:
            auth_config = self._auth_config()
            for _ in range(3):
                self.port = free_port()
                if self._spawn(auth_config):
                    return self
                self._kill()
                if "address already in use" not in self.log():
                    break
            raise RuntimeError(f"docker-registry did not start on {self.host}:\n{self.log()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the registry and stop the token server (its requests stay readable). Idempotent."""
        self._kill()
        if self.token_server is not None:
            self.token_server.stop()

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _auth_config(self) -> dict[str, Any]:
        if self.auth == "htpasswd":
            path = os.path.join(self.workdir, "htpasswd")
            line = subprocess.run(["htpasswd", "-Bbn", self.username, self.password], check=True,
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
            with open(path, "w") as f:
                f.write(line.strip() + "\n")
            return {"htpasswd": {"realm": "diy-test-realm", "path": path}}
        if self.auth == "token":
            if self.token_server is None or not self.token_server.thread.is_alive():
                self.token_server = TokenServer(self.workdir, self.username, self.password, self.anonymous_pull)
            return {"token": {"realm": self.token_server.realm, "service": SERVICE, "issuer": ISSUER,
                              "rootcertbundle": self.token_server.signer.cert}}
        return {}

    def _config(self, auth_config: dict[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": os.path.join(self.workdir, "storage")},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if auth_config:
            config["auth"] = auth_config
        return config

    def _spawn(self, auth_config: dict[str, Any]) -> bool:
        """Run the registry on self.port; True once it answers, False if it exited or timed out."""
        config_path = os.path.join(self.workdir, "config.yml")
        with open(config_path, "w") as f:  # JSON is YAML
            json.dump(self._config(auth_config), f, indent=1)
        with open(self.log_path, "ab") as log:
            # a clean environment: REGISTRY_* variables would override the configuration
            self.proc = subprocess.Popen([REGISTRY_BIN, "serve", config_path], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                         cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                http_request(f"{self.url}/v2/", timeout=1)
                return True
            except OSError:
                time.sleep(0.02)
        return False


# ----------------------------------------------------------------------------------------- image layout

Member = tuple  # ("dir", path[, mode]) ("file", path, bytes[, mode]) ("symlink", path, target)
#                 ("hardlink", path, target) ("whiteout", path) ("opaque", dirpath)


@dataclass
class Layer:
    """A layer's members and how its blob is compressed: "gzip", "none" or "zstd"."""

    members: list[Member]
    compression: str = "gzip"


@dataclass
class ImageSpec:
    """An image to build; `layers` items are member lists (image-wide compression) or `Layer`s."""

    layers: list[list[Member] | Layer]
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=lambda: list(DEFAULT_ENV))
    working_dir: str = ""
    user: str = ""
    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    compression: str = "gzip"
    labels: dict[str, str] | None = None
    exposed_ports: dict[str, dict] | None = None  # {"80/tcp": {}}
    stop_signal: str = ""

    @property
    def platform(self) -> dict[str, str]:
        platform = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            platform["variant"] = self.variant
        return platform


@dataclass
class BuiltImage:
    """What was written for one image. Digests are "sha256:<hex>"."""

    manifest_digest: str | None  # None for a legacy docker archive (it has no manifest)
    manifest_size: int
    config_digest: str
    layer_digests: list[str]  # the blobs, as compressed
    diff_ids: list[str]  # sha256 of the uncompressed tars
    platform: dict[str, str]
    manifest: dict[str, Any] | None
    config: dict[str, Any]

    @property
    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": MT_OCI_MANIFEST, "digest": self.manifest_digest, "size": self.manifest_size}


@dataclass
class BuiltIndex:
    """A multi-platform image: the image index blob and its images, in PLATFORMS order."""

    index_digest: str
    index_size: int
    images: list[BuiltImage]
    index: dict[str, Any]

    @property
    def manifest_digest(self) -> str:
        return self.index_digest

    def for_platform(self, architecture: str, variant: str | None = None) -> BuiltImage:
        for image in self.images:
            if image.platform["architecture"] == architecture and image.platform.get("variant") == variant:
                return image
        raise KeyError(f"{architecture}/{variant}")


def layer_tar(members: list[Member]) -> bytes:
    """An uncompressed, deterministic layer tar (root-owned, mtime 0)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info, data = tar_entry(member)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_entry(member: Member) -> tuple[tarfile.TarInfo, bytes | None]:
    kind, path = member[0], member[1].strip("/")
    info = tarfile.TarInfo(path)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    data: bytes | None = None
    if kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, member[2] if len(member) > 2 else 0o755
    elif kind == "file":
        data = member[2] if isinstance(member[2], bytes) else member[2].encode()
        info.size, info.mode = len(data), member[3] if len(member) > 3 else 0o644
    elif kind in ("symlink", "hardlink"):
        info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        info.linkname, info.mode = member[2] if kind == "symlink" else member[2].strip("/"), 0o777
    elif kind == "fifo":
        info.type, info.mode = tarfile.FIFOTYPE, 0o644
    elif kind in ("whiteout", "opaque"):
        parent, base = os.path.split(path)
        info.name = os.path.join(parent, ".wh." + base) if kind == "whiteout" else f"{path}/.wh..wh..opq"
        info.mode, data = 0o644, b""
    else:
        raise ValueError(f"unknown layer member kind {kind!r}")
    return info, data


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    if compression == "none":
        return data
    raise ValueError(f"unknown compression {compression!r}")


def write_blob(layout: str, data: bytes) -> str:
    digest = sha256(data)
    directory = os.path.join(layout, "blobs", "sha256")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, digest.split(":", 1)[1]), "wb") as f:
        f.write(data)
    return digest


def image_config(spec: ImageSpec, diff_ids: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {"Env": spec.env}
    for key, value in (("Entrypoint", spec.entrypoint), ("Cmd", spec.cmd), ("WorkingDir", spec.working_dir),
                       ("User", spec.user), ("Labels", spec.labels), ("ExposedPorts", spec.exposed_ports),
                       ("StopSignal", spec.stop_signal)):
        if value:
            config[key] = value
    return {"created": "1970-01-01T00:00:00Z", **spec.platform, "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"diy-test layer {i}"}
                        for i in range(len(diff_ids))]}


def write_image(layout: str, spec: ImageSpec, force_compression: str | None = None) -> BuiltImage:
    """Write the layers, config and manifest blobs of one image under LAYOUT/blobs."""
    layer_descs, diff_ids = [], []
    for layer in spec.layers:
        if not isinstance(layer, Layer):
            layer = Layer(layer, spec.compression)
        compression = force_compression or layer.compression
        tar = layer_tar(layer.members)
        blob = compress(tar, compression)
        layer_descs.append({"mediaType": LAYER_MEDIA_TYPES[compression], "digest": write_blob(layout, blob),
                            "size": len(blob)})
        diff_ids.append(sha256(tar))
    config = image_config(spec, diff_ids)
    config_bytes = canonical_json(config)
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG, "digest": write_blob(layout, config_bytes),
                           "size": len(config_bytes)},
                "layers": layer_descs}
    manifest_bytes = canonical_json(manifest)
    return BuiltImage(write_blob(layout, manifest_bytes), len(manifest_bytes), sha256(config_bytes),
                      [d["digest"] for d in layer_descs], diff_ids, spec.platform, manifest, config)


def write_index(layout: str, specs: list[ImageSpec]) -> BuiltIndex:
    """Write each image and an image index blob listing them with their platforms."""
    images = [write_image(layout, spec) for spec in specs]
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
             "manifests": [{**image.descriptor, "platform": image.platform} for image in images]}
    index_bytes = canonical_json(index)
    return BuiltIndex(write_blob(layout, index_bytes), len(index_bytes), images, index)


def oci_layout(path: str, images: dict[str, ImageSpec | list[ImageSpec]]) -> dict[str, Any]:
    """Write an OCI image layout at PATH with one index.json entry per tag.

    A tag mapped to an ImageSpec gets an image manifest; mapped to a list of specs, it gets an image
    index blob (multi-platform, nested as skopeo's `oci:` transport expects). Returns tag -> BuiltImage
    or BuiltIndex.
    """
    os.makedirs(path, exist_ok=True)
    built: dict[str, Any] = {}
    entries = []
    for tag, spec in images.items():
        if isinstance(spec, ImageSpec):
            image = write_image(path, spec)
            built[tag] = image
            entries.append({**image.descriptor, "annotations": {REF_NAME: tag}})
        else:
            index = write_index(path, spec)
            built[tag] = index
            entries.append({"mediaType": MT_OCI_INDEX, "digest": index.index_digest, "size": index.index_size,
                            "annotations": {REF_NAME: tag}})
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump(OCI_LAYOUT_VERSION, f)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries}, f)
    return built


def platform_images(layers: list[list[Member]] | None = None) -> list[ImageSpec]:
    """One small image per PLATFORMS entry, each with a /platform file naming it ("linux/arm/v7")."""
    specs = []
    for arch, variant in PLATFORMS:
        name = "/".join(p for p in ("linux", arch, variant) if p)
        top = [("file", "platform", name.encode() + b"\n")]
        specs.append(ImageSpec(layers=[*(layers or []), top], cmd=["/bin/sh"], architecture=arch,
                               variant=variant))
    return specs


# ------------------------------------------------------------------------------------ docker save archives

def docker_archive(path: str, image: ImageSpec, form: str = "legacy",
                   repo_tags: list[str] | None = None) -> BuiltImage:
    """Write a `docker save` tar at PATH; layers are plain tars, as Docker writes them.

    form="legacy": manifest.json + <config hex>.json + <layer id>/{layer.tar,VERSION,json} + repositories.
    form="oci": what Docker 25+ writes: oci-layout, index.json, blobs/sha256/..., and a manifest.json
    whose Config/Layers name blobs/sha256/<hex>.
    """
    if form not in ("legacy", "oci"):
        raise ValueError(f"unknown archive form {form!r}")
    tags = repo_tags if repo_tags is not None else ["diy-test/image:latest"]
    stage = path + ".d"
    os.makedirs(stage)
    try:
        built = write_image(stage, image, force_compression="none")
        files = _legacy_files(stage, built, tags) if form == "legacy" else _oci_archive_files(stage, built, tags)
        _write_tar(path, files)
    finally:
        shutil.rmtree(stage)
    if form == "legacy":
        built.manifest_digest, built.manifest_size, built.manifest = None, 0, None
    return built


def _blob(stage: str, digest: str) -> bytes:
    with open(os.path.join(stage, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
        return f.read()


def _repositories(tags: list[str], top: str) -> bytes:
    repos: dict[str, dict[str, str]] = {}
    for tag in tags:
        repo, _, name = tag.rpartition(":")
        repos.setdefault(repo, {})[name] = top
    return json.dumps(repos).encode()


def _legacy_files(stage: str, built: BuiltImage, tags: list[str]) -> list[tuple[str, bytes]]:
    config_hex = built.config_digest.split(":", 1)[1]
    files: list[tuple[str, bytes]] = [(f"{config_hex}.json", _blob(stage, built.config_digest))]
    layer_paths, parent = [], ""
    for digest, diff_id in zip(built.layer_digests, built.diff_ids):
        layer_id = hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()
        v1 = {"id": layer_id, **({"parent": parent} if parent else {}), "created": "1970-01-01T00:00:00Z"}
        files += [(f"{layer_id}/VERSION", b"1.0"), (f"{layer_id}/json", json.dumps(v1).encode()),
                  (f"{layer_id}/layer.tar", _blob(stage, digest))]
        layer_paths.append(f"{layer_id}/layer.tar")
        parent = layer_id
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": tags, "Layers": layer_paths}]
    files += [("manifest.json", json.dumps(manifest).encode()), ("repositories", _repositories(tags, parent))]
    return files


def _oci_archive_files(stage: str, built: BuiltImage, tags: list[str]) -> list[tuple[str, bytes]]:
    blobs = [built.manifest_digest, built.config_digest, *built.layer_digests]
    files = [(f"blobs/sha256/{d.split(':', 1)[1]}", _blob(stage, d)) for d in dict.fromkeys(blobs)]
    entries = [{**built.descriptor, "annotations": {"io.containerd.image.name": _full_name(tag),
                                                    REF_NAME: tag.rpartition(":")[2]}} for tag in tags]
    if not entries:
        entries = [built.descriptor]
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries}
    manifest = [{"Config": f"blobs/sha256/{built.config_digest.split(':', 1)[1]}", "RepoTags": tags,
                 "Layers": [f"blobs/sha256/{d.split(':', 1)[1]}" for d in built.layer_digests]}]
    top = built.layer_digests[-1].split(":", 1)[1] if built.layer_digests else ""
    files += [("oci-layout", json.dumps(OCI_LAYOUT_VERSION).encode()), ("index.json", json.dumps(index).encode()),
              ("manifest.json", json.dumps(manifest).encode()), ("repositories", _repositories(tags, top))]
    return files


def _full_name(tag: str) -> str:
    """'foo:1' -> 'docker.io/library/foo:1', as Docker annotates."""
    first = tag.split("/", 1)[0]
    if "/" in tag and ("." in first or ":" in first or first == "localhost"):
        return tag
    return f"docker.io/{tag}" if "/" in tag else f"docker.io/library/{tag}"


def _write_tar(path: str, files: list[tuple[str, bytes]]) -> None:
    dirs = sorted({os.path.dirname(name) for name, _ in files} - {""})
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------------------------------ skopeo

def skopeo_env(workdir: str) -> dict[str, str]:
    """An environment that keeps skopeo's auth file, blob-info cache and config lookups inside WORKDIR.

    As root, containers/image keeps its blob-info cache in /var/lib/containers/cache; declaring a rootless
    uid moves it to $XDG_DATA_HOME/containers/cache instead.
    """
    home = os.path.join(workdir, "skopeo-home")
    for sub in ("data", "run", "tmp", "registries.d", ".config/containers"):
        os.makedirs(os.path.join(home, sub), exist_ok=True)
    # $HOME/.config/containers/registries.conf replaces /etc/containers/registries.conf{,.d} for skopeo 1.9
    registries_conf = os.path.join(home, ".config", "containers", "registries.conf")
    if not os.path.exists(registries_conf):
        with open(registries_conf, "w") as f:
            f.write("unqualified-search-registries = []\n")
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": home,
            "XDG_DATA_HOME": os.path.join(home, "data"), "XDG_CONFIG_HOME": os.path.join(home, ".config"),
            "XDG_RUNTIME_DIR": os.path.join(home, "run"), "TMPDIR": os.path.join(home, "tmp"),
            "REGISTRY_AUTH_FILE": os.path.join(home, "auth.json"), "DOCKER_CONFIG": os.path.join(home, "docker"),
            "CONTAINERS_REGISTRIES_CONF": registries_conf, "_CONTAINERS_ROOTLESS_UID": "1",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def skopeo(workdir: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `skopeo --insecure-policy ARGS...` hermetically (see skopeo_env); raise with stderr on failure.

    Images are chosen from lists as linux/amd64 whatever the host (--override-os/--override-arch).
    """
    env = skopeo_env(workdir)
    home = env["HOME"]
    cmd = ["skopeo", "--insecure-policy", "--registries.d", os.path.join(home, "registries.d"),
           "--tmpdir", env["TMPDIR"], "--override-os", "linux", "--override-arch", "amd64", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stderr}")
    return proc


def push(layout_dir: str, tag: str, registry: Registry, dest_ref: str, creds: tuple[str, str] | None = None,
         all_platforms: bool = False, preserve_digests: bool = True, extra_args: tuple[str, ...] = ()) -> str:
    """skopeo copy oci:LAYOUT:TAG docker://HOST/DEST_REF; returns the pushed manifest digest.

    DEST_REF is "repo[:tag]" (TAG when no tag is given). With all_platforms, an index is copied whole
    (`--multi-arch all`); otherwise skopeo picks the linux/amd64 image out of it. preserve_digests keeps
    the blobs as built (without it skopeo gzips uncompressed layers, changing the manifest digest).
    """
    if ":" not in dest_ref.rsplit("/", 1)[-1] and "@" not in dest_ref:
        dest_ref = f"{dest_ref}:{tag}"
    digest_file = os.path.join(registry.workdir, "skopeo-home", f"digest-{secrets.token_hex(4)}")
    args = ["copy", "--quiet", "--dest-tls-verify=false"]
    args += ["--dest-creds", f"{creds[0]}:{creds[1]}"] if creds else ["--dest-no-creds"]
    if all_platforms:
        args += ["--multi-arch", "all"]
    if preserve_digests:
        args.append("--preserve-digests")
    args += ["--digestfile", digest_file, *extra_args,
             f"oci:{os.path.abspath(layout_dir)}:{tag}", f"docker://{registry.host}/{dest_ref}"]
    skopeo(registry.workdir, *args)
    with open(digest_file) as f:
        digest = f.read().strip()
    os.unlink(digest_file)
    return digest
