"""Users' kustomize overlays of manifests/install and manifests/monitoring, rendered by the
pinned kubectl's kustomize (built with the local control plane) from a temporary folder, as a
user's own repository would reference them.

Both images are settable with `images:` (the serving image lives in an env var, which
manifests/install/kustomizeconfig.yaml adds to the fields the images transformer rewrites),
and kube-prometheus-stack's `release:` label goes on with a `labels:` overlay.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "manifests" / "install"
MONITORING = REPO / "manifests" / "monitoring"
DIGEST = "sha256:" + "0123456789abcdef" * 4

Doc = dict[str, Any]


@functools.cache
def _kubectl() -> str:
    path = subprocess.run(
        [str(REPO / "hack" / "cluster.sh"), "kubectl"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(path).is_file():
        pytest.skip("the pinned kubectl is not built (make control-plane)")
    return path


def _render(directory: Path) -> list[Doc]:
    proc = subprocess.run(
        [_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _overlay(directory: Path, kustomization: Doc) -> list[Doc]:
    """A user's overlay in `directory`; its bases are named by relative paths, as in a repo."""
    directory.mkdir(parents=True, exist_ok=True)
    bases = [os.path.relpath(base, directory) for base in kustomization["resources"]]
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump({**kustomization, "resources": bases})
    )
    return _render(directory)


def _operator(docs: list[Doc]) -> tuple[str, str]:
    """The operator container's image and its CANARIUM_SERVING_IMAGE."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    return container["image"], env["CANARIUM_SERVING_IMAGE"]["value"]


IMAGES = [
    {
        "name": "ghcr.io/canarium-dev/canarium-operator",
        "newName": "registry.example.com/ml/canarium-operator",
        "digest": DIGEST,
    },
    {
        "name": "ghcr.io/canarium-dev/canarium-serving",
        "newName": "registry.example.com/ml/canarium-serving",
        "newTag": "2.0.1",
    },
]


def test_install_itself_pins_both_images() -> None:
    docs = _render(INSTALL)
    assert _operator(docs) == (
        "ghcr.io/canarium-dev/canarium-operator:0.1.0",
        "ghcr.io/canarium-dev/canarium-serving:0.1.0",
    )


def test_an_overlay_sets_both_images(tmp_path: Path) -> None:
    docs = _overlay(tmp_path / "overlay", {"resources": [INSTALL], "images": IMAGES})
    assert _operator(docs) == (
        f"registry.example.com/ml/canarium-operator@{DIGEST}",
        "registry.example.com/ml/canarium-serving:2.0.1",
    )
    # Nothing else changed: the CRDs' `image` property, POD_NAME's valueFrom.
    text = yaml.safe_dump_all(docs)
    assert text.count("registry.example.com") == 2


def test_an_overlay_of_an_overlay_still_sets_the_serving_image(tmp_path: Path) -> None:
    """The image fieldSpec is the base's configuration: it carries through every level."""
    _overlay(tmp_path / "middle", {"resources": [INSTALL], "commonAnnotations": {"team": "ml"}})
    docs = _overlay(
        tmp_path / "top",
        {"resources": [tmp_path / "middle"], "images": [{**IMAGES[1], "newTag": "3.0"}]},
    )
    assert _operator(docs) == (
        "ghcr.io/canarium-dev/canarium-operator:0.1.0",
        "registry.example.com/ml/canarium-serving:3.0",
    )


def test_only_the_named_image_changes(tmp_path: Path) -> None:
    docs = _overlay(
        tmp_path / "overlay",
        {"resources": [INSTALL], "images": [{**IMAGES[0], "digest": None, "newTag": "9"}]},
    )
    assert _operator(docs) == (
        "registry.example.com/ml/canarium-operator:9",
        "ghcr.io/canarium-dev/canarium-serving:0.1.0",
    )


def test_monitoring_overlay_adds_the_release_label_kube_prometheus_stack_selects(
    tmp_path: Path,
) -> None:
    docs = _overlay(
        tmp_path / "monitoring",
        {
            "resources": [MONITORING],
            "labels": [{"pairs": {"release": "kube-prometheus-stack"}, "includeSelectors": False}],
        },
    )
    kinds = {d["kind"]: d for d in docs}
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert kinds[kind]["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    # The monitors still select the operator's Service and the serving pods, nothing more.
    assert "release" not in kinds["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert "release" not in kinds["PodMonitor"]["spec"]["selector"]["matchLabels"]


def test_service_monitor_honors_the_models_namespace_label() -> None:
    """The operator's per-ModelDeployment series carry the model's `namespace`; without
    honorLabels, kube-prometheus-stack's Prometheus renames it `exported_namespace`."""
    docs = _render(MONITORING)
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert [e.get("honorLabels") for e in monitor["spec"]["endpoints"]] == [True]
    (pod_monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    # Serving pods run users' images: their labels do not override the target's namespace.
    assert not any(e.get("honorLabels") for e in pod_monitor["spec"]["podMetricsEndpoints"])
