"""A live Label Studio project as the campaign's crowd.

Each query becomes a task (its data carries what the labeler is shown, never the pool item id: ids follow the
pool's order, an image folder's class folders; the campaign keeps task -> item in its store). **The server is
the source of truth.** A webhook only rings (:mod:`robust_al.labelstudio.webhook`): each annotation id it
names is read back from Label Studio with the campaign's own token, and only what the server holds, on a task
the campaign created (the item is the one the campaign put to that task, never what a payload or the task's
data claims), outside the secured holdout, is stored; polling a filtered export of the batch's tasks is the
fallback and applies the same rules. Each annotation is stored exactly once (keyed on its Label Studio id),
edits and cancellations included.

Who answered: the account that *wrote* the annotation. Open-source Label Studio lets any member post an
annotation with another user's ``completed_by``; the server records the writer in ``updated_by`` (the token's
user; a client cannot set it; a task imported with annotations has none, and those are not stored). An
annotation whose ``completed_by`` is not its writer is nobody's answer: its writer gets an *impersonation* flag
(the store's flags, shown by ``robust-al trust`` and the report, and a flag routing judges by); the
impersonated person's stored answers never change (an edit of their annotation by someone else is not applied
to it, and a deletion, which the server does not attribute, leaves it stored: its author withdraws an answer
by marking it cancelled). Re-examination by h labelers uses a second project
whose tasks allow h annotations (``maximum_annotations``), so h different people answer.

What a labeler sees: the item itself (the pool's image or text, :mod:`robust_al.labelstudio.media`) under an
opaque display key (a salted hash of the item's key, stable per item; the key itself only with
``annotators.labelstudio.show_keys``: an image folder's key names its class folder, i.e. the answer), and one
radio button per class; the model's guess only with ``show_predictions`` (a visible guess biases labelers who
should answer independently).

Attached to an existing project (``project_id``), the project's tasks are the pool (item id = task id) and its
settings, tasks and annotations are never changed: its annotations are stored as labels already collected
(purpose ``existing``; those items are never asked about), and the queue is written back additively: each
queried task gets a prediction whose ``model_version`` is ``robust-al-queue-<iteration>-<position>`` (zero-padded,
so that its text order is the priority order; no visible choice unless ``show_predictions``), removed again once
the task holds its answers, and a Data Manager tab "robust-al queue" lists exactly the queued tasks, ordered by
that model version. Measured in a real browser on Label Studio 1.23 Community: the "Label All Tasks" button
sends only the project (the page drops the tab's filters and ordering), so it serves *any* unfinished task of the
project, tasks of the secured holdout included; in the "robust-al queue" tab, the dropdown ▾ beside it →
"Label Tasks As Displayed" keeps the tab's filters and ordering and serves only the queue, highest priority
first, then "No more tasks". That is the button people must press (the status line and ``data_url`` say so).
Ordering by prediction score would not do: Label Studio counts only the predictions whose model version is
the project's ``model_version`` (a project setting robust-al does not touch), so the tab fell back to task-id
order. Any member can edit a shared tab: its filter and ordering are checked, and put back, every batch.

What the open-source server cannot do, and how this copes: it has no task assignment, so a labeler routed out by
trust cannot be kept away from tasks; its labels are given weight ``aggregation.untrusted_weight``
(0 by default) and are not returned as answers, though they do take one of the task's k slots (the server stops
serving a task once it holds k annotations, so waiting for k *usable* answers could wait forever). Likewise a
person cannot be excluded from re-examining an item they labeled; their re-examination answer is ignored.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
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
QUEUE_ORDERING = ["tasks:predictions_model_versions"]  # ascending: the text order of queue_version is the priority
LABEL_AS_DISPLAYED = ('open the "robust-al queue" tab, then the ▾ beside "Label All Tasks" → "Label Tasks As '
                      'Displayed" ("Label All Tasks" itself serves any task of the project)')
EXISTING = "existing"  # purpose of annotations an attached project held before the campaign


def queue_version(iteration: int, position: int) -> str:
    """The model version of a queue prediction: its text order is the queue's priority order."""
    return f"{QUEUE_MODEL_VERSION}-{max(int(iteration), 0):05d}-{int(position):05d}"


