"""Simulated annotators on a real Label Studio server.

Each simulated labeler (benign, malicious, spammer, colluding: :mod:`robust_al.annotators.simulated`) signs up
as a real user through the invite link, gets its own API token, and annotates through the API: it asks the
server for its next task (``/api/projects/{id}/next``, which honours the task overlap and never serves a
user a task it already annotated) and answers with its behaviour's label for the item the task shows. A task does
not say which item that is (labelers see an opaque key): the simulated users read it from the campaign's task
table (``run_dir``, read-only), knowledge no real labeler has. So a whole campaign runs against a real server,
with a malicious user whose trust must fall.

Attached to an existing project (``attached``: its id; a campaign with ``annotators.labelstudio.project_id``),
the users answer that project too, where the item is the task id: they take their next task from the
campaign's "robust-al queue" tab (``/next?view=<tab id>``: the tab's tasks in its order, priority first), as a
person pressing "Label Tasks As Displayed" in that tab is served, and answer in the project's own ``<Choices>``
(its ``from_name`` / ``to_name``). Their truth (``behaviours``) comes from the config's
``data.options.trusted_labels`` file (``robust-al labelstudio simulate``), never from the project: a task the file
does not list is left to others.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from robust_al.annotators.simulated import SimulatedAnnotator
from robust_al.labelstudio.users import SignupError, annotate, create_annotator, log_in

log = logging.getLogger(__name__)


class SimulatedUsers:
    """Simulated labelers as Label Studio users, answering the run's projects in a background thread."""

    def __init__(self, url: str, admin_token: str, behaviours: Sequence[SimulatedAnnotator],
                 class_names: Sequence[str], password: str = "simulated-pw-1", delay: float = 0.0,
                 title_prefix: str | None = None, attached: int | None = None, run_dir: str | Path | None = None):
        self.url, self.admin_token = url.rstrip("/"), admin_token
        # a campaign's task does not say which item it shows (the item id would tell people the class): the
        # simulated people look it up in the campaign's store, as no real labeler can
        self.run_dir = run_dir
        self._items: dict[tuple[int, int], int] = {}
        self.title_prefix = title_prefix  # only projects whose title starts with it (one campaign's projects)
        self.class_names = [str(c) for c in class_names]
        self.delay = delay
        self.attached = attached
        self._names: dict[int, tuple[str, str]] = {}  # attached project -> (from_name, to_name) of its choices
        self.users: list[tuple[SimulatedAnnotator, int, str]] = []
        for b in behaviours:
            email = f"{b.worker_id}@simulated.local"
            try:
                uid, token = create_annotator((self.url, admin_token), email, password)
            except SignupError:  # signed up by an earlier run of the simulation: the same person again
                uid, token = log_in((self.url, admin_token), email, password)
            self.users.append((b, uid, token))
        self.user_of = {b.worker_id: uid for b, uid, _ in self.users}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.posted = 0
        # per labeler: the spans (start, end, time.time()) in which the server served them no task, between two
        # tasks (before the first and after the last are not waits); open spans in _idle_since
        self.idle_gaps: dict[str, list[tuple[float, float]]] = {b.worker_id: [] for b in behaviours}
        self._idle_since: dict[str, float | None] = {b.worker_id: None for b in behaviours}
        self._served_once: set[str] = set()

    def projects(self) -> list[int]:
        r = httpx.get(f"{self.url}/api/projects/", headers={"Authorization": f"Token {self.admin_token}"},
                      params={"page_size": 1000}, timeout=60)
        r.raise_for_status()
        body = r.json()
        found = {int(p["id"]) for p in (body["results"] if isinstance(body, dict) else body)
                 if self.title_prefix is None or str(p.get("title", "")).startswith(self.title_prefix)}
        if self.attached is not None:
            found.add(int(self.attached))
        return sorted(found)

    def _queue_view(self, client: httpx.Client, project: int) -> int | None:
        """The attached project's "robust-al queue" tab (None until the campaign has made it)."""
        from robust_al.annotators.labelstudio import QUEUE_VIEW_TITLE

        r = client.get("/api/dm/views/", params={"project": project},
                       headers={"Authorization": f"Token {self.admin_token}"})
        r.raise_for_status()
        for v in r.json():
            if str((v.get("data") or {}).get("title") or "").startswith(QUEUE_VIEW_TITLE):  # + the campaign's status
                return int(v["id"])
        return None

    def _choice_names(self, client: httpx.Client, project: int) -> tuple[str, str]:
        if project not in self._names:
            from robust_al.labelstudio.client import parse_label_config

            r = client.get(f"/api/projects/{project}/", headers={"Authorization": f"Token {self.admin_token}"})
            r.raise_for_status()
            schema = parse_label_config(r.json()["label_config"])
            self._names[project] = (schema.from_name, schema.to_name)
        return self._names[project]

    def step(self, client: httpx.Client) -> int:
        """Every user answers at most one task of each project; returns how many annotations were posted."""
        from robust_al.labelstudio.client import choice_result

        posted = 0
        served: set[str] = set()
        for project in self.projects():
            attached = project == self.attached
            params = {}
            if attached:  # only what the campaign queued, never the project's other tasks
                view = self._queue_view(client, project)
                if view is None:
                    continue
                params["view"] = view
            for behaviour, _, token in self.users:
                r = client.get(f"/api/projects/{project}/next", params=params,
                               headers={"Authorization": f"Token {token}"})
                if r.status_code != 200:
                    continue
                task = r.json()
                item = int(task["id"]) if attached else self.item_of(project, int(task["id"]))
                if item is None or not behaviour.can_answer(int(item)):
                    continue
                served.add(behaviour.worker_id)
                (answer,) = behaviour.annotate([int(item)])
                label = self.class_names[answer.label]
                if attached:
                    from_name, to_name = self._choice_names(client, project)
                    a = client.post(f"/api/tasks/{int(task['id'])}/annotations/",
                                    json={"result": choice_result(label, from_name, to_name), "was_cancelled": False},
                                    headers={"Authorization": f"Token {token}"})
                    a.raise_for_status()
                else:
                    annotate(self.url, token, int(task["id"]), label, client=client)
                posted += 1
                if self.delay:
                    time.sleep(self.delay)
        self.posted += posted
        self._record_idle(served)
        return posted

    def item_of(self, project: int, task: int) -> int | None:
        """The pool item of a campaign's task, from the run's task table (None: not known to the run, yet)."""
        if (project, task) not in self._items and self.run_dir is not None:
            from robust_al.store.labelstudio import ls_task_items

            self._items = ls_task_items(self.run_dir)
        return self._items.get((project, task))

    def _record_idle(self, served: set[str]) -> None:
        """Close the waits of the labelers served a task in this step, open one for those served none."""
        now = time.time()
        for behaviour, _, _ in self.users:
            w = behaviour.worker_id
            since = self._idle_since[w]
            if w in served:
                if since is not None:
                    self.idle_gaps[w].append((since, now))
                self._idle_since[w] = None
                self._served_once.add(w)
            elif since is None and w in self._served_once:
                self._idle_since[w] = now

    def run(self, idle_sleep: float = 0.3) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    if self.step(client) == 0:
                        self._stop.wait(idle_sleep)
                except httpx.HTTPError as e:  # the server may be restarting
                    log.warning("simulated users: %s; retrying", e)
                    self._stop.wait(1.0)

    def start(self) -> SimulatedUsers:
        self._thread = threading.Thread(target=self.run, daemon=True, name="ls-simulated-users")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
