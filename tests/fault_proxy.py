"""A loopback HTTP proxy in front of the S3 server that injects faults, as flaky networks do.

Rules are deterministic: every ``fail_every``-th request is answered 503 (or the connection is
dropped without an answer, alternately), up to ``max_faults``; requests whose path contains one
of ``forbidden`` get a permanent 403; every request waits ``delay_s`` first (a slow store, so a
test can kill a process in the middle of a sequence of requests). Everything else is forwarded
byte for byte.
"""
from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class FaultPlan:
    fail_every: int = 0
    max_faults: int = 0
    forbidden: tuple[str, ...] = ()
    delay_s: float = 0.0
    requests: int = 0
    injected: dict[str, int] = field(default_factory=lambda: {"503": 0, "drop": 0, "403": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def decide(self, path: str) -> str | None:
        with self.lock:
            self.requests += 1
            if any(part in path for part in self.forbidden):
                self.injected["403"] += 1
                return "403"
            transient = self.injected["503"] + self.injected["drop"]
            if self.fail_every and transient < self.max_faults and self.requests % self.fail_every == 0:
                kind = "503" if transient % 2 == 0 else "drop"
                self.injected[kind] += 1
                return kind
            return None


class FaultProxy:
    """``with FaultProxy(upstream, plan) as url:`` gives an endpoint URL that misbehaves per ``plan``."""

    def __init__(self, upstream: str, plan: FaultPlan):
        self.upstream = urlsplit(upstream)
        self.plan = plan
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.plan.delay_s:
                    time.sleep(proxy.plan.delay_s)
                decision = proxy.plan.decide(self.path)
                if decision == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if decision in ("503", "403"):
                    code = int(decision)
                    message = b"<Error><Code>SlowDown</Code></Error>" if code == 503 else b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(message)
                    return
                connection = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {key: value for key, value in self.headers.items() if key.lower() != "host"}
                headers["Host"] = f"{proxy.upstream.hostname}:{proxy.upstream.port}"
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                # A HEAD answer carries the object's length without its body.
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
