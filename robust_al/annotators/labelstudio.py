"""A live Label Studio project as the campaign's crowd.

Each query becomes a task (its data carries the pool item id; the current model's prediction goes in as a
pre-annotation with its score). Answers arrive by webhook (a listener on loopback) and, as a fallback, by
polling a filtered export of the batch's tasks; each annotation's ``completed_by`` user becomes a labeler
(``ls<user id>``) in the trust ledger, and each annotation is stored exactly once (keyed on its Label Studio
id), edits and cancellations included. Re-examination by h labelers uses a second project whose tasks allow
h annotations (``maximum_annotations``), so h different people answer.

What the open-source server cannot do, and how this copes: it has no task assignment, so a labeler under the
trust threshold cannot be kept away from tasks; its labels are given weight ``aggregation.untrusted_weight``
(0 by default) and are not returned as answers, though they do take one of the task's k slots (the server stops
serving a task once it holds k annotations, so waiting for k *usable* answers could wait forever). Likewise a person cannot be excluded from
re-examining an item they labeled; their re-examination answer is ignored.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from robust_al.annotators.base import Answer
from robust_al.annotators.crowd import HoldoutLeak
from robust_al.store import RunStore

log = logging.getLogger(__name__)

LS_PREFIX = "ls"


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
                 threshold: float = 0.0, routing: bool = True, wait_seconds: float = 3600.0,
                 poll_seconds: float = 2.0, webhook: bool = True, title: str = "robust-al"):
        from robust_al.labelstudio.client import LabelStudioClient

        self.store, self.url, self.k = store, url, k
        self.client = LabelStudioClient(url, token)
        self.class_names = [str(c) for c in class_names]
        self.threshold, self.routing = threshold, routing
        self.wait_seconds, self.poll_seconds = wait_seconds, poll_seconds
        self.title = title
        self.forbidden: set[int] = set()
        self.asked = 0
        self._projects: dict[str, object] = {}
        self._webhook = webhook
        self.listener = None
        self._member_ids: set[int] = set()
        self._members_at = 0.0

    # -- bookkeeping shared with Crowd -----------------------------------------------------------------------
    @property
    def workers(self) -> list[str]:
        rows = self.store.db.execute("SELECT DISTINCT worker FROM annotations WHERE worker LIKE ?",
                                     (f"{LS_PREFIX}%",)).fetchall()
        return sorted(w for (w,) in rows)

    def eligible_workers(self, trust: Callable[[str], float]) -> list[str]:
        ws = [w for w in self.workers if not self.routing or trust(w) >= self.threshold]
        return ws or self.workers

    def answerable(self, item_ids: np.ndarray, trust: Callable[[str], float]) -> np.ndarray:
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
        if key in known:
            proj = self.client.get_project(int(known[key]))
        else:
            proj = self.client.create_project(f"{self.title} {kind} x{n}", self.class_names, maximum_annotations=n)
            known[key] = proj.id
            self.store.set_meta("ls_projects", known)
        if self._webhook:
            self._ensure_listener(proj)
        self._projects[key] = proj
        return proj

    def _ensure_listener(self, proj) -> None:
        from robust_al.labelstudio.webhook import WebhookListener

        if self.listener is None:
            # a fresh secret per process, in the registered webhook's headers: nobody else on the machine can
            # post answers (measured: a plain curl stored an annotation for any user, item or holdout item)
            self.listener = WebhookListener(secret=secrets.token_urlsafe(32))
            self.listener.start()
        hooks = self.store.get_meta("ls_webhooks", {})
        old = hooks.get(str(proj.id))
        if not isinstance(old, dict) or old.get("url") != self.listener.url:
            if isinstance(old, dict) and old.get("id") is not None:  # an earlier process's: gone with its port
                try:
                    self.client.delete_webhook(int(old["id"]))
                except Exception as e:  # already deleted by hand: nothing to undo
                    log.info("old webhook %s of project %s not deleted (%s)", old.get("id"), proj.id, e)
            wid = self.client.create_webhook(proj, self.listener.url, headers=self.listener.headers)
            hooks[str(proj.id)] = {"id": wid, "url": self.listener.url}
            self.store.set_meta("ls_webhooks", hooks)

    def _tasks(self, proj, item_ids: Sequence[int], iteration: int, purpose: str) -> dict[int, int]:
        """item -> task in ``proj``; tasks are imported once (a resumed run finds them in the store). The
        model's out-of-sample prediction stored for the item becomes the task's pre-annotation."""
        pred = self.store.predictions().set_index("item_id")
        predictions = {int(i): (int(r.label), float(r.score)) for i, r in pred.iterrows()}
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
            items = []
            for i in new:
                it: dict = {"item_id": i}
                if i in predictions:
                    label, score = predictions[i]
                    it["prediction"] = {"label": int(label), "score": float(score)}
                items.append(it)
            task_ids = self.client.import_tasks(proj, items, model_version=f"robust-al-iter{iteration}")
            self.store.set_ls_tasks(proj.id, new, task_ids, iteration, purpose)
            mapping.update(zip(new, task_ids))
        return {int(i): mapping[int(i)] for i in item_ids}

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
        return new

    def _drain_webhooks(self) -> None:
        """Store what the webhooks delivered, for every project of the run: an answer to an earlier batch (or
        to the other project, while this one waits) is kept under the iteration and purpose it was asked for."""
        from robust_al.labelstudio.client import annotation_from_payload

        if self.listener is None:
            return
        projects = {p.id: p for p in self._projects.values()}
        for ev in self.listener.drain():
            if ev.action == "ANNOTATIONS_DELETED":
                for aid in ev.annotation_ids:
                    self.store.cancel_external(self.external_id(ev.project_id, aid))
                continue
            proj = projects.get(ev.project_id)
            if proj is None or ev.task is None:
                continue
            asked = self._asked_in(proj.id)
            for a in ev.annotations:
                ann = annotation_from_payload(a, ev.task, proj)
                refused = self._refuse(proj.id, ann)
                if refused:
                    log.warning("webhook annotation %s refused: %s", ann.annotation_id, refused)
                    continue
                iteration, purpose = asked.get(ann.item_id, (-1, "late"))
                self.ingest(proj.id, [ann], iteration, purpose)

    def _refuse(self, project_id: int, ann) -> str | None:
        """Why a delivered answer is not stored: its task is not one the campaign created (with that item),
        its item is in the secured holdout, or its user is not a member of the organization."""
        if ann.item_id in self.forbidden:
            return f"item {ann.item_id} belongs to the secured holdout"
        tasks = self.store.ls_tasks(project_id)
        task_of = dict(zip(tasks["item_id"].astype(int), tasks["task_id"].astype(int)))
        if ann.task_id is not None and task_of.get(ann.item_id) != ann.task_id:
            return f"task {ann.task_id} with item {ann.item_id} is not a task of this campaign"
        if not self._is_member(ann.user_id):
            return f"user {ann.user_id} is not a member of the server's organization"
        return None

    def _is_member(self, user_id: int) -> bool:
        """Is ``user_id`` a user of the organization? (Cached; an unknown id refreshes the list at most
        every 5 s, so a colleague invited mid-campaign is recognised.)"""
        if user_id in self._member_ids:
            return True
        if time.time() - self._members_at > 5.0:
            self._member_ids = {int(u["id"]) for u in self.client.list_users()}
            self._members_at = time.time()
        return user_id in self._member_ids

    def _asked_in(self, project_id: int) -> dict[int, tuple[int, str]]:
        """item -> (iteration, purpose) of the task it was put to in this project."""
        tasks = self.store.ls_tasks(project_id)
        return {int(i): (int(it), str(p)) for i, it, p in zip(tasks["item_id"], tasks["iteration"], tasks["purpose"])}

    def _answers(self, proj, tasks: dict[int, int], exclude: dict[int, set[str]], trust
                 ) -> tuple[dict[int, list[Answer]], dict[int, int]]:
        """Per item in ``proj``: the usable answers (not cancelled, not by an excluded or untrusted labeler)
        and how many annotations its task holds in all (Label Studio stops serving a task once it holds
        ``maximum_annotations``, whoever gave them, so that - not the usable count - says the task is done)."""
        out: dict[int, list[Answer]] = {i: [] for i in tasks}
        held: dict[int, int] = {i: 0 for i in tasks}
        rows = self.store.db.execute(
            "SELECT item_id, worker, label, cancelled FROM annotations WHERE external_id LIKE ? ORDER BY id",
            (f"{proj.id}:%",)).fetchall()
        for item, worker, label, cancelled in rows:
            if int(item) not in out:
                continue
            held[int(item)] += 1
            if cancelled or worker in exclude.get(int(item), set()):
                continue  # no assignment in open source: an excluded person's re-examination is ignored
            if self.routing and trust(worker) < self.threshold:
                continue
            out[int(item)].append(Answer(int(item), worker, int(label)))
        return out, held

    def _poll(self, proj, tasks: dict[int, int], iteration: int, purpose: str) -> None:
        self.ingest(proj.id, self.client.export_annotations(proj, task_ids=list(tasks.values())), iteration, purpose)

    def _retry(self, fn, deadline: float):
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

    def ask(self, item_ids: Sequence[int], iteration: int, purpose: str, trust: Callable[[str], float],
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
        proj = self._retry(lambda: self.project("query" if purpose == "query" else "reexam", n), deadline)
        tasks = self._retry(lambda: self._tasks(proj, item_ids, iteration, purpose), deadline)
        exclude = exclude or {}
        last_poll = 0.0
        while True:
            self._drain_webhooks()
            if time.time() - last_poll >= self.poll_seconds:
                try:
                    self._poll(proj, tasks, iteration, purpose)
                except Exception as e:  # the server may be restarting: keep what we have, try again
                    log.warning("polling Label Studio failed (%s); retrying", e)
                last_poll = time.time()
            answers, held = self._answers(proj, tasks, exclude, trust)
            if all(h >= n for h in held.values()) or time.time() > deadline:
                break
            time.sleep(min(0.2, self.poll_seconds))
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
            proj = self.client.get_project(int(pid))
            asked = self._asked_in(proj.id)
            for a in self.client.export_annotations(proj, since=since):
                iteration, purpose = asked.get(a.item_id, (-1, key.split(":")[0]))
                new += self.ingest(proj.id, [a], iteration, purpose)
        self.store.set_meta("ls_last_sync", started)
        return new

    def finish(self) -> None:
        """At the end of a campaign (or of its process): store every answer still on its way - webhook
        deliveries not yet drained, and answers given after their batch closed - then stop listening.
        A server that cannot be reached is logged; ``robust-al labelstudio sync`` or the next start pulls them."""
        import httpx

        try:
            self._drain_webhooks()
            if self.store.get_meta("ls_projects"):
                n = self.sync()
                if n:
                    log.info("pulled %d answers that arrived after their batch closed", n)
        except (httpx.HTTPError, OSError) as e:
            log.warning("could not pull the last answers from Label Studio (%s); run `robust-al labelstudio "
                        "sync RUN_DIR` when it is back", e)
        finally:
            self.close()
