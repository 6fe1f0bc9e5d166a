"""A live Label Studio project as the campaign's crowd.

Each query becomes a task (its data carries the pool item id; the current model's prediction goes in as a
pre-annotation with its score). Answers arrive by webhook (a listener on loopback) and, as a fallback, by
polling a filtered export of the batch's tasks; each annotation's ``completed_by`` user becomes a labeler
(``ls<user id>``) in the trust ledger, and each annotation is stored exactly once (keyed on its Label Studio
id), edits and cancellations included. Re-examination by h labelers uses a second project whose tasks allow
h annotations (``maximum_annotations``), so h different people answer.

What a labeler sees: the item itself (the pool's image or text, :mod:`robust_al.labelstudio.media`) under its key,
and one radio button per class; the model's guess only with ``show_predictions`` (a visible guess biases
labelers who should answer independently).

Attached to an existing project (``project_id``), the project's tasks are the pool (item id = task id) and its
settings, tasks and annotations are never changed: its annotations are stored as labels already collected
(purpose ``existing``; those items are never asked about), and the queue is written back additively: each
queried task gets a prediction tagged ``robust-al-queue`` (score = priority, no visible choice unless
``show_predictions``), removed again once the task holds its answers, and a Data Manager tab "robust-al queue"
lists exactly the queued tasks. Measured on Label Studio 1.23 Community: a labeler's stream
(``/api/projects/{id}/next``) follows the project's sampling over *all* unfinished tasks; with ``?view=<tab
id>`` it serves only that tab's tasks, in the tab's order (Sequential sampling; measured on the API, not
through the browser's "Label All Tasks" button);
ordering a tab by prediction score is a no-op unless the project's ``model_version`` names the scored
predictions (it is empty by default and is a project setting robust-al does not touch), so the tab's tasks
come in task-id order. Labelers should therefore start labeling from the "robust-al queue" tab.

What the open-source server cannot do, and how this copes: it has no task assignment, so a labeler routed out by
trust cannot be kept away from tasks; its labels are given weight ``aggregation.untrusted_weight``
(0 by default) and are not returned as answers, though they do take one of the task's k slots (the server stops
serving a task once it holds k annotations, so waiting for k *usable* answers could wait forever). Likewise a
person cannot be excluded from re-examining an item they labeled; their re-examination answer is ignored.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable, Sequence

import numpy as np

from robust_al.annotators.base import Answer
from robust_al.annotators.crowd import HoldoutLeak
from robust_al.store import RunStore

if TYPE_CHECKING:
    from robust_al.labelstudio.client import Project
    from robust_al.labelstudio.webhook import WebhookListener

log = logging.getLogger(__name__)

LS_PREFIX = "ls"
QUEUE_MODEL_VERSION = "robust-al-queue"  # predictions that put a task of an attached project in robust-al's queue
QUEUE_VIEW_TITLE = "robust-al queue"
EXISTING = "existing"  # purpose of annotations an attached project held before the campaign


def worker_name(user_id: int) -> str:
    return f"{LS_PREFIX}{int(user_id)}"


def read_token(token_env: str | None, token_file: str | None) -> str:
    """The API token, from the environment or a file, never from a config (so never in a log or the store)."""
    if token_env and os.environ.get(token_env):
        return os.environ[token_env].strip()
    if token_file and Path(token_file).expanduser().exists():
        return Path(token_file).expanduser().read_text().strip()
    raise ValueError(f"annotators.labelstudio: no API token: set the environment variable {token_env!r}"
                     + (f" or create {token_file}" if token_file else " or give token_file"))


class LabelStudioCrowd:
    """The crowd interface of :class:`robust_al.annotators.Crowd`, backed by a Label Studio server."""

    def __init__(self, store: RunStore, url: str, token: str, class_names: Sequence[str], k: int = 1,
                 wait_seconds: float = 3600.0,
                 poll_seconds: float = 2.0, webhook: bool = True, title: str = "robust-al", pool=None,
                 media: str = "data-url", media_url: str | None = None, files_root: str | None = None,
                 show_predictions: bool = False, attached=None, echo: Callable[[str], None] | None = None,
                 status_seconds: float = 10.0):
        from robust_al.labelstudio.client import LabelStudioClient

        self.store, self.url, self.k = store, url.rstrip("/"), k
        self.client = LabelStudioClient(url, token)
        self.class_names = [str(c) for c in class_names]
        self.pool = pool  # what the tasks show (keys, images, texts); None: the bare item ids
        self.media, self.media_url, self.files_root = media, media_url, files_root
        self.show_predictions = show_predictions
        self.attached = attached  # an AttachedProject (robust_al.labelstudio.project_pool) or None
        self.echo = echo
        self.status_seconds = status_seconds
        self._last_status = 0.0
        self._known_users: set[str] = set(store.get_meta("ls_users", {}))
        self.wait_seconds, self.poll_seconds = wait_seconds, poll_seconds
        self.title = title
        self.forbidden: set[int] = set()
        self.asked = 0
        self._projects: dict[str, Project] = {}
        self._webhook = webhook
        self.listener: WebhookListener | None = None
        self._member_ids: set[int] = set()
        self._members_at = 0.0
        # project -> item -> ids of annotations by someone who had answered the item already (kept in the store's
        # change log only): not usable, but they fill the task, and the server serves it to nobody else
        self._repeats: dict[int, dict[int, set[int]]] = {}

    # -- bookkeeping shared with Crowd -----------------------------------------------------------------------
    @property
    def workers(self) -> list[str]:
        return self.store.workers(LS_PREFIX)

    def eligible_workers(self, allowed: Callable[[str], bool]) -> list[str]:
        ws = [w for w in self.workers if allowed(w)]
        return ws or self.workers

    def answerable(self, item_ids: np.ndarray, allowed: Callable[[str], bool]) -> np.ndarray:
        item_ids = np.asarray(item_ids, dtype=np.int64)
        return ~np.isin(item_ids, np.fromiter(self.forbidden, dtype=np.int64, count=len(self.forbidden)))

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None

    # -- projects and tasks ------------------------------------------------------------------------------------
    def project(self, kind: str, n: int):
        """The project for ``kind`` ('query' or 'reexam') with n answers per task, created once per run."""
        key = f"{kind}:{n}"
        if key in self._projects:
            return self._projects[key]
        known = self.store.get_meta("ls_projects", {})
        if self.attached is not None and kind == "query":
            proj = self.attached.project  # the campaign asks in the user's own project, never a copy of it
            if known.get(key) != proj.id:
                known[key] = proj.id
                self.store.set_meta("ls_projects", known)
        elif key in known:
            proj = self.client.get_project(int(known[key]))
        else:
            from robust_al.labelstudio.media import pool_kind, small_images

            shown = pool_kind(self.pool) if self.pool is not None else None
            proj = self.client.create_project(f"{self.title} {kind} x{n}", self.class_names, maximum_annotations=n,
                                              image=shown == "image", header=shown is not None,
                                              show_predictions=self.show_predictions,
                                              pixelated=shown == "image" and small_images(self.pool))
            known[key] = proj.id
            self.store.set_meta("ls_projects", known)
        if proj.image and self.media == "local-files" and self.attached is None:
            self._ensure_storage(proj)
        if self._webhook:
            self._ensure_listener(proj)
        self._projects[key] = proj
        return proj

    def _ensure_storage(self, proj) -> None:
        """A local-files storage for the pool's image folder: Label Studio serves ``/data/local-files/`` only to
        members of a project with a storage covering the file (created once; never synced)."""
        done = self.store.get_meta("ls_storages", {})
        if str(proj.id) in done:
            return
        path = str(self.pool.media_root.resolve())
        have = [st for st in self.client.local_storages(proj) if st.get("path") == path]
        try:
            sid = have[0]["id"] if have else self.client.create_local_storage(proj, path, "robust-al pool images")
        except ValueError as e:
            raise ValueError(f"annotators.labelstudio.media = local-files: {self.url} refused to serve {path}: {e} "
                             "(start it with robust-al labelstudio serve RUN_DIR --files-root DIR, DIR a strict "
                             "ancestor of the images, and set annotators.labelstudio.files_root to DIR)") from None
        done[str(proj.id)] = int(sid)
        self.store.set_meta("ls_storages", done)

    def _ensure_listener(self, proj) -> None:
        from robust_al.labelstudio.webhook import WebhookListener

        listener = self.listener
        if listener is None:
            # a fresh secret per process, in the registered webhook's headers: nobody else on the machine can
            # post answers (measured: a plain curl stored an annotation for any user, item or holdout item)
            listener = self.listener = WebhookListener(secret=secrets.token_urlsafe(32))
            listener.start()
        hooks = self.store.get_meta("ls_webhooks", {})
        old = hooks.get(str(proj.id))
        if not isinstance(old, dict) or old.get("url") != listener.url:
            if isinstance(old, dict) and old.get("id") is not None:  # an earlier process's: gone with its port
                try:
                    self.client.delete_webhook(int(old["id"]))
                except Exception as e:  # already deleted by hand: nothing to undo
                    log.info("old webhook %s of project %s not deleted (%s)", old.get("id"), proj.id, e)
            wid = self.client.create_webhook(proj, listener.url, headers=listener.headers)
            hooks[str(proj.id)] = {"id": wid, "url": listener.url}
            self.store.set_meta("ls_webhooks", hooks)

    def tasks_for(self, proj, item_ids: Sequence[int], iteration: int, purpose: str) -> dict[int, int]:
        """item -> task in ``proj``; tasks are imported once (a resumed run finds them in the store). Each task
        shows the item (:func:`robust_al.labelstudio.media.task_fields`); the model's out-of-sample prediction
        becomes its pre-annotation only with ``show_predictions``. In an attached project the task already
        exists (item id = task id): it is queued instead (:meth:`_queue`)."""
        if self.attached is not None and proj.id == self.attached.project.id:
            ids = [int(i) for i in item_ids]
            self.store.set_ls_tasks(proj.id, ids, ids, iteration, purpose)
            self._queue(proj, ids)
            return {i: i for i in ids}
        have = self.store.ls_tasks(proj.id)
        mapping = dict(zip(have["item_id"].astype(int), have["task_id"].astype(int)))
        new = [int(i) for i in item_ids if int(i) not in mapping]
        if new:  # tasks an earlier import made but nobody recorded (its response was lost) are adopted
            made = self.client.task_items(proj, after_task=int(have["task_id"].max()) if len(have) else 0)
            adopted = [i for i in new if i in made]
            if adopted:
                log.warning("adopting %d tasks of project %s that an interrupted import created",
                            len(adopted), proj.id)
                self.store.set_ls_tasks(proj.id, adopted, [made[i] for i in adopted], iteration, purpose)
                mapping.update((i, made[i]) for i in adopted)
                new = [i for i in new if i not in made]
        if new:
            predictions = self._predictions() if self.show_predictions else {}
            items = []
            for i in new:
                it: dict = {"item_id": i, **self._shown(i)}
                if i in predictions:
                    label, score = predictions[i]
                    it["prediction"] = {"label": int(label), "score": float(score)}
                items.append(it)
            task_ids = self.client.import_tasks(proj, items, model_version=f"robust-al-iter{iteration}")
            self.store.set_ls_tasks(proj.id, new, task_ids, iteration, purpose)
            mapping.update(zip(new, task_ids))
        return {int(i): mapping[int(i)] for i in item_ids}

    def _predictions(self) -> dict[int, tuple[int, float]]:
        pred = self.store.predictions().set_index("item_id")
        return {int(i): (int(r.label), float(r.score)) for i, r in pred.iterrows()}

    def _shown(self, item_id: int) -> dict:
        """The task data that shows one item: its key and its image URL or text."""
        if self.attached is not None:  # a re-examination project: the original task's image URL or text
            value = self.attached.values.get(int(item_id))
            if value is not None:
                field = "image" if self.attached.project.image else "text"
                return {"key": str(self.pool.keys[self.pool.positions([item_id])[0]]), field: value}
        if self.pool is None:
            return {}
        from robust_al.labelstudio.media import task_fields

        return task_fields(self.pool, int(item_id), self.media, self.files_root, self.media_url)

    # -- an attached project: labels already there, robust-al's queue written back ---------------------------
    def adopt_existing(self) -> list[int]:
        """Store the annotations the attached project held before the campaign (purpose ``existing``, each
        once) and return the items they label: those are never asked about."""
        if self.attached is None:
            return []
        self.ingest(self.attached.project.id, self.attached.existing, -1, EXISTING)
        # only labels stored as existing: an answer robust-al asked for keeps its iteration (a resumed one replays)
        ann = self.store.annotations()
        return sorted({int(i) for i in ann.loc[ann["purpose"] == EXISTING, "task"]})

    def queue_view(self, proj) -> int:
        """The "robust-al queue" Data Manager tab of the attached project: the tasks with a queue prediction."""
        views = self.store.get_meta("ls_queue_view", {})
        vid = views.get(str(proj.id))
        if vid is not None and any(int(v["id"]) == int(vid) for v in self.client.views(proj)):
            return int(vid)
        filters = {"conjunction": "and", "items": [{
            "filter": "filter:tasks:predictions_model_versions", "operator": "contains", "type": "List",
            "value": [QUEUE_MODEL_VERSION]}]}  # a list: a plain string is matched letter by letter
        vid = self.client.create_view(proj, QUEUE_VIEW_TITLE, filters, ordering=["-tasks:predictions_score"])
        views[str(proj.id)] = vid
        self.store.set_meta("ls_queue_view", views)
        return vid

    def _queue(self, proj, item_ids: list[int]) -> None:
        """Put the items' tasks in robust-al's queue: a ``robust-al-queue`` prediction each (score = priority,
        first asked highest), added once; the model's guess as its choice only with ``show_predictions``."""
        queued = self.store.get_meta("ls_queue", {})
        guesses = self._predictions() if self.show_predictions else {}
        n = len(item_ids)
        for pos, tid in enumerate(item_ids):
            if str(tid) in queued:
                continue
            # one whose response was lost (a server restart) is adopted, not added twice
            mine = [p for p in self.client.predictions(tid) if p.get("model_version") == QUEUE_MODEL_VERSION]
            label = guesses.get(tid, (None, 0.0))[0]
            pid = (int(mine[0]["id"]) if mine else
                   self.client.add_prediction(proj, tid, QUEUE_MODEL_VERSION, 1.0 - pos / max(n, 1), label))
            queued[str(tid)] = pid
            self.store.set_meta("ls_queue", queued)  # after each: a crash never leaves an unknown prediction
        self.queue_view(proj)

    def _unqueue(self, task_ids: Sequence[int]) -> None:
        """Remove robust-al's own queue predictions of tasks that hold their answers (nothing else is touched)."""
        queued = self.store.get_meta("ls_queue", {})
        for tid in task_ids:
            pid = queued.pop(str(int(tid)), None)
            if pid is not None:
                self.client.delete_prediction(pid)
                self.store.set_meta("ls_queue", queued)

    # -- saying what is happening -----------------------------------------------------------------------------
    def data_url(self, proj) -> str:
        """Where people label: the project's Data Manager (the robust-al queue tab of an attached project)."""
        url = f"{self.url}/projects/{proj.id}/data"
        views = self.store.get_meta("ls_queue_view", {})
        return url + (f"?tab={views[str(proj.id)]}" if str(proj.id) in views else "")

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)
        else:
            log.info(line)

    def _status(self, proj, held: dict[int, int], n: int, force: bool = False) -> None:
        """At most every ``status_seconds``: how many answers the batch holds, and where to give them."""
        now = time.monotonic()
        if not force and now - self._last_status < self.status_seconds:
            return
        self._last_status = now
        got = sum(min(h, n) for h in held.values())
        self._say(f"waiting: {got}/{n * len(held)} answers in project {proj.id} at {self.data_url(proj)}")

    def _record_users(self) -> None:
        """``ls_users`` meta: each Label Studio labeler's display name, refreshed when new users appear."""
        if not set(self.workers) <= self._known_users:
            self._refresh_users()

    def _refresh_users(self) -> None:
        """Read the organization's users once: who may answer (:meth:`_is_member`) and their display names."""
        users = self.client.list_users()
        self._member_ids = {int(u["id"]) for u in users}
        self._members_at = time.time()
        names = dict(self.store.get_meta("ls_users", {}))
        for u in users:
            full = " ".join(x for x in (u.get("first_name"), u.get("last_name")) if x).strip()
            email = u.get("email") or u.get("username") or ""
            names[worker_name(u["id"])] = f"{full} <{email}>" if full else email
        self.store.set_meta("ls_users", names)
        self._known_users = set(names)

    # -- answers -----------------------------------------------------------------------------------------------
    @staticmethod
    def external_id(project_id: int, annotation_id: int) -> str:
        """The store key of a Label Studio annotation: unique per server, and it says which project it is in."""
        return f"{int(project_id)}:{int(annotation_id)}"

    def ingest(self, project_id: int, annotations, iteration: int, purpose: str) -> int:
        """Store Label Studio annotations (from a webhook or an export) exactly once; returns how many were new."""
        new = 0
        for a in annotations:
            if a.foreign_write:
                log.warning("annotation %s attributed to user %s was written by user %s", a.annotation_id,
                            a.user_id, a.updated_by)
            status = self.store.upsert_external(self.external_id(project_id, a.annotation_id), a.item_id,
                                                worker_name(a.user_id), a.label, a.was_cancelled, a.updated_at,
                                                iteration, purpose)
            new += status == "new"
            if status == "repeat":
                repeats = self._repeats.setdefault(int(project_id), {}).setdefault(int(a.item_id), set())
                repeats.add(int(a.annotation_id))
        return new

    def drain_webhooks(self) -> None:
        """Store what the webhooks delivered, for every project of the run: an answer to an earlier batch (or
        to the other project, while this one waits) is kept under the iteration and purpose it was asked for."""
        from robust_al.labelstudio.client import annotation_from_payload

        if self.listener is None:
            return
        projects = {p.id: p for p in self._projects.values()}
        for ev in self.listener.drain():
            if ev.action == "ANNOTATIONS_DELETED":
                if ev.project_id is None:
                    raise ValueError(f"webhook {ev.action} names no project: {ev.payload}")
                for aid in ev.annotation_ids:
                    self.store.cancel_external(self.external_id(ev.project_id, aid))
                continue
            proj = None if ev.project_id is None else projects.get(ev.project_id)
            if proj is None or ev.task is None:
                continue
            asked = self._asked_in(proj.id)
            for a in ev.annotations:
                ann = annotation_from_payload(a, ev.task, proj)
                refused = self._refuse(proj.id, ann, asked)
                if refused:
                    log.warning("webhook annotation %s refused: %s", ann.annotation_id, refused)
                    continue
                iteration, purpose = asked.get(ann.item_id, (None, -1, self._unasked(proj, "late")))[1:]
                self.ingest(proj.id, [ann], iteration, purpose)

    def _refuse(self, project_id: int, ann, asked: dict[int, tuple[int, int, str]]) -> str | None:
        """Why a delivered answer is not stored: its task is not one the campaign created (with that item;
        ``asked``: :meth:`_asked_in`), its item is in the secured holdout, or its user is not a member of the
        organization."""
        if ann.item_id in self.forbidden:
            return f"item {ann.item_id} belongs to the secured holdout"
        attached = self.attached is not None and project_id == self.attached.project.id  # its tasks are the pool
        if not attached and ann.task_id is not None and asked.get(ann.item_id, (None,))[0] != ann.task_id:
            return f"task {ann.task_id} with item {ann.item_id} is not a task of this campaign"
        if not self._is_member(ann.user_id):
            return f"user {ann.user_id} is not a member of the server's organization"
        return None

    def _is_member(self, user_id: int) -> bool:
        """Is ``user_id`` a user of the organization? (Cached; an unknown id refreshes the list at most
        every 5 s, so a colleague invited mid-campaign is recognised.)"""
        if user_id not in self._member_ids and time.time() - self._members_at > 5.0:
            self._refresh_users()
        return user_id in self._member_ids

    def _unasked(self, proj, purpose: str) -> str:
        """Purpose of an answer on an item robust-al never asked about: in an attached project, people label
        its other tasks too; those are labels the project collected (``existing``), not bought by the campaign."""
        return EXISTING if self.attached is not None and proj.id == self.attached.project.id else purpose

    def _asked_in(self, project_id: int) -> dict[int, tuple[int, int, str]]:
        """item -> (task id, iteration, purpose) of the task it was put to in this project."""
        t = self.store.ls_tasks(project_id)
        return {int(i): (int(task), int(it), str(p))
                for i, task, it, p in zip(t["item_id"], t["task_id"], t["iteration"], t["purpose"])}

    def _answers(self, proj, tasks: dict[int, int], exclude: dict[int, set[str]], allowed: Callable[[str], bool]
                 ) -> tuple[dict[int, list[Answer]], dict[int, int]]:
        """Per item in ``proj``: the usable answers (not cancelled, not by an excluded or untrusted labeler)
        and how many annotations its task holds in all (Label Studio stops serving a task once it holds
        ``maximum_annotations``, whoever gave them, so that - not the usable count - says the task is done)."""
        out: dict[int, list[Answer]] = {i: [] for i in tasks}
        held: dict[int, int] = dict.fromkeys(tasks, 0)
        for item, worker, label, cancelled in self.store.external_answers(f"{proj.id}:"):
            if int(item) not in out:
                continue
            held[int(item)] += 1
            if cancelled or worker in exclude.get(int(item), set()):
                continue  # no assignment in open source: an excluded person's re-examination is ignored
            if not allowed(worker):
                continue
            if label is None:  # annotations.label is NOT NULL (a cancelled answer is stored as -1)
                raise ValueError(f"stored answer of {worker} on item {item} has no label")
            out[int(item)].append(Answer(int(item), worker, int(label)))
        for item, repeats in self._repeats.get(proj.id, {}).items():
            if item in held:
                held[item] += len(repeats)
        return out, held

    def poll_answers(self, proj, tasks: dict[int, int], iteration: int, purpose: str) -> None:
        self.ingest(proj.id, self.client.export_annotations(proj, task_ids=list(tasks.values())), iteration, purpose)

    def retry_until(self, fn, deadline: float):
        """Call ``fn`` until it gets through: a server restart must not cost the campaign its batch."""
        import httpx

        while True:
            try:
                return fn()
            except httpx.TransportError as e:
                if time.time() > deadline:
                    raise
                log.warning("Label Studio unreachable (%s); retrying", e)
                time.sleep(1.0)

    def ask(self, item_ids: Sequence[int], iteration: int, purpose: str, allowed: Callable[[str], bool],
            n_per_item: int | None = None, exclude: dict[int, set[str]] | None = None) -> list[Answer]:
        """Put the items to the project and wait (webhooks, polling as fallback) until each task holds n
        annotations or ``wait_seconds`` pass; returns the usable answers collected."""
        item_ids = [int(i) for i in item_ids]
        leaked = [i for i in item_ids if i in self.forbidden]
        if leaked:
            raise HoldoutLeak(f"item {leaked[0]} belongs to the secured holdout and must never reach an annotator")
        if not item_ids:
            return []
        n = self.k if n_per_item is None else n_per_item
        deadline = time.time() + self.wait_seconds
        proj = self.retry_until(lambda: self.project("query" if purpose == "query" else "reexam", n), deadline)
        tasks = self.retry_until(lambda: self.tasks_for(proj, item_ids, iteration, purpose), deadline)
        exclude = exclude or {}
        last_poll = 0.0
        while True:
            self.drain_webhooks()
            if time.time() - last_poll >= self.poll_seconds:
                try:
                    self.poll_answers(proj, tasks, iteration, purpose)
                except Exception as e:  # the server may be restarting: keep what we have, try again
                    log.warning("polling Label Studio failed (%s); retrying", e)
                last_poll = time.time()
            answers, held = self._answers(proj, tasks, exclude, allowed)
            try:
                self._record_users()
            except Exception as e:  # a name is nice to have; never let it cost the batch
                log.warning("could not read Label Studio users (%s)", e)
            done = all(h >= n for h in held.values())
            if done or time.time() > deadline:
                break
            self._status(proj, held, n)
            time.sleep(min(0.2, self.poll_seconds))
        if self.attached is not None and proj.id == self.attached.project.id:
            finished = [tasks[i] for i, h in held.items() if h >= n]
            self.retry_until(lambda: self._unqueue(finished), deadline + 60)
        self.asked += sum(len(a) for a in answers.values())
        self.store.close_batch(iteration, purpose)
        return [a for i in item_ids for a in answers[i][:n]]

    def sync(self) -> int:
        """Pull every annotation of the run's projects made while the campaign was not running (filtered
        export of changed tasks since the last sync); returns how many were new."""
        since = self.store.get_meta("ls_last_sync")
        new = 0
        started = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 1))
        for key, pid in sorted(self.store.get_meta("ls_projects", {}).items()):
            attached = self.attached is not None and int(pid) == self.attached.project.id
            proj = self.attached.project if attached else self.client.get_project(int(pid))
            asked = self._asked_in(proj.id)
            for a in self.client.export_annotations(proj, since=since):
                iteration, purpose = asked.get(a.item_id, (None, -1, self._unasked(proj, key.split(":")[0])))[1:]
                new += self.ingest(proj.id, [a], iteration, purpose)
        self.store.set_meta("ls_last_sync", started)
        return new

    def finish(self) -> None:
        """At the end of a campaign (or of its process): store every answer still on its way - webhook
        deliveries not yet drained, and answers given after their batch closed - then stop listening.
        A server that cannot be reached is logged; ``robust-al labelstudio sync`` or the next start pulls them."""
        import httpx

        try:
            self.drain_webhooks()
            if self.store.get_meta("ls_projects"):
                n = self.sync()
                if n:
                    log.info("pulled %d answers that arrived after their batch closed", n)
        except (httpx.HTTPError, OSError) as e:
            log.warning("could not pull the last answers from Label Studio (%s); run `robust-al labelstudio "
                        "sync RUN_DIR` when it is back", e)
        finally:
            self.close()
