"""Label Studio's part of the run store, and of Label Studio's own database.

The run store keeps, beside the campaign's tables, which Label Studio task holds which item (``ls_tasks``) and
every version of an answer given in Label Studio (``annotation_changes``; the answers themselves are rows of
``annotations`` with an ``external_id``). :func:`set_server_admin` writes the admin account of a Label Studio
data directory made from the template (``robust_al.labelstudio.server``).
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

LABEL_STUDIO_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotation_changes (
    external_id TEXT NOT NULL, label INTEGER, cancelled INTEGER NOT NULL, updated_at TEXT, seen_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ls_tasks (
    project INTEGER NOT NULL, item_id INTEGER NOT NULL, task_id INTEGER NOT NULL, iteration INTEGER NOT NULL,
    purpose TEXT NOT NULL, PRIMARY KEY (project, item_id));
"""


class LabelStudioTables:
    """The Label Studio tables of a :class:`~robust_al.store.RunStore` (its ``db`` and ``transaction``)."""

    db: sqlite3.Connection  # set by RunStore.__init__

    if TYPE_CHECKING:  # RunStore's; declared here for the type checker only, so nothing changes at run time
        def transaction(self) -> AbstractContextManager[None]: ...

    def upsert_external(self, external_id: str, item_id: int, worker: str, label: int | None, cancelled: bool,
                        updated_at: str, iteration: int, purpose: str) -> str:
        """Store an annotation that lives elsewhere (Label Studio) exactly once, keyed on its external id.

        A redelivered event changes nothing; an edit updates the label (every version is kept in
        ``annotation_changes``); a cancellation or deletion marks it cancelled, never deletes it. A second
        answer by the same person on the same item (another project) is kept in ``annotation_changes`` only.
        Returns 'new', 'updated', 'duplicate' or 'repeat'.
        """
        row = self.db.execute("SELECT label, cancelled, updated_at FROM annotations WHERE external_id=?",
                              (external_id,)).fetchone()
        lab = -1 if label is None else int(label)
        with self.transaction():
            if row is None:
                try:
                    self.db.execute(
                        "INSERT INTO annotations (item_id, worker, label, iteration, purpose, created_at, external_id,"
                        " cancelled, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (int(item_id), worker, lab, int(iteration), purpose, time.time(), external_id,
                         int(bool(cancelled or label is None)), updated_at))
                    status = "new"
                except sqlite3.IntegrityError:  # this person answered the item already (another project)
                    last = self.db.execute("SELECT label, cancelled, updated_at FROM annotation_changes WHERE "
                                           "external_id=? ORDER BY rowid DESC LIMIT 1", (external_id,)).fetchone()
                    if last is not None and (last[0], bool(last[1]), last[2]) == (
                            lab, bool(cancelled or label is None), updated_at):
                        return "repeat"  # delivered again: nothing new to keep
                    status = "repeat"
            elif (row[0], bool(row[1]), row[2]) == (lab, bool(cancelled or label is None), updated_at) or \
                    (row[2] is not None and updated_at is not None and updated_at < row[2]):
                return "duplicate"
            else:
                self.db.execute("UPDATE annotations SET label=?, cancelled=?, updated_at=? WHERE external_id=?",
                                (lab, int(bool(cancelled or label is None)), updated_at, external_id))
                status = "updated"
            self.db.execute("INSERT INTO annotation_changes VALUES (?, ?, ?, ?, ?)",
                            (external_id, lab, int(bool(cancelled or label is None)), updated_at, time.time()))
        return status

    def external_worker(self, external_id: str) -> str | None:
        """The labeler an annotation that lives elsewhere is stored under (None: not stored)."""
        row = self.db.execute("SELECT worker FROM annotations WHERE external_id=?", (external_id,)).fetchone()
        return None if row is None else str(row[0])

    def flag_once(self, iteration: int, worker: str, reason: str) -> bool:
        """Add a flag (the ``flags`` table, shown by ``robust-al trust`` and the report) unless the same worker
        already carries the same reason; returns whether it was added. A flag read from the Label Studio server
        (evidence, not a result of an iteration) is kept with iteration -1, which a resume never drops."""
        with self.transaction():
            if self.db.execute("SELECT 1 FROM flags WHERE worker=? AND reason=?", (worker, reason)).fetchone():
                return False
            self.db.execute("INSERT INTO flags VALUES (?, ?, ?)", (int(iteration), str(worker), reason))
        return True

    def evidence_flags(self) -> dict[str, str]:
        """worker -> ``;``-joined reasons of the flags read from a Label Studio server (iteration -1: e.g. an
        impersonation), for the trust ledger to judge by."""
        out: dict[str, list[str]] = {}
        for worker, reason in self.db.execute("SELECT worker, reason FROM flags WHERE iteration = -1 ORDER BY rowid"):
            out.setdefault(str(worker), []).append(str(reason))
        return {w: ";".join(r) for w, r in out.items()}

    def set_ls_tasks(self, project: int, item_ids, task_ids, iteration: int, purpose: str) -> None:
        with self.transaction():
            self.db.executemany("INSERT OR IGNORE INTO ls_tasks VALUES (?, ?, ?, ?, ?)",
                                [(int(project), int(i), int(t), int(iteration), purpose)
                                 for i, t in zip(item_ids, task_ids)])

    def drop_ls_tasks(self, project: int, task_ids) -> None:
        """Forget tasks of ``project`` that no longer exist (a member deleted them)."""
        with self.transaction():
            self.db.executemany("DELETE FROM ls_tasks WHERE project = ? AND task_id = ?",
                                [(int(project), int(t)) for t in task_ids])

    def reassign_ls_tasks(self, project: int, item_ids, iteration: int, purpose: str) -> None:
        """The items' existing tasks in ``project`` are asked again, for ``iteration`` / ``purpose`` (a task taken
        back from a batch queued ahead, then chosen again)."""
        with self.transaction():
            self.db.executemany("UPDATE ls_tasks SET iteration = ?, purpose = ? WHERE project = ? AND item_id = ?",
                                [(int(iteration), purpose, int(project), int(i)) for i in item_ids])

    def ls_tasks(self, project: int | None = None) -> pd.DataFrame:
        q = "SELECT * FROM ls_tasks" + ("" if project is None else " WHERE project = ?")
        return pd.read_sql_query(q, self.db, params=() if project is None else (int(project),))

    def external_answers(self, prefix: str) -> list[tuple[int, str, int | None, bool]]:
        """(item_id, worker, label, cancelled) of the answers whose external id starts with ``prefix``, in the
        order they were first stored."""
        rows = self.db.execute("SELECT item_id, worker, label, cancelled FROM annotations "
                               "WHERE substr(external_id, 1, ?) = ? ORDER BY id", (len(prefix), prefix)).fetchall()
        return [(int(i), w, None if lab is None else int(lab), bool(c)) for i, w, lab, c in rows]


