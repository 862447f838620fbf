"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the moto S3 server: real sockets, no mocks.

Point the code under test at it with ``AWS_ENDPOINT_URL=proxy.url``. It forwards each request to the
upstream server and each response back, and a *schedule* of :class:`Fault` rules picks the requests
that go wrong instead:

- ``cut``: pass ``after`` bytes of the response body, then close the connection (the client sees an early end;
  ``after=None``: the server did the request, the client gets no response);
- ``reset``: the same, but with a TCP reset (the client sees "connection reset by peer", and may lose what
  it had not read yet);
- ``delay``: pass ``after`` body bytes, stall ``seconds``, then go on (past the client's read timeout,
  the client gives up on the connection);
- ``503``: answer ``503 Service Unavailable`` (an S3 error document) without forwarding the request.

It speaks just enough HTTP/1.1 to find where each request and response ends on a keep-alive connection
(Content-Length or chunked bodies; it answers ``Expect: 100-continue`` itself), so that a fault applies to
one request. Every rule fires a bounded number of ``times`` (``None``: on every match, a fault that never
heals), every stall is bounded by its ``seconds``, and every socket has a timeout, so a test always ends.

    with FaultProxy(s3_server, [Fault("reset", path="shard-", after=20_000, times=3)]) as proxy:
        ...  # AWS_ENDPOINT_URL=proxy.url
        assert proxy.fired() == 3
"""

from __future__ import annotations

import dataclasses
import os
import socket
import struct
import threading
import time
import urllib.parse
from typing import Literal

SOCKET_TIMEOUT = 60.0  # seconds any proxy socket waits for the peer before the proxy drops the connection
SERVICE_UNAVAILABLE = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
                       b'<Message>injected by tests/helpers/fault_proxy.py</Message></Error>')


@dataclasses.dataclass
class Fault:
    """One rule of the schedule: requests whose method is ``method`` (None: any) and whose target (path and
    query) contains ``path`` get ``action``; ``ranged``: only requests with (True) / without (False) a Range
    header (None: both); it fires ``times`` times (None: always), on the first matches in arrival order."""

    action: Literal["cut", "reset", "delay", "503"]
    method: str | None = "GET"
    path: str = ""
    after: int | None = 0  # body bytes passed before a cut, reset or delay; None: before the response head
    seconds: float = 0.0  # delay: how long to stall
    times: int | None = 1
    ranged: bool | None = None
    fired: int = 0

    def __post_init__(self):
        if self.action not in ("cut", "reset", "delay", "503"):
            raise ValueError(f"Fault action {self.action!r}: expected cut, reset, delay or 503")

    def matches(self, method: str, target: str, headers: dict[str, str]) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method is not None and method != self.method:
            return False
        if self.ranged is not None and ("range" in headers) != self.ranged:
            return False
        return self.path in urllib.parse.unquote(target)


@dataclasses.dataclass
class _Message:
    """One HTTP message as bytes on the wire: ``head`` (start line and headers, with the blank line)."""

    head: bytes
    start: str
    headers: dict[str, str]


def _read_head(rfile) -> _Message | None:
    lines = []
    while True:
        line = rfile.readline(65537)
        if not line:
            if lines:
                raise ConnectionError("connection closed inside a message head")
            return None  # the peer closed between messages
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    headers = {}
    for raw in lines[1:-1]:
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return _Message(b"".join(lines), lines[0].decode("latin-1").strip(), headers)


def _body_chunks(rfile, headers: dict[str, str], until_close: bool):
    """The body's bytes as they arrive (chunked framing kept as is, so they can be forwarded verbatim)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = rfile.readline(65537)
            yield size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the blank line
                    line = rfile.readline(65537)
                    yield line
                    if line in (b"\r\n", b"\n", b""):
                        return
            remaining = size + 2  # the chunk and its CRLF
            while remaining:
                data = rfile.read1(min(remaining, 1 << 16))
                if not data:
                    raise ConnectionError("connection closed inside a chunk")
                remaining -= len(data)
                yield data
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining:
            data = rfile.read1(min(remaining, 1 << 16))
            if not data:
                raise ConnectionError("connection closed inside a body")
            remaining -= len(data)
            yield data
    elif until_close:
        while data := rfile.read1(1 << 16):
            yield data


class _Closed(Exception):
    """This client connection is over (a fault closed it, or a peer went away)."""


