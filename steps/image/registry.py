"""A client of the OCI distribution API v2: manifests, blobs and the auth dance.

    GET /v2/NAME/manifests/REF  -> an index (choose this host's platform) or a manifest
    GET /v2/NAME/blobs/DIGEST   -> the config, then every layer (in parallel)

Auth: on a 401, the WWW-Authenticate challenge says Basic (send the credentials)
or Bearer realm/service/scope (ask the realm for a token, anonymously or with
the credentials, then retry with it). Redirects are followed by hand: the
Authorization header never goes to another host (blob storage behind a CDN).
HTTPS always, except for loopback and the registries listed as insecure.
Every blob is checked against its digest before it is used.

requests (not urllib) for connection pooling, streaming and proxies.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
from contextlib import contextmanager
from urllib.parse import urlencode, urljoin, urlsplit

from steps import BadInput, DiyError, faults
from steps.exhaustion import exhausted, explain
from steps.image.manifest import (
    ACCEPT,
    MAX_JSON,
    Incoming,
    LayerBlob,
    check_hash,
    kind_of,
    layer_blobs,
    load_json,
    parse_config,
    parse_manifest,
    verify,
)
from steps.image.platform import choose
from steps.image.progress import Progress
from steps.image.reference import Reference
from steps.image.store import Store, check_digest, sha256_digest

CHUNK = 1 << 20
TIMEOUT = (15, 120)
_CHALLENGE = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')


class Denied(DiyError):
    pass


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="https://auth",service="reg",scope="repository:x:pull"' -> (scheme, params)."""
    scheme, _, rest = (header or "").strip().partition(" ")
    return scheme.lower(), {k.lower(): (q if q else u) for k, q, u in _CHALLENGE.findall(rest)}


