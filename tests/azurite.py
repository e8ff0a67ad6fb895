"""A real Azure Blob Storage API for the az:// model-fetch tests: Azurite, Microsoft's emulator
(hack/azurite.sh installs it from npm once into ~/.cache/canarium/), on 127.0.0.1. It checks
SharedKey signatures as Azure does; its account is the emulator's well-known development
account, whose key is public (it is no secret, so the tests use a wrong key of their own)."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests import process

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_API_VERSION = "2021-08-06"


def azurite_binary() -> Path:
    proc = subprocess.run(
        [str(REPO / "hack" / "azurite.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hack/azurite.sh failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass
class Azurite:
    proc: subprocess.Popen[bytes]
    endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1
    log_path: Path

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": ACCOUNT_KEY,
            "AZURE_STORAGE_ENDPOINT": self.endpoint,
            **overrides,
        }

    def put(self, container: str, blob: str, data: bytes) -> None:
        """Create the container (if needed) and upload the blob, with obstore itself."""
        import obstore
        from obstore.store import AzureStore

        self._create_container(container)
        store = AzureStore(
            container,
            config={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY, "endpoint": self.endpoint},
            client_options={"allow_http": True},
        )
        obstore.put(store, blob, data)

    def _create_container(self, container: str) -> None:
        # obstore has no "create container": one SharedKey-signed REST call.
        content_type = "application/octet-stream"
        headers = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": _API_VERSION}
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        string_to_sign = (
            "PUT\n\n\n\n\n"
            + content_type
            + "\n" * 7
            + canonical_headers
            + f"/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
        )
        digest = hmac.new(base64.b64decode(ACCOUNT_KEY), string_to_sign.encode(), hashlib.sha256)
        signature = base64.b64encode(digest.digest()).decode()
        request = urllib.request.Request(
            f"{self.endpoint}/{container}?restype=container",
            method="PUT",
            data=b"",
            headers={
                **headers,
                "Content-Type": content_type,
                "Authorization": f"SharedKey {ACCOUNT}:{signature}",
            },
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            opener.open(request, timeout=10).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: the container exists already
                raise

    def stop(self) -> None:
        process.stop(self.proc)


def start_azurite(workdir: Path) -> Azurite:
    binary = azurite_binary()
    port = process.free_port()
    log_path = workdir / "azurite.log"
    cmd = [
        str(binary),
        "--blobHost", "127.0.0.1", "--blobPort", str(port),
        "--location", str(workdir / "data"),
        "--skipApiVersionCheck", "--silent",
    ]  # fmt: skip
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)}
    proc = process.start(cmd, log_path=log_path, env=env)
    process.wait_ready(proc, "azurite", log_path, port=("127.0.0.1", port), timeout=60)
    return Azurite(proc, f"http://127.0.0.1:{port}/{ACCOUNT}", log_path)