def is_queue_version(model_version) -> bool:
    """A queue prediction's model version (``robust-al-queue`` itself: one an earlier version wrote)."""
    mv = str(model_version or "")
    return mv == QUEUE_MODEL_VERSION or mv.startswith(QUEUE_MODEL_VERSION + "-")


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
                 status_seconds: float = 10.0, show_keys: bool = False, reads_per_second: float = 20.0):
        from robust_al.labelstudio.client import LabelStudioClient

        self.store, self.url, self.k = store, url.rstrip("/"), k
        self.lookahead = 0  # annotators.lookahead (the campaign sets it): people label batch i+1 while F_i trains
        self.client = LabelStudioClient(url, token)
        self.class_names = [str(c) for c in class_names]
        self.pool = pool  # what the tasks show (keys, images, texts); None: the bare item ids
        self.media, self.media_url, self.files_root = media, media_url, files_root
        self.show_predictions = show_predictions
        self.show_keys = show_keys  # annotators.labelstudio.show_keys: the pool's keys, else opaque ones
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
        from robust_al.labelstudio.webhook import TokenBucket

        self._reads = TokenBucket(reads_per_second, int(2 * reads_per_second))  # read-backs of rung ids
        self._flooded = False  # rings were dropped: poll (one export of the batch) instead of reading back each
        self._warned: set[tuple[Any, ...]] = set()  # what was already said once (foreign writes, changed settings)
        # for labelers (_tell): when the last query batch closed, and how long the next new batch took to come
        self._closed_at: float | None = None
        self._gap: float | None = None

    def _is_attached(self, project_id: int) -> bool:
        """Is this the user's own project the campaign is attached to (its tasks are the pool, its settings the
        user's)?"""
        return self.attached is not None and int(project_id) == self.attached.project.id

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
        """Stop listening and remove the campaign's webhooks from the server (a webhook whose listener is gone
        would make Label Studio try to reach a dead port during every annotation). One the server cannot remove
        now stays recorded, and the next start of the campaign replaces it."""
        hooks = self.store.get_meta("ls_webhooks", {})
        for pid, hook in sorted(hooks.items()):
            if not isinstance(hook, dict) or hook.get("id") is None:
                hooks.pop(pid)
                continue
            try:
                self.client.delete_webhook(int(hook["id"]))
                hooks.pop(pid)
            except Exception as e:  # the server is down: the next start deletes it
                log.warning("webhook %s of project %s not removed (%s)", hook.get("id"), pid, e)
        self.store.set_meta("ls_webhooks", hooks)
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
        links = self._links_dir()
        if links is not None:  # the folder of opaque links the tasks use (robust_al.labelstudio.media)
            links.mkdir(parents=True, exist_ok=True)
        path = str(links or self.pool.media_root.resolve())
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
            # no secret: any labeler can read a webhook's headers (GET /api/webhooks/), and a ring carries no
            # authority anyway: what it names is read back from the server (robust_al.labelstudio.webhook)
            listener = self.listener = WebhookListener()
            listener.start()
        hooks = self.store.get_meta("ls_webhooks", {})
        old = hooks.get(str(proj.id))
        if not isinstance(old, dict) or old.get("url") != listener.url:
            if isinstance(old, dict) and old.get("id") is not None:  # an earlier process's: gone with its port
                try:
                    self.client.delete_webhook(int(old["id"]))
                except Exception as e:  # already deleted by hand: nothing to undo
                    log.info("old webhook %s of project %s not deleted (%s)", old.get("id"), proj.id, e)
            wid = self.client.create_webhook(proj, listener.url)  # no headers: a secret would be readable
            hooks[str(proj.id)] = {"id": wid, "url": listener.url}
            self.store.set_meta("ls_webhooks", hooks)

    def guard(self, proj) -> list[str]:
        """Put back what a project member changed behind the campaign's back; returns what was put back.

        Open-source Label Studio lets every member PATCH a project's settings and its webhooks (measured with a
        labeler's token): a swapped ``alias`` in the label config stores other choices than the ones clicked, a
        lower ``maximum_annotations`` stops the server serving a task before k people answered, instructions and
        shown predictions steer answers, a deactivated webhook silences the doorbell. The settings a created
        project had when the campaign made it (or first saw it) are kept in the store and restored; an attached
        project's are the user's own: a change is reported, never undone."""
        keys = ("label_config", "maximum_annotations", "show_collab_predictions", "show_instruction",
                "expert_instruction", "sampling")
        info = self.client.project_info(proj.id)
        now = {k: info.get(k) for k in keys}
        kept = self.store.get_meta("ls_settings", {})
        before = kept.get(str(proj.id))
        if before is None:
            kept[str(proj.id)] = now
            self.store.set_meta("ls_settings", kept)
            before = now
        changed = [k for k in keys if now.get(k) != before.get(k)]
        attached = self._is_attached(proj.id)
        if changed and ("settings", proj.id, tuple(changed)) not in self._warned:
            self._warned.add(("settings", proj.id, tuple(changed)))
            log.warning("a member changed %s of Label Studio project %s%s", ", ".join(changed), proj.id,
                        "" if attached else ": put back")
        if changed and not attached:
            self.client.http.patch(f"/api/projects/{proj.id}/",
                                   json={k: before[k] for k in changed}).raise_for_status()
        hook = self.store.get_meta("ls_webhooks", {}).get(str(proj.id))
        if self.listener is not None and isinstance(hook, dict) and hook.get("id") is not None:
            held = {int(h["id"]): h for h in self.client.webhooks(proj)}
            mine = held.get(int(hook["id"]))
            if mine is None:  # deleted: register it again
                hooks = self.store.get_meta("ls_webhooks", {})
                hooks.pop(str(proj.id), None)
                self.store.set_meta("ls_webhooks", hooks)
                self._ensure_listener(proj)
                changed.append("webhook")
            elif not mine.get("is_active", True) or mine.get("url") != self.listener.url:
                self.client.http.patch(f"/api/webhooks/{int(hook['id'])}/",
                                       json={"is_active": True, "url": self.listener.url}).raise_for_status()
                changed.append("webhook")
            if "webhook" in changed and ("webhook", proj.id) not in self._warned:
                self._warned.add(("webhook", proj.id))
                log.warning("a member deactivated or deleted the webhook of Label Studio project %s: put back",
                            proj.id)
        return changed

    def tasks_for(self, proj, item_ids: Sequence[int], iteration: int, purpose: str) -> dict[int, int]:
        """item -> task in ``proj``; tasks are imported once (a resumed run finds them in the store). Each task
        shows the item (:func:`robust_al.labelstudio.media.task_fields`); the model's out-of-sample prediction
        becomes its pre-annotation only with ``show_predictions``. In an attached project the task already
        exists (item id = task id): it is queued instead (:meth:`_queue`)."""
        back = self.store.get_meta("ls_taken_back", {})  # project -> tasks taken back from a batch ahead
        closed = set(back.get(str(proj.id), []))
        have = self.store.ls_tasks(proj.id)
        mapping = dict(zip(have["item_id"].astype(int), have["task_id"].astype(int)))
        again = [int(i) for i in item_ids if mapping.get(int(i)) in closed]
        if again:  # taken back earlier, chosen again: served again, for this batch
            if not self._is_attached(proj.id):
                self.client.reopen_tasks([mapping[i] for i in again], proj.maximum_annotations)
            self.store.reassign_ls_tasks(proj.id, again, iteration, purpose)
            back[str(proj.id)] = sorted(closed - {mapping[i] for i in again})
            self.store.set_meta("ls_taken_back", back)
        if self._is_attached(proj.id):
            ids = [int(i) for i in item_ids]
            self.store.set_ls_tasks(proj.id, ids, ids, iteration, purpose)
            self._queue(proj, ids, iteration)
            return {i: i for i in ids}
        new = [int(i) for i in item_ids if int(i) not in mapping]
        pending = self.store.get_meta("ls_pending_imports", {})
        was = pending.get(str(proj.id))
        if new and isinstance(was, dict):  # tasks an earlier import made but nobody recorded (its response was
            # lost) are adopted: only that import's (its nonce and items, kept in the store before it was sent),
            # and only while they hold no annotation (any member can import tasks, in anyone's name)
            made = self.client.imported_rows(proj, str(was["nonce"]),
                                             after_task=int(have["task_id"].max()) if len(have) else 0)
            adopted = {int(was["items"][row]): tid for row, tid in made.items() if 0 <= row < len(was["items"])
                       and int(was["items"][row]) in new}
            if adopted:
                log.warning("adopting %d tasks of project %s that an interrupted import created",
                            len(adopted), proj.id)
                self.store.set_ls_tasks(proj.id, list(adopted), list(adopted.values()), iteration, purpose)
                mapping.update(adopted)
                new = [i for i in new if i not in adopted]
        nonce = None
        if new:
            predictions = self._predictions() if self.show_predictions else {}
            nonce = secrets.token_hex(8)
            # the task data carries no item id (ids follow the pool's order: an image folder's, its classes)
            self.store.set_meta("ls_pending_imports", {**pending, str(proj.id): {"nonce": nonce, "items": new}})
            items = []
            for row, i in enumerate(new):
                it: dict = {"import": nonce, "row": row, **self._shown(i)}
                if i in predictions:
                    label, score = predictions[i]
                    it["prediction"] = {"label": int(label), "score": float(score)}
                items.append(it)
            task_ids = self.client.import_tasks(proj, items, model_version=f"robust-al-iter{iteration}")
            # Label Studio (SQLite) gives a deleted task's id to the next task imported: a task id the store holds
            # for another item means a member deleted that item's task; its row must not name the new one
            reused = set(task_ids) & set(mapping.values())
            if reused:
                log.warning("tasks %s of project %s were deleted in Label Studio (their ids now name new tasks): "
                            "their items are asked again when chosen", sorted(reused), proj.id)
                self.store.drop_ls_tasks(proj.id, sorted(reused))
            self.store.set_ls_tasks(proj.id, new, task_ids, iteration, purpose)
            mapping.update(zip(new, task_ids))
        if nonce or was:
            pending.pop(str(proj.id), None)
            self.store.set_meta("ls_pending_imports", pending)
        return {int(i): mapping[int(i)] for i in item_ids}

    def _predictions(self) -> dict[int, tuple[int, float]]:
        pred = self.store.predictions().set_index("item_id")
        return {int(i): (int(r.label), float(r.score)) for i, r in pred.iterrows()}

    def display_key(self, item_id: int) -> str | None:
        """What the task shows as the item's name: the pool's key with ``show_keys``, else an opaque salted hash
        of it (stable per item for the campaign: the salt is kept in the store). None without a pool."""
        if self.pool is None:
            return None
        key = str(self.pool.keys[self.pool.positions([item_id])[0]])
        if self.show_keys:
            return key
        from robust_al.labelstudio.media import opaque_key

        return opaque_key(self._salt(), key)

    def _salt(self) -> str:
        """The campaign's secret for display keys (kept in the store: names stay the same across restarts)."""
        salt = self.store.get_meta("ls_display_salt")
        if not salt:
            salt = secrets.token_hex(16)
            self.store.set_meta("ls_display_salt", salt)
        return str(salt)

    def _links_dir(self) -> Path | None:
        """With media = local-files and keys hidden: the folder under the server's files root whose opaque links
        the tasks show (an image's own path names its class folder); None otherwise."""
        if self.show_keys or self.media != "local-files" or not self.files_root or self.pool is None \
                or self.pool.media_root is None:
            return None
        from robust_al.labelstudio.media import opaque_key

        root = Path(self.files_root).expanduser().resolve()
        return root / "robust-al-media" / opaque_key(self._salt(), str(Path(self.pool.media_root).resolve()))

    def _shown(self, item_id: int) -> dict:
        """The task data that shows one item: its display key (:meth:`display_key`) and its image URL or text."""
        if self.attached is not None:  # a re-examination project: the original task's image URL or text
            value = self.attached.values.get(int(item_id))
            if value is not None:
                field = "image" if self.attached.project.image else "text"
                return {"key": self.display_key(item_id), field: value}
        if self.pool is None:
            return {}
        from robust_al.labelstudio.media import task_fields

        return task_fields(self.pool, int(item_id), self.media, self.files_root, self.media_url,
                           shown_key=self.display_key(item_id), links_dir=self._links_dir())

    # -- an attached project: labels already there, robust-al's queue written back ---------------------------
    def adopt_existing(self) -> list[int]:
        """Store the annotations the attached project held before the campaign (purpose ``existing``, each
        once) and return the items they label: those are never asked about."""
        if self.attached is None:
            return []
        self.ingest(self.attached.project.id, self.attached.existing, -1, EXISTING, before_campaign=True)
        # only labels stored as existing: an answer robust-al asked for keeps its iteration (a resumed one replays)
        ann = self.store.annotations()
        return sorted({int(i) for i in ann.loc[ann["purpose"] == EXISTING, "task"]})

    def queue_view(self, proj, status: str | None = None) -> int:
        """The "robust-al queue" Data Manager tab of the attached project: the tasks with a queue prediction,
        in priority order (ascending queue model version, :meth:`_queue`). Any project member can edit a shared
        tab, so an existing one's filter and ordering are checked each batch and put back when changed.
        ``status``: what the tab's title says after "robust-al queue" (:meth:`_tell`)."""
        title = QUEUE_VIEW_TITLE + (f" · {status}" if status else "")
        views = self.store.get_meta("ls_queue_view", {})
        vid = views.get(str(proj.id))
        filters = {"conjunction": "and", "items": [{
            "filter": "filter:tasks:predictions_model_versions", "operator": "contains", "type": "List",
            "value": [QUEUE_MODEL_VERSION]}]}  # a list: a plain string is matched letter by letter
        if vid is not None:
            have = [v for v in self.client.views(proj) if int(v["id"]) == int(vid)]
            if have:
                data = dict(have[0].get("data") or {})
                items = [{k: f.get(k) for k in ("filter", "operator", "type", "value")}
                         for f in (data.get("filters") or {}).get("items") or []]
                intact = (items == filters["items"] and (data.get("filters") or {}).get("conjunction") == "and"
                          and list(data.get("ordering") or []) == QUEUE_ORDERING)
                if intact and (status is None or data.get("title") == title):
                    return int(vid)
                if not intact:
                    log.warning("the %r tab of project %s was edited (filters %s, ordering %s): put back",
                                QUEUE_VIEW_TITLE, proj.id, items, data.get("ordering"))
                data.update(title=title if status is not None else data.get("title") or QUEUE_VIEW_TITLE,
                            filters=filters, ordering=QUEUE_ORDERING)
                r = self.client.http.patch(f"/api/dm/views/{int(vid)}/", json={"project": proj.id, "data": data})
                r.raise_for_status()
                return int(vid)
        vid = self.client.create_view(proj, title, filters, ordering=QUEUE_ORDERING)
        views[str(proj.id)] = vid
        self.store.set_meta("ls_queue_view", views)
        return vid

    def _queue(self, proj, item_ids: list[int], iteration: int = 0) -> None:
        """Put the items' tasks in robust-al's queue, in the given (priority) order: a prediction each, model
        version ``robust-al-queue-<iteration>-<position>`` (the queue tab orders by it; an older batch's
        unanswered tasks come first), score = priority, added once; the model's guess as its choice only with
        ``show_predictions``. Then the tab is made, or checked and repaired (:meth:`queue_view`)."""
        queued = self.store.get_meta("ls_queue", {})
        guesses = self._predictions() if self.show_predictions else {}
        n = len(item_ids)
        for pos, tid in enumerate(item_ids):
            if str(tid) in queued:
                continue
            # one whose response was lost (a server restart) is adopted, not added twice
            mine = [p for p in self.client.predictions(tid) if is_queue_version(p.get("model_version"))]
            label = guesses.get(tid, (None, 0.0))[0]
            pid = (int(mine[0]["id"]) if mine else
                   self.client.add_prediction(proj, tid, queue_version(iteration, pos), 1.0 - pos / max(n, 1),
                                              label))
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
        """Where people label: the project's Data Manager (the robust-al queue tab of an attached project, where
        they must press ▾ → "Label Tasks As Displayed", :data:`LABEL_AS_DISPLAYED`)."""
        url = f"{self.url}/projects/{proj.id}/data"
        views = self.store.get_meta("ls_queue_view", {})
        return url + (f"?tab={views[str(proj.id)]}" if str(proj.id) in views else "")

    def how_to_label(self, proj) -> str:
        """Which button people press: in an attached project the queue tab's "Label Tasks As Displayed" (its
        "Label All Tasks" serves any task, holdout tasks included); in a project the campaign made, whose
        tasks are all queries imported in priority order, "Label All Tasks"."""
        if self._is_attached(proj.id):
            return LABEL_AS_DISPLAYED
        return 'press "Label All Tasks"'

    def _tell(self, proj, iteration: int, closed: bool, stopped: bool = False) -> None:
        """Tell labelers, in Label Studio, where the campaign is: a created project's description (on the projects
        page), an attached project's queue tab title (its description is the user's). After a query batch opened:
        that it is there; after it closed: that the model trains, and whether the next batch is already queued
        or in about how many seconds it comes (the last such wait, measured); ``stopped``: that the campaign does not
        run (finished, or stopped until resumed). Never costs a batch."""
        now = time.monotonic()
        if stopped:
            line = "the campaign is not running: no new batch comes until it runs again"
        elif closed:
            self._closed_at = now
            ahead = self.store.ls_tasks(proj.id)
            if (ahead["iteration"] == iteration + 1).any():
                line = f"batch {iteration} answered; batch {iteration + 1} is queued: keep labeling"
            elif self._gap is not None:
                line = f"batch {iteration} answered; the model trains: next batch in ~{self._gap:.0f} s"
            else:
                line = f"batch {iteration} answered; the model trains: the next batch comes after it"
        else:
            if self._closed_at is not None:  # the wait people had (or would have had without a batch ahead)
                self._gap, self._closed_at = now - self._closed_at, None
            line = f"batch {iteration} added"
        try:
            if self._is_attached(proj.id):
                self.queue_view(proj, status=line)
            else:
                self.client.http.patch(f"/api/projects/{proj.id}/",
                                       json={"description": f"robust-al: {line}"}).raise_for_status()
        except Exception as e:  # a courtesy to people: never let it cost the batch
            log.warning("could not tell Label Studio project %s where the campaign is (%s)", proj.id, e)

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)
        else:
            log.info(line)

    def _status(self, proj, held: dict[int, int], n: int, force: bool = False) -> None:
        """At most every ``status_seconds``: how many answers the batch holds, where to give them and which
        button to press (:meth:`how_to_label`)."""
        now = time.monotonic()
        if not force and now - self._last_status < self.status_seconds:
            return
        self._last_status = now
        got = sum(min(h, n) for h in held.values())
        self._say(f"waiting: {got}/{n * len(held)} answers in project {proj.id} at {self.data_url(proj)}: "
                  f"{self.how_to_label(proj)}")

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

    def ingest(self, project_id: int, annotations, iteration: int, purpose: str,
               before_campaign: bool = False) -> int:
        """Store Label Studio annotations (read from the server) exactly once, each as the answer of the account
        that wrote it; returns how many were new.

        A foreign write (``completed_by`` is not the writer, ``updated_by``) is evidence against its writer, who
        is flagged for impersonation (once per annotation; logged once per process): it is nobody's answer,
        neither the person it names nor the writer's. An annotation without a recorded writer (a task imported
        with annotations) is not stored, except an attached project's from before the campaign
        (``before_campaign``). A version written by someone else than the labeler an annotation is already
        stored under is not applied: nobody's stored answer changes by another's hand."""
        new = 0
        attached = self._is_attached(project_id)
        for a in annotations:
            ext = self.external_id(project_id, a.annotation_id)
            worker = worker_name(a.writer)
            stored = self.store.external_worker(ext)
            applied = stored is None or stored == worker
            # a task imported with annotations carries no writer (updated_by): any member can import one in
            # anyone's name. Only an attached project's annotations from before the campaign are taken so
            unknown = a.updated_by is None and not (before_campaign and attached)
            if a.foreign_write:
                self._impersonation(project_id, a)
            if (a.foreign_write or unknown or not applied) and (ext, a.writer) not in self._warned:
                self._warned.add((ext, a.writer))  # said once per annotation and writer, not at every poll
                if unknown:
                    log.warning("annotation %s names user %s but Label Studio records no writer (an import?): "
                                "not stored", a.annotation_id, a.user_id)
                elif applied:
                    log.warning("annotation %s attributed to user %s was written by user %s: not an answer; "
                                "%s is flagged for impersonation", a.annotation_id, a.user_id, a.writer, worker)
                else:
                    log.warning("annotation %s, stored as %s's, was changed by user %s: the change is not applied"
                                "%s", a.annotation_id, stored, a.writer,
                                " (flagged for impersonation)" if a.foreign_write else "")
            if a.foreign_write or unknown or not applied:
                # a write in someone else's name is evidence against its writer (the flag), never an answer:
                # stored as the writer's it would be one more vote for a person who has just shown bad faith
                continue
            status = self.store.upsert_external(ext, a.item_id, worker, a.label, a.was_cancelled, a.updated_at,
                                                iteration, purpose)
            new += status == "new"
            if status == "repeat":
                repeats = self._repeats.setdefault(int(project_id), {}).setdefault(int(a.item_id), set())
                repeats.add(int(a.annotation_id))
        return new

    def _impersonation(self, project_id: int, a) -> None:
        """Flag the writer of an annotation made in another person's name (once per annotation)."""
        reason = (f"impersonation: wrote Label Studio annotation {int(a.annotation_id)} (project {int(project_id)}) "
                  f"in the name of {worker_name(a.user_id)}")
        self.store.flag_once(-1, worker_name(a.writer), reason)

    def drain_webhooks(self) -> None:
        """Read back from the server the annotations the webhooks rang about, and store what it holds, for every
        project of the run: an answer to an earlier batch (or to the other project, while this one waits) is
        kept under the iteration and purpose it was asked for. Nothing of a delivery's payload is stored; at
        most ``reads_per_second`` read-backs (a flood of rings is dropped by the listener and becomes one poll)."""
        import httpx

        from robust_al.labelstudio.client import annotation_from_payload

        if self.listener is None:
            return
        rung, flooded = self.listener.take(self._reads.take(len(self.listener.pending)))
        if flooded:
            log.warning("webhook rings arrived faster than they can be read back: polling instead")
            self._flooded = True
        projects = {p.id: p for p in self._projects.values()}
        for n, aid in enumerate(rung):
            try:
                held = self.client.annotation(aid)
            except httpx.HTTPError as e:  # unreachable (a restart): ring again later, the poll catches up
                log.warning("could not read annotation %s back from Label Studio (%s)", aid, e)
                self.listener.put_back(rung[n:])
                return
            if held is None:
                # the server holds no such annotation: a forgery, or a deletion. Any member can delete anyone's
                # annotation and the server does not record who did, so a stored answer is kept: its author
                # withdraws it by marking it cancelled (was_cancelled, written under their own name)
                for pid in projects:
                    ext = self.external_id(pid, aid)
                    if self.store.external_worker(ext) is not None and ("deleted", aid) not in self._warned:
                        self._warned.add(("deleted", aid))
                        log.warning("annotation %s was deleted in Label Studio; its stored answer is kept "
                                    "(nobody can tell who deleted it)", aid)
                continue
            proj = projects.get(int(held.get("project") or -1))
            if proj is None or held.get("task") is None:
                log.info("annotation %s is not in a project of this campaign", aid)
                continue
            # the item is the one the campaign put to that task (_own), never what the task's data says
            own = self._own(proj, [annotation_from_payload(held, {"id": int(held["task"])}, proj)])
            if not own:
                log.warning("webhook annotation %s refused: task %s is not a task of this campaign, or its item "
                            "belongs to the secured holdout", aid, held["task"])
                continue
            ann, asked = own[0], self._asked_in(proj.id)
            refused = self._refuse(proj.id, ann, asked)
            if refused:
                log.warning("webhook annotation %s refused: %s", ann.annotation_id, refused)
                continue
            iteration, purpose = asked.get(ann.item_id, (None, -1, self._unasked(proj, "late")))[1:]
            self.ingest(proj.id, [ann], iteration, purpose)

    def _own(self, proj, annotations) -> list:
        """The annotations (read from the server) that lie on this campaign's tasks, each with the item the
        campaign put to its task (never what the task's data says: a member can edit task data), holdout items
        left out."""
        attached = self._is_attached(proj.id)
        if attached:  # its tasks are the pool: the task id is the item
            return [a for a in annotations if a.item_id not in self.forbidden]
        t = self.store.ls_tasks(proj.id)
        by_task = dict(zip(t["task_id"].astype(int), t["item_id"].astype(int)))
        out = []
        for a in annotations:
            item = by_task.get(int(a.task_id)) if a.task_id is not None else None
            if item is None or item in self.forbidden:
                continue
            out.append(a if a.item_id == item else dataclasses.replace(a, item_id=item))
        return out

    def _refuse(self, project_id: int, ann, asked: dict[int, tuple[int, int, str]]) -> str | None:
        """Why a delivered answer is not stored: its task is not one the campaign created (with that item;
        ``asked``: :meth:`_asked_in`), its item is in the secured holdout, or its user is not a member of the
        organization."""
        if ann.item_id in self.forbidden:
            return f"item {ann.item_id} belongs to the secured holdout"
        attached = self._is_attached(project_id)  # its tasks are the pool
        if not attached and ann.task_id is not None and asked.get(ann.item_id, (None,))[0] != ann.task_id:
            return f"task {ann.task_id} with item {ann.item_id} is not a task of this campaign"
        if not self._is_member(ann.writer):
            return f"user {ann.writer} is not a member of the server's organization"
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
        return EXISTING if self._is_attached(proj.id) else purpose

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
        """Store the batch's answers from a filtered export (the full JSON export: it carries ``updated_by``)."""
        anns = self._own(proj, self.client.export_annotations(proj, task_ids=list(tasks.values())))
        self.ingest(proj.id, anns, iteration, purpose)

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
        item_ids = self._askable(item_ids)
        if not item_ids:
            return []
        n = self.k if n_per_item is None else n_per_item
        deadline = time.time() + self.wait_seconds
        proj = self.retry_until(lambda: self.project("query" if purpose == "query" else "reexam", n), deadline)
        tasks = self._open(proj, item_ids, iteration, purpose, deadline)
        exclude = exclude or {}
        last_poll = 0.0
        while True:
            self.drain_webhooks()
            if self._flooded or time.time() - last_poll >= self.poll_seconds:
                self._flooded = False
                try:
                    self.guard(proj)
                except Exception as e:  # never let it cost the batch's answers: the next poll tries again
                    log.warning("checking Label Studio project %s failed (%s)", proj.id, e)
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
            if self.listener is not None and not self.listener.pending:
                self.listener.wait(min(0.2, self.poll_seconds))  # a ring wakes the loop at once
            else:
                time.sleep(min(0.2, self.poll_seconds))
        if self._is_attached(proj.id):
            finished = [tasks[i] for i, h in held.items() if h >= n]
            self.retry_until(lambda: self._unqueue(finished), deadline + 60)
        self.asked += sum(len(a) for a in answers.values())
        self.store.close_batch(iteration, purpose)
        if purpose == "query":
            self._tell(proj, iteration, closed=True)
        return [a for i in item_ids for a in answers[i][:n]]

    def post(self, item_ids: Sequence[int], iteration: int, purpose: str) -> None:
        """Put a query batch to the labelers now, without waiting for its answers (``ask`` waits later): with
        ``lookahead``, the next batch is in the project while the current one's model trains. Tasks are made
        once (a resumed run finds them in the store); a created project serves them after the tasks made
        before them, an attached one queues them after the earlier batches (:meth:`_queue`)."""
        item_ids = self._askable(item_ids)
        if not item_ids:
            return
        deadline = time.time() + self.wait_seconds
        proj = self.retry_until(lambda: self.project("query" if purpose == "query" else "reexam", self.k), deadline)
        self._open(proj, item_ids, iteration, purpose, deadline)

    def _askable(self, item_ids: Sequence[int]) -> list[int]:
        """The items as ints; :class:`HoldoutLeak` if one belongs to the secured holdout."""
        item_ids = [int(i) for i in item_ids]
        leaked = [i for i in item_ids if i in self.forbidden]
        if leaked:
            raise HoldoutLeak(f"item {leaked[0]} belongs to the secured holdout and must never reach an annotator")
        return item_ids

    def _open(self, proj, item_ids: list[int], iteration: int, purpose: str, deadline: float) -> dict[int, int]:
        """The batch's tasks (:meth:`tasks_for`); a query batch new to the project is announced to labelers."""
        t = self.store.ls_tasks(proj.id)
        fresh = purpose == "query" and not ((t["iteration"] == iteration) & (t["purpose"] == purpose)).any()
        tasks = self.retry_until(lambda: self.tasks_for(proj, item_ids, iteration, purpose), deadline)
        if fresh:
            self._tell(proj, iteration, closed=False)
        return tasks

    def withdraw(self, item_ids: Sequence[int], iteration: int, purpose: str) -> int:
        """Take back a batch put ahead that a stopped campaign will never use (:meth:`_take_back`, keeping only
        tasks someone answered); returns how many tasks were taken back."""
        item_ids = [int(i) for i in item_ids]
        settled = self._settle(item_ids, iteration, margin=0)
        if settled is None:
            return 0
        proj, kept = settled
        self.store.close_batch(iteration, purpose)
        gone = len(item_ids) - len(kept)
        self._say(f"{gone} task(s) of the batch queued ahead taken back from project {proj.id}: the campaign stopped")
        return gone

    def keep_ahead(self, item_ids: Sequence[int], iteration: int) -> list[int]:
        """Settle the batch queued ahead for ``iteration`` now that the model it waited for exists: keep the items
        whose tasks hold an answer, and the next unanswered ones in the order they are served, one per labeler
        known (someone may be answering those); take back the rest (:meth:`_take_back`). Returns the kept items,
        in the batch's order, then the items of tasks taken back earlier that have been answered since (someone
        had one open): paid for, they are asked to the end rather than left half answered."""
        settled = self._settle([int(i) for i in item_ids], iteration, margin=max(1, len(self.workers)))
        if settled is None:
            return []
        proj, kept = settled
        closed = set(self.store.get_meta("ls_taken_back", {}).get(str(proj.id), []))
        t = self.store.ls_tasks(proj.id)
        item_of = {int(task): int(i) for i, task in zip(t["item_id"], t["task_id"]) if int(task) in closed}
        _, held = self._answers(proj, {i: task for task, i in item_of.items()}, {}, lambda w: True)
        return kept + sorted(i for i, h in held.items() if h and i not in kept and i not in self.forbidden)

    def _settle(self, item_ids: list[int], iteration: int, margin: int) -> tuple[Any, list[int]] | None:
        """:meth:`_take_back` on the query project (None when it has none, or nothing to settle), retried: a
        server restart must not cost the campaign its batch, and taking back again is harmless."""
        if not item_ids or self.store.get_meta("ls_projects", {}).get(f"query:{self.k}") is None:
            return None
        proj = self.project("query", self.k)
        return proj, self.retry_until(lambda: self._take_back(proj, item_ids, iteration, margin),
                                      time.time() + self.wait_seconds)

    def _take_back(self, proj, item_ids: list[int], iteration: int, margin: int) -> list[int]:
        """Store every answer the items' tasks hold, then take back their tasks but the answered ones and the first
        ``margin`` unanswered ones (by task id: the order people are served): in a project the campaign made, a
        task still holding no annotation is closed (:meth:`LabelStudioClient.close_unanswered_tasks`; never
        deleted); in an attached project it leaves the queue (the task is the user's). Returns the items kept. A
        task taken back keeps its item: an answer someone still posts to it is stored, on that item."""
        t = self.store.ls_tasks(proj.id)
        back = self.store.get_meta("ls_taken_back", {})
        closed = set(back.get(str(proj.id), []))
        have = {int(i): int(task) for i, task in zip(t["item_id"], t["task_id"])
                if int(i) in set(item_ids) and int(task) not in closed}
        if not have:  # taken back already (a resumed run)
            return []
        self.drain_webhooks()
        self.poll_answers(proj, have, iteration, "query")
        _, held = self._answers(proj, have, {}, lambda w: True)
        open_ = sorted((have[i], i) for i in have if held[i] == 0)
        drop = [(tid, i) for tid, i in open_[margin:]]
        attached = self._is_attached(proj.id)
        if attached:
            self._unqueue([tid for tid, _ in drop])
            gone = {i for _, i in drop}
        else:
            shut = set(self.client.close_unanswered_tasks([tid for tid, _ in drop]))
            gone = {i for tid, i in drop if tid in shut}
        back[str(proj.id)] = sorted(closed | {have[i] for i in gone})
        self.store.set_meta("ls_taken_back", back)
        return [i for i in item_ids if i in have and i not in gone]

    def sync(self) -> int:
        """Pull every annotation of the run's projects made while the campaign was not running (filtered
        export of changed tasks since the last sync); returns how many were new."""
        since = self.store.get_meta("ls_last_sync")
        new = 0
        started = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 1))
        for key, pid in sorted(self.store.get_meta("ls_projects", {}).items()):
            attached = self._is_attached(pid)
            proj = self.attached.project if attached else self.client.get_project(int(pid))
            asked = self._asked_in(proj.id)
            for a in self._own(proj, self.client.export_annotations(proj, since=since)):
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
            query = next((p for key, p in self._projects.items() if key.startswith("query:")), None)
            if query is not None:
                self._tell(query, -1, closed=True, stopped=True)
        except (httpx.HTTPError, OSError) as e:
            log.warning("could not pull the last answers from Label Studio (%s); run `robust-al labelstudio "
                        "sync RUN_DIR` when it is back", e)
        finally:
            self.close()
