"""deploy/kubernetes against the Kubernetes API's own models (the official client's, no
cluster needed): every field known to the API, of the API's type, required ones present;
and the translation the workspace image test runs with."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest

from tests.manifest import (
    ARC,
    POD,
    ROOT,
    SECCOMP_ROOT,
    STATEFULSET,
    Needed,
    docker_run_options,
    load,
    workspace_container,
)

# The pre-1.19 annotation podman kube play still reads the seccomp profile from.
SECCOMP_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io"

PRIMITIVES = {
    "str": str,
    "bool": bool,
    "int": int,
    "float": (int, float),
    "object": object,
    "datetime": str,
    "date": str,
}


def problems(value: Any, kind: str, where: str) -> list[str]:
    """Where value is not a `kind` as the API defines it (the client's openapi_types)."""
    if m := re.fullmatch(r"[lL]ist\[(.+)\]", kind):
        if not isinstance(value, list):
            return [f"{where}: a list expected"]
        return [p for i, v in enumerate(value) for p in problems(v, m.group(1), f"{where}[{i}]")]
    if m := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", kind):
        if not isinstance(value, dict):
            return [f"{where}: a map expected"]
        inner = m.group(1) or m.group(2)
        return [p for k, v in value.items() for p in problems(v, inner, f"{where}.{k}")]
    if kind in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[kind]) and not (kind == "int" and value is True)
        return [] if ok else [f"{where}: {kind} expected, found {value!r}"]
    model = getattr(k8s, kind)
    if not isinstance(value, dict):
        return [f"{where}: a {kind} object expected"]
    by_json = {j: a for a, j in model.attribute_map.items()}
    found = [f"{where}.{k}: no such field in {kind}" for k in value if k not in by_json]
    for key, v in value.items():
        if key in by_json:
            found += problems(v, model.openapi_types[by_json[key]], f"{where}.{key}")
    # Required fields: the model's constructor refuses None for them (client-side checks).
    try:
        k8s.ApiClient()._ApiClient__deserialize(value, kind)  # type: ignore[attr-defined]
    except ValueError as e:
        found.append(f"{where}: {e}")
    return found


@pytest.mark.parametrize(
    ("path", "kind"), [(POD, "V1Pod"), (STATEFULSET, "V1StatefulSet")], ids=["pod", "statefulset"]
)
def test_manifests_are_valid_kubernetes_objects(path: Path, kind: str) -> None:
    assert problems(load(path), kind, path.name) == []


def test_the_validator_finds_what_the_api_would_refuse() -> None:
    doc = load(POD)
    doc["spec"]["containers"][0]["securityContext"]["procMounts"] = "Unmasked"  # a typo
    doc["spec"]["hostUsers"] = "false"  # a string, not a bool
    del doc["spec"]["containers"][0]["name"]  # required
    found = problems(doc, "V1Pod", "pod")
    assert any("procMounts: no such field in V1SecurityContext" in p for p in found)
    assert any("hostUsers: bool expected" in p for p in found)
    assert any("name" in p and "None" in p for p in found), found


def test_the_statefulset_asks_for_what_the_pod_asks_for() -> None:
    pod = load(POD)["spec"]
    template = load(STATEFULSET)["spec"]["template"]["spec"]
    assert template["hostUsers"] == pod["hostUsers"]
    sc = lambda spec: spec["containers"][0]["securityContext"]  # noqa: E731
    assert sc(template) == sc(pod)


def test_the_manifest_translates_to_the_proven_docker_run_options() -> None:
    needed, other = docker_run_options(load(POD)["spec"])
    opts = {n.options for n in needed}
    assert {
        ("--security-opt", f"seccomp={SECCOMP_ROOT / 'docker-up-workspace.json'}"),
        ("--security-opt", "systempaths=unconfined"),
        ("--device", "/dev/net/tun"),
    } <= opts
    assert not [o for o in opts if o[0] == "--cap-add"]  # the image's newuidmap needs none
    assert all(isinstance(n, Needed) for n in needed)
    assert other[:2] == ["--user", "33333:33333"]
    assert "ws-docker-data:/home/gitpod/.local/share" in other


def test_a_field_the_translation_does_not_know_fails_it() -> None:
    spec = load(POD)["spec"]
    spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = True
    with pytest.raises(ValueError, match="readOnlyRootFilesystem"):
        docker_run_options(spec)


def seccomp_of(pod: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(the workspace container's seccompProfile field, the pod's annotation for it)."""
    field = workspace_container(pod["spec"])["securityContext"]["seccompProfile"]
    annotations = pod["metadata"].get("annotations", {})
    return field, annotations.get(f"{SECCOMP_ANNOTATION}/workspace", "")


@pytest.mark.parametrize("path", [POD, STATEFULSET], ids=["pod", "statefulset"])
def test_the_seccomp_profile_is_shipped_not_unconfined(path: Path) -> None:
    doc = load(path)
    pod = doc if doc["kind"] == "Pod" else doc["spec"]["template"]
    field, annotation = seccomp_of(pod)
    assert field["type"] == "Localhost", field
    assert (SECCOMP_ROOT / field["localhostProfile"]).is_file()
    # podman kube play (5.4) reads only the annotation: it must name the same file.
    assert annotation == f"localhost/{field['localhostProfile']}"


def test_the_seccomp_profile_is_one_every_runtime_reads_alike() -> None:
    (path,) = SECCOMP_ROOT.glob("*.json")
    profile = json.loads(path.read_text())
    # Refuses what it does not list, as the runtimes' defaults do.
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["architectures"][0] == "SCMP_ARCH_X86_64"
    # containerd reads a Localhost profile into the OCI spec, which has no conditions: a
    # conditional rule would apply unconditionally there. The profile is flat.
    assert "archMap" not in profile
    rules = profile["syscalls"]
    assert rules and all(not r.get("includes") and not r.get("excludes") for r in rules)
    assert all(r["names"] and r["action"].startswith("SCMP_ACT_") for r in rules)
    # Every rule says where it comes from: the default, or docker-up's reason for it.
    assert all(r.get("comment") for r in rules)


def test_the_shipped_profile_is_what_the_generator_makes() -> None:
    """scripts/seccomp-profile's additions are all in the file, with their reasons."""
    path = SECCOMP_ROOT / "docker-up-workspace.json"
    profile = json.loads(path.read_text())
    generator = runpy.run_path(str(ROOT / "scripts" / "seccomp-profile"), run_name="generator")
    assert generator["ADDITIONS"], "the generator adds nothing: this test would hold nothing"
    for added in generator["ADDITIONS"]:
        assert added in profile["syscalls"], added


def test_the_ci_runner_pod_is_a_valid_template_asking_for_what_the_pod_asks_for() -> None:
    """arc-runner-values.yaml's template is what the ARC chart makes the runner pod of."""
    values = load(ARC)
    template = values["template"]
    assert problems(template, "V1PodTemplateSpec", ARC.name) == []
    assert "containerMode" not in values  # the chart's dind mode runs a privileged sidecar
    (runner,) = template["spec"]["containers"]
    sc = runner["securityContext"]
    pod_sc = workspace_container(load(POD)["spec"])["securityContext"]
    assert {k: v for k, v in sc.items() if not k.startswith("runAs")} == {
        k: v for k, v in pod_sc.items() if not k.startswith("runAs")
    }
    assert template["spec"]["hostUsers"] is False and sc["privileged"] is False
    assert runner["command"][0] == "/usr/bin/tini"
    annotation = template["metadata"]["annotations"][f"{SECCOMP_ANNOTATION}/runner"]
    assert annotation == f"localhost/{sc['seccompProfile']['localhostProfile']}"
