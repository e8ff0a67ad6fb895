"""A real S3 server for the model-fetch tests: versitygw (hack/versitygw.sh builds it once into
~/.cache/canarium/bin/), its posix backend serving a folder's subfolders as buckets and checking
AWS Signature V4 as S3 does. The model server tests run it on 127.0.0.1, the e2e tests on the
cluster's bridge address so that pods on the real node reach it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests import process

REPO = Path(__file__).resolve().parents[1]
REGION = "eu-west-3"  # not the default, so a client that ignores AWS_REGION fails


def versitygw_binary() -> Path:
    """The versitygw binary, built by hack/versitygw.sh on first use (a few minutes)."""
    proc = subprocess.run(
        [str(REPO / "hack" / "versitygw.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hack/versitygw.sh failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass
class S3Server:
    """One running versitygw: `put` lays a file where a bucket's object is."""

    proc: subprocess.Popen[bytes]
    root: Path
    endpoint: str
    access_key: str
    secret_key: str
    log_path: Path

    def put(self, bucket: str, key: str, data: bytes) -> None:
        path = self.root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def env(self, **overrides: str) -> dict[str, str]:
        """The variables a client of this server needs."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            **overrides,
        }

    def log(self) -> str:
        return process.read_log(self.log_path)

    def stop(self) -> None:
        process.stop(self.proc)


def start_s3_server(
    workdir: Path, *, host: str = "127.0.0.1", access_key: str, secret_key: str
) -> S3Server:
    """Start versitygw on `host` (a free port) over `workdir`/root; wait until it answers."""
    binary = versitygw_binary()
    root = workdir / "root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    port = process.free_port(host)
    log_path = workdir / "versitygw.log"
    # Credentials through the environment, not argv: nothing secret in the process list.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ROOT_ACCESS_KEY_ID": access_key,
        "ROOT_SECRET_ACCESS_KEY": secret_key,
    }
    cmd = [str(binary), "--port", f"{host}:{port}", "--region", REGION, "posix", str(root)]
    proc = process.start(cmd, log_path=log_path, env=env)
    process.wait_ready(proc, "versitygw", log_path, port=(host, port), timeout=30)
    return S3Server(proc, root, f"http://{host}:{port}", access_key, secret_key, log_path)
