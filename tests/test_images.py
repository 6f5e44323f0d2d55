"""Images from every source, against real components: OCI layouts and docker save
archives written here, skopeo pushing them to Debian's docker-registry on 127.0.0.1
(no auth, htpasswd, and token auth with a token server run here), and containers
asked from the inside whether the image's config was honoured."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from tests import registry as reg

pytestmark = pytest.mark.skipif(not shutil.which(reg.REGISTRY_BIN) or not shutil.which("skopeo"),
                                reason="needs Debian's docker-registry and skopeo")

with open("/bin/busybox", "rb") as _f:
    BUSYBOX = _f.read()

BASE = [("dir", "bin"), ("file", "bin/busybox", BUSYBOX, 0o755),
        *[("symlink", f"bin/{a}", "busybox") for a in ("sh", "cat", "ls", "id", "pwd", "echo", "env", "test")],
        ("dir", "etc"), ("file", "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
        ("file", "etc/group", b"root:x:0:\napp:x:1000:\nextra:x:2000:app\n"),
        ("file", "etc/old", b"old\n"), ("dir", "var/cache"), ("file", "var/cache/stale", b"stale\n"),
        ("dir", "home/app"), ("dir", "srv")]
TOP = [("whiteout", "etc/old"), ("opaque", "var/cache"), ("file", "var/cache/fresh", b"fresh\n"),
       ("file", "srv/hello", b"hello from the top layer\n")]


def app_image(**kw) -> reg.ImageSpec:
    fields = {"layers": [BASE, TOP], "entrypoint": ["/bin/echo", "entry"], "cmd": ["from", "cmd"],
              "env": ["PATH=/bin", "GREETING=hi"], "working_dir": "/srv", "user": "app"}
    return reg.ImageSpec(**{**fields, **kw})


def run_out(inst, image: str, *command: str, flags: tuple = ()) -> str:
    p = inst.cli("run", "--rm", "--network", "none", "--image", image, *flags, *(["--", *command] if command else []),
                 check=True, timeout=120)
    return p.stdout


def store(inst) -> str:
    return os.path.join(inst.state_root, "images")


def layer_dirs(inst) -> set[str]:
    d = os.path.join(store(inst), "layers")
    return set(os.listdir(d)) if os.path.isdir(d) else set()


def assert_store_consistent(inst) -> None:
    """No orphan layer, no half-registered name: every layer belongs to a record, every
    name points at a record whose layers all exist."""
    root = store(inst)
    records = {}
    for name in os.listdir(os.path.join(root, "images")) if os.path.isdir(os.path.join(root, "images")) else []:
        with open(os.path.join(root, "images", name)) as f:
            records[name[:-5]] = json.load(f)
    used = {d[7:] for r in records.values() for d in r["layers"]}
    assert layer_dirs(inst) <= used, f"orphan layers: {layer_dirs(inst) - used}"
    index_path = os.path.join(root, "repositories.json")
    index = json.load(open(index_path)) if os.path.exists(index_path) else {}
    for key, image_id in index.items():
        assert image_id[7:] in records, key
        assert all(d[7:] in layer_dirs(inst) for d in records[image_id[7:]]["layers"]), key


# --- OCI layouts and docker save archives ---------------------------------------------------


def test_oci_layout_config_is_honoured_inside(inst, tmp_path):
    layout = str(tmp_path / "oci")
    reg.oci_layout(layout, {"v1": app_image()})
    inst.cli("image.load", layout, "--ref", "app:1", check=True)
    assert run_out(inst, "app:1").strip() == "entry from cmd"  # Entrypoint + Cmd
    assert run_out(inst, "app:1", "replaced").strip() == "entry replaced"  # a command replaces Cmd
    assert run_out(inst, "app:1", "-c", "pwd; id -u; id -G; echo $GREETING $HOME",
                   flags=("--entrypoint", "/bin/sh")).split() == ["/srv", "1000", "1000", "2000", "hi", "/home/app"]
    out = run_out(inst, "app:1", "-c", "id -u; pwd; echo $GREETING", flags=(
        "--entrypoint", "/bin/sh", "--user", "root", "--workdir", "/tmp", "--env", "GREETING=bye"))
    assert out.split() == ["0", "/tmp", "bye"]
    # whiteouts: etc/old hidden, var/cache opaque (only the top layer's file)
    out = run_out(inst, "app:1", "-c", "test -e /etc/old || echo gone; ls /var/cache; cat /srv/hello",
                  flags=("--entrypoint", "/bin/sh"))
    assert out.split("\n")[:3] == ["gone", "fresh", "hello from the top layer"]
    assert inst.cli("run", "--rm", "--network", "none", "--image", "app:1", "--user", "ghost").returncode != 0
    inst.cli("rmi", "app:1", check=True)


def test_oci_layout_tar_and_names(inst, tmp_path):
    layout = str(tmp_path / "oci")
    reg.oci_layout(layout, {"docker.io/team/app:2": app_image(), "bare": app_image(cmd=["other"])})
    tar = str(tmp_path / "oci.tar")
    shutil.make_archive(tar[:-4], "tar", layout)
    p = inst.cli("image.load", tar)
    assert p.returncode != 0 and "--ref" in p.stderr  # "bare" names only a tag
    inst.cli("image.load", tar, "--ref", "team/app:2", check=True)
    inst.cli("image.load", tar, "--ref", "mine:bare", check=True)
    listing = inst.cli("images", "--json", check=True).stdout
    names = {(r["name"], r["tag"]) for r in json.loads(listing)}
    assert {("team/app", "2"), ("mine", "bare")} <= names
    assert len(layer_dirs(inst)) == 2  # both images share both layers: stored once
    for ref in ("team/app:2", "mine:bare"):
        inst.cli("rmi", ref, check=True)
    assert layer_dirs(inst) == set()


@pytest.mark.parametrize("form", ["legacy", "oci"])
def test_docker_save_archives(inst, tmp_path, form):
    path = str(tmp_path / "save.tar")
    built = reg.docker_archive(path, app_image(), form=form, repo_tags=["saved/app:v1", "saved/app:latest"])
    out = inst.cli("image.load", path, check=True).stdout
    assert built.config_digest in out
    assert run_out(inst, "saved/app:v1").strip() == "entry from cmd"
    assert {d[7:] for d in built.diff_ids} == layer_dirs(inst)
    inst.cli("rmi", "saved/app:v1", check=True)
    assert layer_dirs(inst)  # still named saved/app:latest
    inst.cli("rmi", "saved/app:latest", check=True)
    assert layer_dirs(inst) == set()


def test_skopeo_and_umoci_written_layouts(inst, tmp_path):
    """A layout skopeo rewrote (docker-archive -> oci) loads too."""
    src = str(tmp_path / "save.tar")
    reg.docker_archive(src, app_image(), form="legacy", repo_tags=["x/y:1"])
    out = str(tmp_path / "by-skopeo")
    reg.skopeo(str(tmp_path), "copy", "--quiet", f"docker-archive:{src}", f"oci:{out}:v1")
    inst.cli("image.load", out, "--ref", "byskopeo:1", check=True)
    assert run_out(inst, "byskopeo:1").strip() == "entry from cmd"
    inst.cli("rmi", "byskopeo:1", check=True)


def test_rootfs_import_many_layers_and_prune(inst, tmp_path):
    layers = [[("dir", "bin"), ("file", "bin/busybox", BUSYBOX, 0o755), ("symlink", "bin/sh", "busybox"),
               ("symlink", "bin/cat", "busybox")]]
    layers += [[("dir", "layers"), ("file", f"layers/{i}", f"{i}\n".encode())] for i in range(150)]
    layout = str(tmp_path / "deep")
    reg.oci_layout(layout, {"deep": reg.ImageSpec(layers=layers, cmd=["/bin/cat", "/layers/0", "/layers/149"],
                                                   compression="none")})
    inst.cli("image.load", layout, "--ref", "deep:1", check=True)
    assert run_out(inst, "deep:1").split() == ["0", "149"]  # 151 lower dirs in one overlay mount
    inst.cli("rmi", "deep:1", check=True)
    assert layer_dirs(inst) == set()
    os.makedirs(os.path.join(store(inst), "staged", "f" * 64))  # as a killed pull leaves
    assert "0 image(s)" in inst.cli("image.prune", check=True).stdout
    assert not os.listdir(os.path.join(store(inst), "staged"))


def test_rmi_refused_while_used_then_forced(inst, tmp_path):
    layout = str(tmp_path / "oci")
    reg.oci_layout(layout, {"v1": app_image()})
    inst.cli("image.load", layout, "--ref", "app:1", check=True)
    run = inst.cli("run", "--name", "user1", "--network", "none", "--image", "app:1", check=True, timeout=120)
    assert "stopped -> /bin/echo entry from cmd" in run.stderr  # the report names what really runs
    assert "/bin/echo entry from cmd" in inst.docker("ps", "-a", "--no-trunc", check=True).stdout
    p = inst.cli("rmi", "app:1")
    assert p.returncode != 0 and "used by container user1" in p.stderr
    assert "user1" in inst.cli("images", "--json", check=True).stdout
    inst.cli("rmi", "app:1", "--force", check=True)
    assert "app" not in inst.cli("images", check=True).stdout
    assert layer_dirs(inst)  # the container still needs them
    assert inst.cli("start", "user1", "--attach", check=True, timeout=120).stdout.strip() == "entry from cmd"
    inst.cli("rm", "user1", check=True)
    inst.cli("image.prune", check=True)
    assert layer_dirs(inst) == set()
    assert_store_consistent(inst)


def test_from_docker_needs_a_daemon(inst):
    import subprocess

    docker = shutil.which("docker")
    alive = docker and subprocess.run([docker, "version", "--format", "{{.Server.Version}}"],
                                      capture_output=True).returncode == 0
    if alive:
        pytest.skip("a Docker daemon runs here; the tests leave the host's Docker alone")
    p = inst.cli("image.from-docker", "ubuntu:latest")
    assert p.returncode != 0
    assert "Docker daemon" in p.stderr or "docker command" in p.stderr
    assert not os.path.exists(os.path.join(store(inst), "repositories.json"))


# --- registries --------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path):
    with reg.Registry(str(tmp_path / "registry")) as r:
        yield r


def pushed(registry, tmp_path, spec, repo="team/app:1", all_platforms=False) -> str:
    layout = str(tmp_path / f"layout-{repo.replace('/', '_').replace(':', '_')}")
    reg.oci_layout(layout, {"t": spec})
    return reg.push(layout, "t", registry, repo, creds=registry.creds if registry.auth else None,
                    all_platforms=all_platforms)


def test_pull_and_run_from_a_registry(inst, registry, tmp_path):
    """zstd and uncompressed layers; run pulls; a pull by digest reuses the layers."""
    digest = pushed(registry, tmp_path, app_image(layers=[reg.Layer(BASE, "zstd"), reg.Layer(TOP, "none")]))
    ref = f"{registry.host}/team/app:1"
    assert run_out(inst, ref).strip() == "entry from cmd"  # run pulls what is missing
    image = json.loads(inst.cli("images", "--json", check=True).stdout)[0]
    assert image["name"] == f"{registry.host}/team/app" and image["tag"] == "1"
    p = inst.cli("pull", f"{registry.host}/team/app@{digest}", check=True)  # by digest: same layers
    assert "sha256:" in p.stdout
    assert len(layer_dirs(inst)) == 2
    assert_store_consistent(inst)


def test_pull_chooses_the_host_platform(inst, registry, tmp_path):
    pushed(registry, tmp_path, reg.platform_images(layers=[BASE]), repo="multi:1", all_platforms=True)
    ref = f"{registry.host}/multi:1"
    inst.cli("pull", ref, check=True)
    arch = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}.get(os.uname().machine)
    if arch is None:
        pytest.skip(f"the test index has no image for {os.uname().machine}")
    assert run_out(inst, ref, "/bin/cat", "/platform").strip() == arch


def test_resume_after_a_kill(inst, registry, tmp_path):
    big = os.urandom(3 << 20)  # incompressible: several chunks on the wire
    spec = app_image(layers=[BASE, TOP, [("file", "blob", big)]])
    pushed(registry, tmp_path, spec)
    ref = f"{registry.host}/team/app:1"
    p = inst.cli("pull", ref, fault="image.download.mid:kill")  # after the first MiB of a layer
    assert p.returncode != 0
    assert_store_consistent(inst)
    out = inst.cli("pull", ref, check=True)
    assert re.search(r"resumed at [1-9][0-9]* bytes", out.stderr)  # a Range request took up the partial blob
    inst.cli("rmi", ref, check=True)
    inst.cli("image.prune", check=True)
    for point in ("image.stage.mid", "image.commit.mid"):
        p = inst.cli("pull", ref, fault=f"{point}:kill")
        assert p.returncode != 0, point
        assert_store_consistent(inst)
        assert json.loads(inst.cli("images", "--json", check=True).stdout) == [], point
    inst.cli("pull", ref, check=True)  # takes up what the killed pulls staged or registered
    assert_store_consistent(inst)
    assert run_out(inst, ref, "/srv/hello", flags=("--entrypoint", "/bin/cat")).strip() == "hello from the top layer"
    inst.cli("rmi", ref, check=True)
    inst.cli("image.prune", check=True)
    assert not os.listdir(os.path.join(store(inst), "layers"))


def test_digest_mismatch_is_refused(inst, registry, tmp_path):
    spec = app_image()
    pushed(registry, tmp_path, spec)
    built = reg.oci_layout(str(tmp_path / "again"), {"t": spec})["t"]
    top = built.layer_digests[-1][7:]
    data = os.path.join(registry.workdir, "storage", "docker", "registry", "v2", "blobs", "sha256", top[:2], top,
                        "data")
    with open(data, "r+b") as f:
        f.seek(20)
        f.write(b"\x00tampered\x00")
    p = inst.cli("pull", f"{registry.host}/team/app:1")
    assert p.returncode != 0 and "digest mismatch" in p.stderr
    assert "team/app" not in inst.cli("images", check=True).stdout
    assert_store_consistent(inst)
    inst.cli("image.prune", check=True)


def test_basic_auth(inst, tmp_path):
    with reg.Registry(str(tmp_path / "registry"), auth="htpasswd") as r:
        pushed(r, tmp_path, app_image())
        ref = f"{r.host}/team/app:1"
        p = inst.cli("pull", ref)
        assert p.returncode != 0 and "username" in p.stderr
        p = inst.cli("pull", ref, "--username", "u", "--password-stdin", input="wrong\n")
        assert p.returncode != 0 and "denied" in p.stderr
        inst.cli("pull", ref, "--username", "u", "--password-stdin", input="p\n", check=True)
        home = tmp_path / "home"
        (home / ".docker").mkdir(parents=True)
        (home / ".docker" / "config.json").write_text(json.dumps({"auths": {r.host: {"auth": "dTpw"}}}))  # u:p
        inst.cli("rmi", ref, check=True)
        inst.cli("pull", ref, check=True, env={"HOME": str(home)})  # credentials from docker login's file
        inst.cli("rmi", ref, check=True)


def test_bearer_token_flow(inst, tmp_path):
    with reg.Registry(str(tmp_path / "registry"), auth="token") as r:
        pushed(r, tmp_path, app_image())
        ref = f"{r.host}/team/app:1"
        before = len(r.token_requests)
        p = inst.cli("pull", ref)
        assert p.returncode != 0 and "denied" in p.stderr
        anonymous = r.token_requests[before:]
        assert anonymous and all(t["user"] is None for t in anonymous)
        assert anonymous[0]["scope"] == "repository:team/app:pull"
        inst.cli("pull", ref, "--username", "u", "--password-stdin", input="p\n", check=True)
        assert any(t["user"] == "u" and t["scope"] == "repository:team/app:pull" for t in r.token_requests)
        inst.cli("rmi", ref, check=True)


def test_umoci_written_layout(inst, tmp_path):
    import subprocess

    if not shutil.which("umoci"):
        pytest.skip("umoci is not installed")
    layout, bundle = str(tmp_path / "by-umoci"), str(tmp_path / "bundle")
    umoci = ["umoci", "--log", "error"]
    subprocess.run([*umoci, "init", "--layout", layout], check=True)
    subprocess.run([*umoci, "new", "--image", f"{layout}:v1"], check=True)
    subprocess.run([*umoci, "unpack", "--image", f"{layout}:v1", bundle], check=True, capture_output=True)
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    os.symlink("busybox", os.path.join(rootfs, "bin", "sh"))
    with open(os.path.join(rootfs, "hello"), "w") as f:
        f.write("made by umoci\n")
    # (umoci 0.4.7's `insert` writes a layer tar without its end blocks; repack does not)
    subprocess.run([*umoci, "repack", "--image", f"{layout}:v1", bundle], check=True)
    subprocess.run([*umoci, "config", "--image", f"{layout}:v1", "--config.cmd", "/bin/sh", "--config.cmd", "-c",
                    "--config.cmd", "cat /hello"], check=True)
    inst.cli("image.load", layout, "--ref", "byumoci:1", check=True)
    assert run_out(inst, "byumoci:1").strip() == "made by umoci"
    inst.cli("rmi", "byumoci:1", check=True)


class BlobRedirectRegistry:
    """A tiny registry on 127.0.0.1 (Basic auth) serving an OCI layout, whose blob
    GETs redirect to a blob store on 127.0.0.2 that records the headers it gets."""

    def __init__(self, layout: str, tag: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.layout, self.tag, self.seen = layout, tag, []
        outer = self

        class Api(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.headers.get("Authorization") != "Basic dTpw":  # u:p
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="test"')
                    self.end_headers()
                    return
                if "/blobs/" in self.path:
                    self.send_response(307)
                    self.send_header("Location", f"http://127.0.0.2:{outer.store.server_port}/b/"
                                                 f"{self.path.rsplit('/', 1)[1]}")
                    self.end_headers()
                    return
                outer.serve(self, outer.manifest_digest() if self.path.endswith(f"/{outer.tag}")
                            else self.path.rsplit("/", 1)[1], "application/vnd.oci.image.manifest.v1+json")

        class Blobs(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.seen.append(dict(self.headers))
                outer.serve(self, self.path.rsplit("/", 1)[1], "application/octet-stream")

        self.api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
        self.store = ThreadingHTTPServer(("127.0.0.2", 0), Blobs)
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.api, self.store)]
        for t in self.threads:
            t.start()

    def manifest_digest(self) -> str:
        with open(os.path.join(self.layout, "index.json")) as f:
            return json.load(f)["manifests"][0]["digest"]

    def serve(self, handler, digest: str, media: str) -> None:
        with open(os.path.join(self.layout, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
            data = f.read()
        handler.send_response(200)
        handler.send_header("Content-Type", media)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        for s in (self.api, self.store):
            s.shutdown()
            s.server_close()


def test_redirects_never_carry_the_authorization_elsewhere(inst, tmp_path):
    layout = str(tmp_path / "oci")
    reg.oci_layout(layout, {"v1": app_image()})
    server = BlobRedirectRegistry(layout, "v1")
    try:
        ref = f"127.0.0.1:{server.api.server_port}/team/app:v1"
        inst.cli("pull", ref, "--username", "u", "--password-stdin", input="p\n", check=True)
        assert len(server.seen) >= 3  # config and both layers came from the blob store
        assert not [h for h in server.seen if "Authorization" in h]
        assert run_out(inst, ref).strip() == "entry from cmd"
    finally:
        server.close()


def test_progress_bars_on_a_terminal(inst, registry, tmp_path):
    import pty
    import subprocess
    import sys

    pushed(registry, tmp_path, app_image())
    master, slave = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "invoke", "pull", f"{registry.host}/team/app:1"],
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=inst.env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, timeout=120)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert "100%" in text and "B/s" in text  # tqdm's bars, one per layer
    assert "layer " not in text  # the quiet lines are for pipes and files
    inst.cli("rmi", f"{registry.host}/team/app:1", check=True)


class StandInDockerd:
    """Just enough of the Docker Engine API on a unix socket for the real docker CLI's
    `version` and `save`: the daemon this host does not run, serving one archive."""

    def __init__(self, socket_path: str, archive: str, name: str):
        import socketserver
        import threading
        from http.server import BaseHTTPRequestHandler
        from urllib.parse import parse_qs, urlsplit

        outer = self
        self.requests: list[str] = []

        class Api(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def address_string(self):
                return "unix"

            def log_message(self, *a):
                pass

            def reply(self, body: bytes, kind: str = "application/json", code: int = 200):
                self.send_response(code)
                self.send_header("API-Version", "1.43")
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                self.reply(b"OK", "text/plain")

            def do_GET(self):
                url = urlsplit(self.path)
                outer.requests.append(url.path)
                if url.path.endswith("/_ping"):
                    self.reply(b"OK", "text/plain")
                elif url.path.endswith("/version"):
                    self.reply(json.dumps({"Version": "28.0.0-standin", "ApiVersion": "1.43", "MinAPIVersion": "1.24",
                                           "Os": "linux", "Arch": "amd64"}).encode())
                elif url.path.endswith("/images/get") and parse_qs(url.query).get("names") == [name]:
                    with open(archive, "rb") as f:
                        self.reply(f.read(), "application/x-tar")
                else:
                    self.reply(json.dumps({"message": f"No such image: {url.query}"}).encode(), code=404)

        self.server = socketserver.ThreadingUnixStreamServer(socket_path, Api)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_from_docker_through_the_docker_cli(inst, tmp_path):
    if not shutil.which("docker"):
        pytest.skip("the docker command is not installed")
    archive = str(tmp_path / "save.tar")
    reg.docker_archive(archive, app_image(), form="oci", repo_tags=["team/app:7"])
    sock = str(tmp_path / "docker.sock")
    daemon = StandInDockerd(sock, archive, "team/app:7")
    try:
        env = {"DOCKER_HOST": f"unix://{sock}", "DOCKER_CONFIG": str(tmp_path / "docker-config")}
        inst.cli("image.from-docker", "team/app:7", check=True, env=env)
        assert any(p.endswith("/images/get") for p in daemon.requests)
        assert run_out(inst, "team/app:7").strip() == "entry from cmd"
        p = inst.cli("image.from-docker", "team/nothere:1", env=env)
        assert p.returncode != 0 and "docker save team/nothere:1 failed" in p.stderr
    finally:
        daemon.close()
    inst.cli("rmi", "team/app:7", check=True)
    assert not os.listdir(os.path.join(store(inst), "tmp"))


def test_a_layer_listed_twice(inst, registry, tmp_path):
    """Fetched and stored once, mounted once (overlayfs refuses a lower dir twice)."""
    pushed(registry, tmp_path, app_image(layers=[BASE, TOP, [("file", "srv/mid", b"m\n")], TOP]))
    ref = f"{registry.host}/team/app:1"
    assert run_out(inst, ref, "-c", "cat /srv/hello /srv/mid; test -e /etc/old || echo gone",
                   flags=("--entrypoint", "/bin/sh")).split("\n")[:3] == ["hello from the top layer", "m", "gone"]
    assert len(layer_dirs(inst)) == 3
    inst.cli("rmi", ref, check=True)


def test_store_is_root_only_and_a_fifo_passwd_is_not_opened(inst, tmp_path):
    """Layers hold setuid files and devices: the store and the containers' trees are 0700.
    The image's /etc/passwd is read only when it is a regular file (a FIFO would hang us)."""
    base = [m for m in BASE if m[1] != "etc/passwd"] + [("fifo", "etc/passwd")]
    layout = str(tmp_path / "oci")
    reg.oci_layout(layout, {"v1": app_image(layers=[base])})
    inst.cli("image.load", layout, "--ref", "fifo:1", check=True)
    p = inst.cli("run", "--name", "ff", "--network", "none", "--image", "fifo:1", timeout=30)
    assert p.returncode != 0 and "unable to find user app" in p.stderr
    assert os.stat(store(inst)).st_mode & 0o777 == 0o700
    inst.cli("run", "--name", "ok", "--network", "none", "--image", "fifo:1", "--user", "0", check=True)
    assert os.stat(os.path.join(inst.state_root, "containers")).st_mode & 0o777 == 0o700
    inst.cli("rm", "ok", check=True)
    inst.cli("rmi", "fifo:1", check=True)
