"""Self-check of the test-support module tests/registry.py (not of diy-docker itself).

It proves the pieces registry tests rely on: a real docker-registry in each auth mode, skopeo pushes of
the layouts built in Python, the Docker token flow done by hand, and that nothing is left behind.
"""
from __future__ import annotations

import json
import os
import tarfile

import pytest

from tests import host
from tests import registry as reg

pytestmark = pytest.mark.usefixtures("no_residue")

TWO_LAYERS = reg.ImageSpec(
    layers=[
        [("dir", "bin"), ("file", "bin/hello", b"hello\n", 0o755), ("symlink", "bin/sh", "hello"),
         ("dir", "etc"), ("file", "etc/old", b"old"), ("dir", "var/cache"), ("file", "var/cache/x", b"x")],
        reg.Layer([("whiteout", "etc/old"), ("opaque", "var/cache"), ("hardlink", "bin/hi", "bin/hello")],
                  compression="zstd"),
    ],
    entrypoint=["/bin/hello"], cmd=["world"], env=["PATH=/bin", "A=1"], working_dir="/var", user="1000:1000")


@pytest.fixture
def no_residue(tmp_path):
    reg.require_tools(reg.REGISTRY_BIN, "skopeo", "openssl", "htpasswd")
    before = reg.spill_paths()
    yield
    assert host.processes_mentioning(str(tmp_path)) == []
    assert reg.spill_paths() - before == set()


def layout(tmp_path) -> tuple[str, dict]:
    path = str(tmp_path / "oci")
    return path, reg.oci_layout(path, {"v1": TWO_LAYERS, "multi": reg.platform_images()})


def assert_image_served(registry: reg.Registry, repo: str, built: reg.BuiltImage, creds=None) -> None:
    resp = reg.fetch_manifest(registry, repo, "v1", creds)
    assert resp.status == 200, resp.body
    assert resp.headers["docker-content-digest"] == built.manifest_digest
    assert resp.headers["content-type"] == reg.MT_OCI_MANIFEST
    assert [layer["digest"] for layer in resp.json()["layers"]] == built.layer_digests


def test_layout_contents(tmp_path):
    path, built = layout(tmp_path)
    image = built["v1"]
    with tarfile.open(os.path.join(path, "blobs", "sha256", image.layer_digests[0].split(":")[1])) as tar:
        names = tar.getnames()
    assert names == ["bin", "bin/hello", "bin/sh", "etc", "etc/old", "var/cache", "var/cache/x"]
    assert image.config["rootfs"]["diff_ids"] == image.diff_ids
    assert image.config["config"]["Entrypoint"] == ["/bin/hello"]
    with open(os.path.join(path, "index.json")) as f:
        index = json.load(f)
    assert [m["annotations"][reg.REF_NAME] for m in index["manifests"]] == ["v1", "multi"]
    assert index["manifests"][1]["mediaType"] == reg.MT_OCI_INDEX


def test_plain_registry_push_and_fetch(tmp_path):
    path, built = layout(tmp_path)
    with reg.Registry(str(tmp_path / "reg")) as registry:
        assert reg.push(path, "v1", registry, "test/hello") == built["v1"].manifest_digest
        assert_image_served(registry, "test/hello", built["v1"])
        assert reg.push(path, "multi", registry, "test/multi:v1", all_platforms=True) == built["multi"].index_digest
        resp = reg.fetch_manifest(registry, "test/multi", "v1")
        assert resp.status == 200 and resp.headers["content-type"] == reg.MT_OCI_INDEX
        platforms = [m["platform"] for m in resp.json()["manifests"]]
        assert [p.get("variant") for p in platforms] == [None, None, "v7"]
        arm = built["multi"].for_platform("arm", "v7")
        blob = reg.http_request(f"{registry.url}/v2/test/multi/blobs/{arm.config_digest}")
        assert blob.json()["rootfs"]["diff_ids"] == arm.diff_ids


def test_htpasswd_registry(tmp_path):
    path, built = layout(tmp_path)
    with reg.Registry(str(tmp_path / "reg"), auth="htpasswd") as registry:
        with pytest.raises(RuntimeError, match="unauthorized|authentication required"):
            reg.push(path, "v1", registry, "test/hello")
        reg.push(path, "v1", registry, "test/hello", creds=registry.creds)
        assert reg.fetch_manifest(registry, "test/hello", "v1").status == 401
        assert reg.fetch_manifest(registry, "test/hello", "v1", ("u", "wrong")).status == 401
        assert_image_served(registry, "test/hello", built["v1"], registry.creds)


def test_token_registry_challenge_flow(tmp_path):
    path, built = layout(tmp_path)
    with reg.Registry(str(tmp_path / "reg"), auth="token") as registry:
        reg.push(path, "v1", registry, "test/hello", creds=registry.creds)
        expected = {"user": "u", "scope": "repository:test/hello:pull,push", "service": reg.SERVICE, "status": 200}
        assert expected.items() <= registry.token_requests[0].items()

        url = f"{registry.url}/v2/test/hello/manifests/v1"
        first = reg.http_request(url, headers={"Accept": reg.MANIFEST_ACCEPT})
        assert first.status == 401
        scheme, challenge = reg.parse_challenge(first.headers["www-authenticate"])
        assert scheme == "bearer" and challenge["service"] == reg.SERVICE
        assert challenge["scope"] == "repository:test/hello:pull"

        token = reg.fetch_token(challenge, registry.creds)
        assert token.status == 200 and token.json()["expires_in"] == 300
        retry = reg.http_request(url, headers={"Accept": reg.MANIFEST_ACCEPT,
                                               "Authorization": "Bearer " + token.json()["token"]})
        assert retry.status == 200 and retry.headers["docker-content-digest"] == built["v1"].manifest_digest

        anonymous = reg.fetch_token(challenge)
        assert anonymous.status == 200 and registry.token_requests[-1]["access"] == []
        refused = reg.http_request(url, headers={"Authorization": "Bearer " + anonymous.json()["token"]})
        assert refused.status == 401
        assert reg.fetch_token(challenge, ("u", "wrong")).status == 401


def test_token_registry_anonymous_pull(tmp_path):
    path, built = layout(tmp_path)
    with reg.Registry(str(tmp_path / "reg"), auth="token", anonymous_pull=True) as registry:
        with pytest.raises(RuntimeError):
            reg.push(path, "v1", registry, "test/hello")
        reg.push(path, "v1", registry, "test/hello", creds=registry.creds)
        assert_image_served(registry, "test/hello", built["v1"])
        assert registry.token_requests[-1]["user"] is None
        assert registry.token_requests[-1]["access"][0]["actions"] == ["pull"]


@pytest.mark.parametrize("form", ["legacy", "oci"])
def test_docker_archive_is_readable_by_skopeo(tmp_path, form):
    archive = str(tmp_path / "image.tar")
    built = reg.docker_archive(archive, TWO_LAYERS, form=form, repo_tags=["diy/hello:1"])
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "manifest.json" in names and ("index.json" in names) == (form == "oci")
    config = json.loads(reg.skopeo(str(tmp_path), "inspect", "--config", f"docker-archive:{archive}").stdout)
    assert config["rootfs"]["diff_ids"] == built.diff_ids
    assert config["config"]["WorkingDir"] == "/var"
