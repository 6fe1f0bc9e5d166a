"""A loopback HTTP listener for Label Studio webhooks (stdlib ``http.server`` in a thread): a doorbell.

**The server is the source of truth; a webhook only rings.** Label Studio POSTs webhooks synchronously while it
handles the API call that caused them (1 s timeout, no retry, payloads not signed). Nothing of a delivery is
believed: the listener keeps only *which annotation ids* a delivery names, and the campaign reads each of those
annotations back from Label Studio with its own (admin) token
(:meth:`robust_al.annotators.labelstudio.LabelStudioCrowd.drain_webhooks`): what the server does not hold, on a
task the campaign did not create, or on a secured-holdout item is never stored, whoever rang.

**No shared secret.** Measured on Label Studio 1.23 Community: every member's token can read every webhook of
the organization (``GET /api/webhooks/`` and ``GET /api/webhooks/{id}/`` return its ``headers``), so a secret
in a webhook header is readable by any labeler, and Label Studio has no way to sign a delivery. A secret would
therefore only pretend to authenticate. Since a ring carries no authority (the worst a forged ring can do is
make the campaign read back an annotation, which it may do anyway), the webhook is registered with no headers
at all, and the listener accepts a ring from anyone who can reach its loopback port.

**A flood cannot make the campaign hammer the server.** Rings are coalesced: pending ids are kept in a set
(a repeated id is one read-back), the set is bounded (``max_pending``; beyond it the listener only remembers
that it overflowed, and the campaign falls back to one filtered export of its batch, which sees everything a
read-back would), bodies over ``max_body`` bytes are refused unread, and the campaign reads back at most a
few annotations per second (:class:`TokenBucket`). A missed ring costs nothing but latency: the next poll
(export) finds the answer.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
MAX_PENDING = 1000  # distinct annotation ids waiting to be read back; a flood beyond it becomes one export
MAX_BODY = 4 * 1024 * 1024  # bytes; a bulk ANNOTATIONS_CREATED of a few thousand choice annotations fits


log = logging.getLogger(__name__)


@dataclass
class WebhookEvent:
    """What one delivery *claims* (never stored as such): its action, the annotation ids it names, the project
    it names. ``annotations`` are the payload's annotation objects (for ANNOTATIONS_DELETED, objects with at
    least an ``id``); ``task`` is the task of a single-annotation event, when sent."""
    action: str
    annotations: list[dict]
    task: dict | None
    project_id: int | None
    received_at: float
    payload: dict = field(repr=False, default_factory=dict)

    @property
    def annotation_ids(self) -> list[int]:
        return [int(a["id"]) for a in self.annotations if a.get("id") is not None]


def parse_event(payload: dict, received_at: float | None = None) -> WebhookEvent:
    action = str(payload.get("action", ""))
    anns = payload.get("annotations", payload.get("annotation"))
    if anns is None:
        anns = []
    elif isinstance(anns, dict):
        anns = [anns]
    project = payload.get("project")
    pid = project.get("id") if isinstance(project, dict) else project
    task = payload.get("task") if isinstance(payload.get("task"), dict) else None
    annotations = [a if isinstance(a, dict) else {"id": a} for a in anns]
    for a in annotations:  # an id must be an integer (a bool or a float is a forgery, not an id)
        if a.get("id") is not None and (isinstance(a["id"], bool) or int(a["id"]) != a["id"]):
            raise ValueError(f"annotation id {a['id']!r} is not an integer")
    return WebhookEvent(action, annotations, task, None if pid is None else int(pid),
                        time.time() if received_at is None else received_at, payload)


class TokenBucket:
    """At most ``rate`` operations per second on average, ``burst`` at once (read-backs of rung ids)."""

    def __init__(self, rate: float = 20.0, burst: int = 40):
        self.rate, self.burst = float(rate), int(burst)
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self, want: int) -> int:
        """How many of ``want`` operations may run now (and spends them)."""
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        got = max(0, min(int(want), int(self.tokens)))
        self.tokens -= got
        return got


class WebhookListener:
    """Receives webhook POSTs on ``http://127.0.0.1:<free port>/labelstudio/webhook`` and remembers the
    annotation ids they name (:meth:`take`), each once, at most ``max_pending`` of them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, path: str = "/labelstudio/webhook",
                 max_pending: int = MAX_PENDING, max_body: int = MAX_BODY):
        self.host, self.port, self.path = host, port, path
        self.max_pending, self.max_body = int(max_pending), int(max_body)
        self.pending: dict[int, None] = {}  # annotation ids, each once, oldest first (an ordered set)
        self.overflowed = False  # rings were dropped: the campaign must look at the server itself (an export)
        self.rings = 0  # deliveries accepted
        self.rejected = 0  # deliveries refused (wrong path, too large, not JSON)
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("listener not started")
        return f"http://{self.host}:{self._server.server_address[1]}{self.path}"

    def ring(self, event: WebhookEvent) -> None:
        """Note the annotation ids an event names (whatever it says happened: the server is asked)."""
        with self._cond:
            self.rings += 1
            for aid in event.annotation_ids:
                if aid in self.pending:
                    continue
                if len(self.pending) < self.max_pending:
                    self.pending[aid] = None
                else:
                    self.overflowed = True
            self._cond.notify_all()

    def start(self) -> str:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # seconds a connection may idle: a client that sends slowly cannot hold a thread
            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                t = time.time()
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    n = -1
                if self.path.split("?")[0] != listener.path or not 0 <= n <= listener.max_body:
                    listener.rejected += 1
                    self.close_connection = True
                    return self._answer(403 if n >= 0 else 400)
                body = self.rfile.read(n) if n else b""
                try:
                    payload = json.loads(body or b"{}")
                    event = parse_event(payload, t)
                except Exception:  # any malformed body (a float id of inf overflows, deep nesting recurses)
                    listener.rejected += 1
                    return self._answer(400)
                listener.ring(event)
                self._answer(200)

            def log_message(self, *args: Any) -> None:  # keep pytest / campaign output clean
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ls-webhook", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:  # set together with _server by start
                self._thread.join(5)
            self._server = self._thread = None

    def wait(self, timeout: float) -> bool:
        """Block until some id is pending (or the listener overflowed), at most ``timeout`` s; is one?"""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self.pending) or self.overflowed, timeout)

    def take(self, limit: int | None = None) -> tuple[list[int], bool]:
        """Up to ``limit`` pending annotation ids, oldest first, removed from the pending set; and whether rings
        were dropped since the last call (then look at the server as a whole)."""
        with self._cond:
            ids = list(self.pending)[:limit]
            for aid in ids:
                del self.pending[aid]
            over, self.overflowed = self.overflowed, False
        return ids, over

    def put_back(self, ids: Iterable[int]) -> None:
        """Return ids that could not be read back (the server was unreachable) to the pending set."""
        with self._cond:
            for aid in ids:
                if aid not in self.pending and len(self.pending) < self.max_pending:
                    self.pending[aid] = None

    def __enter__(self) -> WebhookListener:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
