"""A TCP proxy between a client and one server, with a switch that cuts the network between
them, for fault tests (the operator's connection to the API server).

`cut()` drops every open connection at once (reset, as a failed link or a flushed NAT table
would leave them) and from then on blackholes new ones: they are accepted (the client's connect
succeeds, its request is sent) and never forwarded nor answered, as a peer that is gone without
a word; `cut(refuse=True)` refuses them instead (reset at once). `restore()` forwards new
connections again; the ones blackholed meanwhile stay dead (no byte, no close) until the proxy
is closed, so a client that waits on one forever hangs: it must notice by itself.

Threads, no asyncio: one accepting, two pumps per forwarded connection. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field


def _reset(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), so that the peer sees the connection gone at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):  # wakes a thread blocked reading it, sends nothing
        sock.shutdown(socket.SHUT_RD)
    sock.close()


@dataclass(eq=False)
class _Pair:
    client: socket.socket
    upstream: socket.socket
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        _reset(self.client)
        _reset(self.upstream)


class TCPProxy:
    """Forwards 127.0.0.1:`port` (a free one) to `target` (host, port)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._held: list[socket.socket] = []
        self._cut = False
        self._refuse = False
        self._closed = threading.Event()
        self.forwarded = 0  # connections forwarded, in all
        self.blackholed = 0  # connections accepted during a cut and never forwarded
        self.dropped = 0  # open connections reset by cut()
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcpproxy", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TCPProxy:
        self._acceptor.start()
        return self

    def cut(self, refuse: bool = False) -> None:
        """Reset every open connection; blackhole (or refuse) new ones until restore()."""
        with self._lock:
            self._cut, self._refuse = True, refuse
            pairs = list(self._pairs)
            self._pairs.clear()
            self.dropped += len(pairs)
        for pair in pairs:
            pair.close()

    def restore(self) -> None:
        """Forward new connections again (the blackholed ones stay dead)."""
        with self._lock:
            self._cut = False

    @property
    def is_cut(self) -> bool:
        return self._cut

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._closed.set()
        _reset(self._listener)
        with self._lock:
            pairs, held = list(self._pairs), list(self._held)
            self._pairs.clear()
            self._held.clear()
        for pair in pairs:
            pair.close()
        for sock in held:
            _reset(sock)
        self._acceptor.join(5)

    def __enter__(self) -> TCPProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut, refuse = self._cut, self._refuse
                if cut and not refuse:
                    self._held.append(conn)  # never read, never answered, never closed
                    self.blackholed += 1
                    continue
            if cut:
                _reset(conn)
                continue
            threading.Thread(target=self._connect, args=(conn,), daemon=True).start()

    def _connect(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            _reset(conn)
            return
        upstream.settimeout(None)
        pair = _Pair(conn, upstream)
        with self._lock:
            if self._cut:  # cut while connecting
                pair.close()
                return
            self._pairs.add(pair)
            self.forwarded += 1
        for src, dst in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        # One side ended: end the other (a half-close is not worth keeping for HTTP).
        with self._lock:
            self._pairs.discard(pair)
        pair.close()
