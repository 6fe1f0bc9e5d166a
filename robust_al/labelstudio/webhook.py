"""A loopback HTTP listener for Label Studio webhooks (stdlib ``http.server`` in a thread).

Label Studio POSTs webhooks synchronously while it handles the API call that caused them, with a 1 s
timeout and no retry, so the handler only parses and enqueues. Webhooks are a low-latency hint, not the
source of truth: a missed one is caught by the next export, and a redelivered one is recognised by its
annotation id and ``updated_at`` (:class:`Deduplicator`).
"""
from __future__ import annotations

import hmac
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


log = logging.getLogger(__name__)

@dataclass
class WebhookEvent:
    """One delivery. ``annotations`` are the annotation objects of the payload (for ANNOTATIONS_DELETED,
    objects with at least an ``id``); ``task`` is the task of a single-annotation event, when sent."""
    action: str
    annotations: list[dict]
    task: dict | None
    project_id: int | None
    received_at: float
    payload: dict = field(repr=False, default_factory=dict)

    @property
    def annotation_ids(self) -> list[int]:
        return [int(a["id"]) for a in self.annotations if a.get("id") is not None]

    @property
    def item_id(self) -> int | None:
        """``task.data.item_id`` of a single-annotation event (pool item id), if the payload has it."""
        data = (self.task or {}).get("data") or {}
        return None if data.get("item_id") is None else int(data["item_id"])

    def keys(self) -> list[tuple[str, int, str]]:
        """Identity of each annotation state this event announces: (kind, annotation id, updated_at)."""
        kind = "deleted" if self.action == "ANNOTATIONS_DELETED" else "saved"
        return [(kind, int(a["id"]), str(a.get("updated_at", ""))) for a in self.annotations if "id" in a]


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
    return WebhookEvent(action, [a if isinstance(a, dict) else {"id": a} for a in anns], task,
                        None if pid is None else int(pid),
                        time.time() if received_at is None else received_at, payload)


class Deduplicator:
    """Remembers which annotation states were already handled.

    A redelivered event carries the same (annotation id, updated_at) and is a duplicate; an update of the
    same annotation carries a new ``updated_at`` and is not.
    """

    def __init__(self):
        self.seen: set[tuple[str, int, str]] = set()
        self.lock = threading.Lock()

    def fresh(self, event: WebhookEvent) -> list[dict]:
        """The annotations of ``event`` not seen before (and marks them seen)."""
        out = []
        with self.lock:
            for key, ann in zip(event.keys(), [a for a in event.annotations if "id" in a]):
                if key not in self.seen:
                    self.seen.add(key)
                    out.append(ann)
        return out

    def is_duplicate(self, event: WebhookEvent) -> bool:
        """True when every annotation state in ``event`` was already seen (does not mark anything)."""
        with self.lock:
            keys = event.keys()
            return bool(keys) and all(k in self.seen for k in keys)


class WebhookListener:
    """Receives webhook POSTs on ``http://127.0.0.1:<free port>/`` and puts :class:`WebhookEvent` s on
    :attr:`events` (a ``queue.Queue``). Optional ``secret``: required as header ``X-Robust-AL-Secret``
    (pass it to ``create_webhook(headers=...)``), so other local processes cannot inject events."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, secret: str | None = None,
                 path: str = "/labelstudio/webhook"):
        self.host, self.port, self.secret, self.path = host, port, secret, path
        self.events: queue.Queue[WebhookEvent] = queue.Queue()
        self.rejected = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("listener not started")
        return f"http://{self.host}:{self._server.server_address[1]}{self.path}"

    @property
    def headers(self) -> dict[str, str]:
        """Headers to register with the webhook (the shared secret, when set)."""
        return {"X-Robust-AL-Secret": self.secret} if self.secret else {}

    def authentic(self, presented: str | None) -> bool:
        """Does a request carry the shared secret (compared in constant time)?"""
        if not self.secret:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(), self.secret.encode())

    def start(self) -> str:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                t = time.time()
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if self.path.split("?")[0] != listener.path or not listener.authentic(
                        self.headers.get("X-Robust-AL-Secret")):
                    log.warning("webhook refused: %s without the shared secret from %s", self.path,
                                self.client_address[0])
                    listener.rejected += 1
                    self.send_response(403)
                    self.end_headers()
                    return
                try:
                    payload = json.loads(body or b"{}")
                    event = parse_event(payload, t)
                except (ValueError, TypeError, KeyError, AttributeError):
                    listener.rejected += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                listener.events.put(event)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

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

    def get(self, timeout: float = 10.0) -> WebhookEvent:
        """The next event (raises ``queue.Empty`` after ``timeout`` seconds)."""
        return self.events.get(timeout=timeout)

    def drain(self) -> list[WebhookEvent]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def __enter__(self) -> WebhookListener:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
