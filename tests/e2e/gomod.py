"""Pinned versions (hack/versions.env) and files from Go modules, fetched through the Go module
proxy with `go mod download` (the route these machines have to upstream release files)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.e2e.cluster import REPO


def versions() -> dict[str, str]:
    text = (REPO / "hack" / "versions.env").read_text()
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


def go() -> str | None:
    return shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )


def module_dir(module: str) -> Path:
    """The extracted folder of `module@version` in the module cache (downloaded if needed).

    Raises RuntimeError with the reason when there is no Go or the download fails.
    """
    go_bin = go()
    if go_bin is None:
        raise RuntimeError("no Go toolchain to download modules with")
    proc = subprocess.run(
        [go_bin, "mod", "download", "-json", module],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=Path.home(),
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    info = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or "Dir" not in info:
        raise RuntimeError(f"cannot download {module}: {info.get('Error') or proc.stderr}")
    return Path(info["Dir"])
