"""deploy/kubernetes/workspace-pod.yaml as `docker run` options: the one source of truth
for what a workspace container needs. test_workspace_image.py runs the workspace image
with exactly these, and drops each in turn; tests/unit/test_kubernetes.py checks the file
against the Kubernetes API's models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
POD = ROOT / "deploy" / "kubernetes" / "workspace-pod.yaml"
STATEFULSET = ROOT / "deploy" / "kubernetes" / "workspace-statefulset.yaml"
ARC = ROOT / "deploy" / "kubernetes" / "arc-runner-values.yaml"
# The kubelet's seccomp directory, as shipped: localhostProfile names a file in it.
SECCOMP_ROOT = ROOT / "deploy" / "kubernetes" / "seccomp"
APPARMOR = Path("/sys/module/apparmor/parameters/enabled")


@dataclass(frozen=True)
class Needed:
    field: str  # where in the pod spec
    options: tuple[str, ...]  # the docker run equivalent
    fails_with: str  # what goes wrong without it, in that failure's words ("": not known)


def load(path: Path = POD) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def workspace_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod_spec["containers"] if c["name"] == "workspace"]
    return container


# Every securityContext field the manifest may set, and what the translation does with it:
# a field added to the manifest that is not here fails the translation (no silent drift).
KNOWN = {
    "privileged",
    "runAsUser",
    "runAsGroup",
    "allowPrivilegeEscalation",
    "capabilities",
    "seccompProfile",
    "appArmorProfile",
    "procMount",
}


def docker_run_options(pod_spec: dict[str, Any]) -> tuple[list[Needed], list[str]]:
    """(what the workspace needs, each with its docker run options; the other options:
    the user and the data-root volume). Raises on anything it cannot translate."""
    c = workspace_container(pod_spec)
    sc = c["securityContext"]
    unknown = set(sc) - KNOWN
    if unknown:
        raise ValueError(f"securityContext fields with no docker run equivalent: {unknown}")
    if sc["privileged"] is not False or sc["allowPrivilegeEscalation"] is not True:
        # docker run's default is what these say: not privileged, no no-new-privileges.
        raise ValueError("the workspace must be unprivileged and may gain privileges (setuid)")
    needed = []
    seccomp = sc["seccompProfile"]
    if seccomp["type"] in ("Unconfined", "Localhost"):
        # Without it, the runtime's default profile: moby's refuses unshare without SYS_ADMIN.
        value = "unconfined"
        if seccomp["type"] == "Localhost":
            value = str(SECCOMP_ROOT / seccomp["localhostProfile"])
        needed.append(
            Needed(
                "securityContext.seccompProfile",
                ("--security-opt", f"seccomp={value}"),
                "unshare: Operation not permitted",
            )
        )
    if sc["procMount"] == "Unmasked":
        needed.append(
            Needed(
                "securityContext.procMount",
                ("--security-opt", "systempaths=unconfined"),
                "Read-only file system",
            )
        )
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    for name, path in mounts.items():
        v = volumes.get(name, {})
        if v.get("hostPath", {}).get("type") == "CharDevice":
            assert v["hostPath"]["path"] == path, "a device appears where the node has it"
            needed.append(
                Needed(
                    f"volumes.{name} (hostPath CharDevice)",
                    ("--device", path),
                    f"{path} is missing",
                )
            )
    for cap in sc.get("capabilities", {}).get("add", []):
        needed.append(
            Needed(
                f"securityContext.capabilities.add {cap}",
                ("--cap-add", cap),
                "write to uid_map failed" if cap == "SYS_ADMIN" else "",
            )
        )
    if sc["appArmorProfile"] == {"type": "Unconfined"} and apparmor_active():
        needed.append(
            Needed("securityContext.appArmorProfile", ("--security-opt", "apparmor=unconfined"), "")
        )
    other = ["--user", f"{sc['runAsUser']}:{sc['runAsGroup']}"]
    for name, path in mounts.items():
        if "emptyDir" in volumes.get(name, {}):
            other += ["-v", f"ws-{name}:{path}"]  # a volume: not on the container's overlay
    return needed, other


def apparmor_active() -> bool:
    return APPARMOR.exists() and APPARMOR.read_text().strip() == "Y"