class FaultProxy:
    """Listens on 127.0.0.1 (``url``), forwards to ``upstream`` (``http://host:port``), injects ``faults``."""

    def __init__(self, upstream: str, faults: list[Fault] | None = None):
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self._faults: list[Fault] = list(faults or [])
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, target, action or None), in order
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopping = threading.Event()
        self._accepter = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._accepter.start()

    # ----------------------------------------------------------------- schedule

    def schedule(self, faults: list[Fault]) -> None:
        """Replace the schedule (and forget what fired) for the next requests."""
        with self._lock:
            self._faults = list(faults)
            self.requests = []

    def fired(self, action: str | None = None) -> int:
        """How many faults (of ``action``) were injected since the schedule was set."""
        with self._lock:
            return sum(f.fired for f in self._faults if action in (None, f.action))

    def _pick(self, method: str, target: str, headers: dict[str, str]) -> tuple[Fault | None, int]:
        """The fault for this request (counted as fired) and the request's index in :attr:`requests`."""
        with self._lock:
            fault = next((f for f in self._faults if f.matches(method, target, headers)), None)
            if fault is not None:
                fault.fired += 1
            self.requests.append((method, target, fault.action if fault else None))
            return fault, len(self.requests) - 1

    def _unpick(self, fault: Fault, index: int) -> None:
        with self._lock:
            fault.fired -= 1
            method, target, _ = self.requests[index]
            self.requests[index] = (method, target, None)

    # ----------------------------------------------------------------- connections

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), name="fault-proxy-conn", daemon=True)
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _track(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(SOCKET_TIMEOUT)
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _drop(self, sock: socket.socket | None, reset: bool = False) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.discard(sock)
        try:
            if reset:  # SO_LINGER 0, then close the descriptor now (a makefile() would keep it open): RST
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                os.close(sock.detach())
                return
            sock.shutdown(socket.SHUT_RDWR)  # FIN now, and wakes a thread blocked reading it
        except OSError:
            pass
        sock.close()

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        client_in = client.makefile("rb")
        upstream = None
        try:
            while not self._stopping.is_set():
                request = _read_head(client_in)
                if request is None:
                    return
                upstream = self._exchange(client, client_in, request, upstream)
        except (_Closed, OSError, ValueError):
            pass
        finally:
            self._drop(upstream[0] if upstream else None)
            self._drop(client)

    def _exchange(self, client, client_in, request: _Message, upstream):
        """Forward one request and its response (or inject a fault); returns the upstream connection to reuse."""
        method, target = request.start.split(" ")[:2]
        head = request.head
        if request.headers.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body comes now; upstream is never asked
            head = b"".join(line + b"\r\n" for line in head.split(b"\r\n")[:-1]
                            if not line.lower().startswith(b"expect:"))
        body = list(_body_chunks(client_in, request.headers, until_close=False))
        fault, index = self._pick(method, target, request.headers)
        if fault is not None and fault.action == "503":
            client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(SERVICE_UNAVAILABLE), SERVICE_UNAVAILABLE))
            return upstream
        if upstream is None:
            sock = self._track(socket.create_connection(self.upstream, timeout=SOCKET_TIMEOUT))
            upstream = (sock, sock.makefile("rb"))
        sock, upstream_in = upstream
        sock.sendall(head + b"".join(body))
        response = _read_head(upstream_in)
        if response is None:
            raise _Closed
        if fault is not None and fault.after is None:
            self._apply(fault, client, b"")
        client.sendall(response.head)
        status = int(response.start.split(" ")[1])
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        closes = response.headers.get("connection", "").lower() == "close"
        passed = 0
        chunks = () if no_body else _body_chunks(upstream_in, response.headers, until_close=True)
        for data in chunks:
            if fault is not None and passed + len(data) > fault.after:
                self._apply(fault, client, data[:fault.after - passed])
                client.sendall(data[fault.after - passed:])  # only a delay gets here
                fault = None
            else:
                client.sendall(data)
            passed += len(data)
        if fault is not None:  # the body ended before `after` bytes: this response did not go wrong
            self._unpick(fault, index)
        if closes or not (no_body or "content-length" in response.headers
                          or "transfer-encoding" in response.headers):
            raise _Closed
        return upstream

    def _apply(self, fault: Fault, client: socket.socket, first: bytes) -> None:
        client.sendall(first)
        if fault.action == "delay":
            self._stopping.wait(fault.seconds)
            return
        self._drop(client, reset=fault.action == "reset")
        raise _Closed

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            self._drop(sock)
        for thread in [self._accepter, *threads]:
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
