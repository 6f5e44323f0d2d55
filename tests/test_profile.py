"""The security profile's pure logic: capability names and sets, --security-opt, the spec."""
from __future__ import annotations

import json

import pytest

from steps import BadInput, spec
from steps.runtime import profile

DOCKER_DEFAULT_MASK = 0xA80425FB  # CapEff of a default `docker run` (Docker's 14 capabilities)


def test_default_set_is_dockers_fourteen():
    caps = profile.effective_caps(False, [], [])
    assert len(caps) == 14
    assert profile.cap_mask(caps) == DOCKER_DEFAULT_MASK


@pytest.mark.parametrize("raw", ["net_admin", "NET_ADMIN", "CAP_NET_ADMIN", "cap_net_admin", " Net_Admin "])
def test_capability_names_with_or_without_prefix(raw):
    assert profile.cap_name(raw, "--cap-add") == "NET_ADMIN"


@pytest.mark.parametrize("raw", ["FOO", "CAP_", "", "NET-ADMIN", "cap_all_of_them"])
def test_unknown_capabilities_are_refused_in_one_line(raw):
    with pytest.raises(BadInput) as e:
        profile.cap_name(raw, "--cap-add")
    assert "\n" not in str(e.value) and "--cap-add" in str(e.value)


def test_add_and_drop_follow_dockers_rules():
    assert "NET_ADMIN" in profile.effective_caps(False, ["NET_ADMIN"], [])
    assert "CHOWN" not in profile.effective_caps(False, [], ["CHOWN"])
    assert profile.effective_caps(False, [], ["ALL"]) == []
    assert profile.effective_caps(False, ["NET_RAW"], ["ALL"]) == ["NET_RAW"]
    assert profile.effective_caps(False, ["ALL"], ["SYS_ADMIN"]) == [
        c for c in profile.known_capabilities() if c != "SYS_ADMIN"]
    assert profile.effective_caps(True, [], ["ALL"]) == list(profile.known_capabilities())


def test_security_opts():
    assert profile.parse_security_opts([]) == {"seccomp": "default", "no_new_privileges": False}
    assert profile.parse_security_opts(["seccomp=unconfined", "no-new-privileges"]) == {
        "seccomp": "unconfined", "no_new_privileges": True}
    assert profile.parse_security_opts(["seccomp:unconfined", "no-new-privileges:true"])["no_new_privileges"]
    assert not profile.parse_security_opts(["no-new-privileges=false"])["no_new_privileges"]
    for bad in ("apparmor=unconfined", "seccomp", "seccomp=", "no-new-privileges=maybe", "label=disable", "x"):
        with pytest.raises(BadInput) as e:
            profile.parse_security_opts([bad])
        assert "--security-opt" in str(e.value)


def test_seccomp_profile_file_is_checked_when_given(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        profile.parse_security_opts([f"seccomp={tmp_path}/missing.json"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match="bad seccomp profile"):
        profile.parse_security_opts([f"seccomp={bad}"])
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}))
    assert profile.parse_security_opts([f"seccomp={good}"])["seccomp"] == str(good)


def test_resolve_privileged_has_no_masks_and_every_capability():
    p = profile.resolve({"privileged": True})
    assert p.masked_paths == [] and p.readonly_paths == [] and p.seccomp_source is None
    assert p.caps == list(profile.known_capabilities())
    d = profile.resolve({}).describe()
    assert "/proc/kcore" in d["masked_paths"] and "/proc/sys" in d["readonly_paths"]
    assert d["seccomp"] == "default" and not d["privileged"] and len(d["capabilities"]) == 14


def test_a_record_from_before_the_flags_is_the_same_container():
    new = {**spec.parse_security(False, [], [], []), "tty": False, "interactive": False, "name": "a"}
    old = {"name": "a"}
    assert spec.same(old, new)
    assert spec.differences(old, {**new, "privileged": True}) == ["privileged"]