def docker_config_credentials(registry: str) -> tuple[str, str] | None:
    """Credentials `docker login` stored in $DOCKER_CONFIG/config.json or ~/.docker/config.json."""
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    try:
        with open(os.path.join(base, "config.json")) as f:
            auths = json.load(f).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == "docker.io":
        keys = ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"]
    for key in keys:
        entry = auths.get(key) if isinstance(auths, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            try:
                user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            if sep and user:
                return user, password
    return None


def plain_http_allowed(host: str, insecure: frozenset[str]) -> bool:
    """Loopback (localhost or a loopback address, not a name that looks like one) and
    the registries the configuration lists as insecure."""
    import ipaddress

    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = name == "localhost"
    return loopback or host in insecure or name in insecure


class Client:
    def __init__(self, ref: Reference, insecure: frozenset[str], credentials: tuple[str, str] | None = None):
        import requests

        self.ref = ref
        self.insecure = insecure
        self.blob_digests: list[str] = []
        self.credentials = credentials or docker_config_credentials(ref.registry)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "diy-docker"
        self.authorization: str | None = None
        if plain_http_allowed(ref.api_host, insecure):
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.base = self.endpoint()

    def endpoint(self) -> str:
        """https://HOST; for a registry allowed plain HTTP, whichever of the two answers."""
        import requests

        host = self.ref.api_host
        if not plain_http_allowed(host, self.insecure):
            return f"https://{host}"
        try:
            self.session.get(f"https://{host}/v2/", timeout=(3, 10), verify=False).close()
            return f"https://{host}"
        except requests.exceptions.RequestException:
            return f"http://{host}"

    # --- requests --------------------------------------------------------------

    def verify(self, url: str) -> bool:
        """TLS certificates are checked except for registries allowed to go without."""
        return not plain_http_allowed(urlsplit(url).netloc, self.insecure)

    def get(self, path: str, headers: dict | None = None, stream: bool = False):
        import requests

        url = self.base + path
        try:
            for attempt in range(2):
                response = self.follow(url, dict(headers or {}), stream)
                if response.status_code != 401 or attempt or urlsplit(response.url).netloc != urlsplit(url).netloc:
                    return self.checked(response, path)  # only the registry itself may ask for credentials
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                self.authenticate(challenge)
        except requests.exceptions.RequestException as e:
            where = urlsplit(url).netloc
            shown = self.ref.registry if where == self.ref.registry else f"{self.ref.registry} ({where})"
            raise DiyError(f"cannot reach registry {shown}: {short_reason(e)}") from None
        raise AssertionError("unreachable")

    def follow(self, url: str, headers: dict, stream: bool):
        """GET with redirects followed here, so Authorization never leaves its host."""
        if self.authorization:
            headers["Authorization"] = self.authorization
        for _ in range(10):
            response = self.session.get(url, headers=headers, stream=stream, allow_redirects=False,
                                        timeout=TIMEOUT, verify=self.verify(url))
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            target = urljoin(url, response.headers.get("Location", ""))
            response.close()
            if urlsplit(target).scheme not in ("https", "http") or (
                    urlsplit(url).scheme == "https" and urlsplit(target).scheme == "http"):
                raise DiyError(f"registry {self.ref.registry} redirected to {target[:100]}: refusing "
                               "anything but an HTTPS redirect")
            if urlsplit(target).netloc != urlsplit(url).netloc:
                headers.pop("Authorization", None)
            url = target
        raise DiyError(f"registry {self.ref.registry}: too many redirects")

    def checked(self, response, path: str):
        code = response.status_code
        if code in (200, 206):
            return response
        body = response.text[:300] if not response.raw.closed else ""
        response.close()
        if code == 401 or code == 403:
            raise Denied(f"registry {self.ref.registry} denied access to {self.ref.repository}"
                         f"{'' if self.credentials else ' (no credentials given: --username, or docker login)'}"
                         f": {registry_error(body) or code}")
        if code == 404:
            raise DiyError(f"{self.ref.full}: not found in the registry ({registry_error(body) or path})")
        raise DiyError(f"registry {self.ref.registry} answered {code} for {path}: {registry_error(body)}")

    def authenticate(self, challenge: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials:
                raise Denied(f"registry {self.ref.registry} wants a username and password: "
                             "pass --username and --password-stdin")
            self.authorization = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        elif scheme == "bearer":
            self.authorization = "Bearer " + self.fetch_token(params)
        else:
            raise DiyError(f"registry {self.ref.registry} asks for unknown auth {challenge[:80]!r}")

    def fetch_token(self, params: dict[str, str]) -> str:
        realm = params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme != "https" and not (parts.scheme == "http" and
                                            plain_http_allowed(parts.netloc, self.insecure)):
            raise DiyError(f"registry {self.ref.registry}: token realm {realm[:100]!r} is not an HTTPS URL")
        query = {"scope": params.get("scope") or f"repository:{self.ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        response = self.session.get(f"{realm}?{urlencode(query)}", auth=self.credentials, timeout=TIMEOUT,
                                    verify=self.verify(realm), allow_redirects=False, stream=True)
        if response.status_code != 200:
            response.close()
            raise Denied(f"token server {parts.netloc} refused "
                         f"{'the credentials' if self.credentials else 'anonymous access'} "
                         f"({response.status_code})")
        body = load_json(response.raw.read(MAX_JSON + 1, decode_content=True), "token response")
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise DiyError(f"token server {parts.netloc} sent no token")
        return token

    # --- documents --------------------------------------------------------------

    def small(self, path: str, headers: dict | None = None) -> tuple[bytes, object]:
        response = self.get(path, headers, stream=True)
        data = b""
        for chunk in response.iter_content(65536):
            data += chunk
            if len(data) > MAX_JSON:
                response.close()
                raise BadInput(f"{path}: over the limit of {MAX_JSON} bytes for image JSON")
        return data, response

    def manifest(self) -> tuple[dict, str]:
        """The manifest for this host (through an index), and its digest."""
        repo, ref = self.ref.repository, self.ref.manifest_ref
        for _ in range(3):
            data, response = self.small(f"/v2/{repo}/manifests/{ref}", {"Accept": ACCEPT})
            digest = sha256_digest(data)
            if ref.startswith("sha256:"):
                verify(data, ref, f"{self.ref.full} manifest")
            sent = response.headers.get("Docker-Content-Digest")
            if sent and sent.startswith("sha256:") and sent != digest:
                raise BadInput(f"{self.ref.full}: manifest digest mismatch, registry says {sent}, got {digest}")
            doc = load_json(data, f"{self.ref.full} manifest")
            if kind_of(doc, response.headers.get("Content-Type", "").split(";")[0]) == "manifest":
                return doc, digest
            ref = check_digest(choose(doc.get("manifests") or [], self.ref.full)["digest"])
        raise BadInput(f"{self.ref.full}: indexes nested too deep")

    def incoming(self, store: Store, key: str, progress) -> Incoming:
        doc, digest = self.manifest()
        manifest = parse_manifest(doc, f"{self.ref.full} manifest")
        config_digest = manifest.config["digest"]
        data, _ = self.small(f"/v2/{self.ref.repository}/blobs/{config_digest}")
        config_bytes = verify(data, config_digest, f"{self.ref.full} config")
        config = parse_config(config_bytes, f"{self.ref.full} config")
        sizes = {ly["digest"]: ly["size"] for ly in manifest.layers}
        limit = store.instance.max_layer_bytes
        if any(size > limit for size in sizes.values()):
            raise BadInput(f"{self.ref.full}: a layer of {max(sizes.values())} bytes is past the limit of "
                           f"{limit}; raise max_layer_bytes in the config if this image is genuine")
        blobs = layer_blobs(config, manifest, lambda d: (lambda: open(store.blob_path(d), "rb")), self.ref.full)
        self.download_all(store, [b for b in blobs if not store.has_layer(b.diff_id)], sizes, progress)
        self.blob_digests = [b.digest for b in blobs]
        checked = [LayerBlob(b.diff_id, b.open) for b in blobs]  # digests were checked on download
        return Incoming([key], config_bytes, checked, f"pulled from {self.ref.full}",
                        {"manifest": digest, "repo_digests": [f"{self.ref.name}@{digest}"]})

    # --- blobs --------------------------------------------------------------------

    def download_all(self, store: Store, blobs: list[LayerBlob], sizes: dict, progress) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if not blobs:
            return
        os.makedirs(os.path.dirname(store.blob_path(blobs[0].digest)), exist_ok=True)
        blobs = list({b.digest: b for b in blobs}.values())  # a layer listed twice is fetched once
        workers = min(len(blobs), store.instance.pull_parallel)
        for b in blobs:
            store.made += [store.blob_path(b.digest), store.blob_path(b.digest) + ".partial"]
        try:
            with ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(self.download, store.blob_path(b.digest), b.digest, sizes[b.digest],
                                       progress.bar(b.digest, sizes[b.digest])) for b in blobs]
                try:
                    for future in futures:
                        future.result()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        except (OSError, MemoryError) as e:
            if not exhausted(e):
                raise
            store.give_back()  # first: the space it held counts as free in the line
            total = sum(sizes[b.digest] for b in blobs)
            raise explain(e, f"downloading {self.ref.full}", store.root, total) from None

    def download(self, path: str, digest: str, size: int, bar) -> None:
        """Fetch a blob into path, resuming a partial download; checked before it is renamed."""
        partial = path + ".partial"
        with open_locked(partial) as f:
            if f is None:  # finished meanwhile by another pull
                bar.done(size, "already here")
                return
            sha, have = hashlib.sha256(), 0
            while chunk := f.read(CHUNK):
                sha.update(chunk)
                have += len(chunk)
            resumed = have
            if have < size:
                response = self.fetch_from(digest, have)
                if response.status_code != 206:
                    f.seek(0)
                    f.truncate()
                    sha, have, resumed = hashlib.sha256(), 0, 0
                chunks = response.iter_content(CHUNK)
            else:
                chunks = iter(())
            bar.start(have)
            for chunk in chunks:
                have += len(chunk)
                if have > size:
                    raise BadInput(f"{self.ref.full} layer {digest[:19]}: the registry sent more than "
                                   f"its {size} bytes")
                sha.update(chunk)
                f.write(chunk)
                bar.update(len(chunk))
                if faults.active():
                    f.flush()  # so a kill here leaves what was received, as a crash between chunks does
                    faults.point("image.download.mid")
            f.flush()
            try:
                check_hash(sha, digest, f"{self.ref.full} layer")
            except BadInput:
                f.truncate(0)
                raise
            os.rename(partial, path)
            bar.done(have, f"downloaded, resumed at {resumed} bytes" if resumed else "downloaded")

    def fetch_from(self, digest: str, offset: int):
        """GET a blob from offset (a Range request); a registry that cannot resume sends it whole."""
        path = f"/v2/{self.ref.repository}/blobs/{digest}"
        identity = {"Accept-Encoding": "identity"}  # the blob as stored: its digest is of those bytes
        if offset:
            try:
                response = self.get(path, {**identity, "Range": f"bytes={offset}-"}, stream=True)
                if response.status_code != 206 or response.headers.get("Content-Range", "").startswith(
                        f"bytes {offset}-"):
                    return response
                response.close()  # a range other than the one asked for: start over
            except DiyError as e:
                if " 416 " not in str(e):
                    raise
        return self.get(path, identity, stream=True)


@contextmanager
def open_locked(partial: str):
    """The partial download, opened and flocked: one writer per blob, whatever process
    pulls it. None when the blob was finished (and the partial renamed) meanwhile."""
    while True:
        if os.path.exists(partial[:-len(".partial")]):
            yield None
            return
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        f = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                same = os.stat(partial).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield f
                return
        finally:
            f.close()
        # the file we locked was renamed (finished) or removed meanwhile: look again


def short_reason(error: Exception) -> str:
    """The gist of a connection failure, instead of urllib3's nested retry message."""
    text = str(error)
    for needle, gist in (("Name or service not known", "its name does not resolve"),
                         ("Temporary failure in name resolution", "its name does not resolve"),
                         ("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate does not verify "
                          "(list it in insecure_registries only if you trust the network)"),
                         ("WRONG_VERSION_NUMBER", "it does not speak TLS (list it in insecure_registries "
                          "to use plain HTTP)")):
        if needle in text:
            return gist
    return text[:200]


def registry_error(body: str) -> str:
    """The first message of a registry's JSON error body, else the body's start."""
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:2])
    except (ValueError, AttributeError):
        return body.strip()[:120]


def pull(store: Store, ref: Reference, credentials: tuple[str, str] | None = None, progress=None) -> dict:
    """Bring ref into the store from its registry; returns the image record."""
    from steps.image.manifest import stage_and_commit

    client = Client(ref, store.instance.insecure, credentials)
    with store.bringing_in():
        incoming = client.incoming(store, ref.key, progress or Progress())
        record = stage_and_commit(store, incoming)
    for digest in client.blob_digests:
        try:
            os.unlink(store.blob_path(digest))  # unpacked now: the layer is what is kept
        except FileNotFoundError:
            pass
    return record