def set_server_admin(db_path: str | Path, template_user: str, username: str, password_hash: str, token: str,
                     organization_token: str) -> None:
    """Make the template's admin ``template_user`` into ``username`` with this password hash and API token, and
    give the organization a new invite token: one transaction on Label Studio's SQLite database."""
    db = sqlite3.connect(db_path)
    try:
        with db:
            (uid,) = db.execute("SELECT id FROM htx_user WHERE email=?", (template_user,)).fetchone()
            db.execute("UPDATE htx_user SET email=?, username=?, password=? WHERE id=?",
                       (username, username, password_hash, uid))
            db.execute("DELETE FROM authtoken_token WHERE user_id=?", (uid,))
            db.execute("INSERT INTO authtoken_token (key, created, user_id) VALUES (?, datetime('now'), ?)",
                       (token, uid))
            db.execute("UPDATE organization SET token=?", (organization_token,))
    finally:
        db.close()


def ls_task_items(run_dir: str | Path) -> dict[tuple[int, int], int]:
    """``{(project, task): item}`` of a campaign's Label Studio tasks, read without writing anything (another
    process may be running the campaign); empty before its store or schema exists."""
    path = Path(run_dir) / "campaign.sqlite"
    if not path.is_file():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {(int(p), int(t)): int(i) for p, t, i in db.execute("SELECT project, task_id, item_id FROM ls_tasks")}
    except sqlite3.OperationalError:  # the schema is not written yet
        return {}
    finally:
        db.close()
