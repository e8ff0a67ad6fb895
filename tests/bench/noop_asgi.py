"""A no-op ASGI app on uvicorn, configured like canarium-serve (server.py), for bench_serving.py.

    python tests/bench/noop_asgi.py --port 18080 --body-file response.json

Every request gets 200 and the same bytes (canarium-serve's REST JSON answer for the model),
after its body is read. It is the ceiling of canarium-serve's own stack (uvicorn, httptools,
uvloop) with the application's work taken away.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Message = MutableMapping[str, Any]


def make_app(
    body: bytes,
) -> Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    reply = {"type": "http.response.body", "body": body}

    async def app(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send(start)
        await send(reply)

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    args = parser.parse_args()
    # The options of canarium_serving.server.serve, but no lifespan (nothing to load).
    uvicorn.run(
        make_app(args.body_file.read_bytes()),
        host=args.host,
        port=args.port,
        loop="auto",
        http="auto",
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=None,
        server_header=False,
        date_header=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
