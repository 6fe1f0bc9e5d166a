"""An embedded SQLite store (WAL) in the run directory.

Annotations cost money, so they are written one by one, each in its own transaction, the moment an
annotator answers, and are never deleted. Everything else (trust events, item states, augmentations,
metrics, checkpoints) is derived from them and the seed; on resume, derived rows of an iteration that did
not complete are dropped and that iteration is recomputed, reusing the stored annotations.
"""
from __future__ import annotations

import io
import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from robust_al.store.labelstudio import LABEL_STUDIO_SCHEMA, LabelStudioTables

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL, worker TEXT NOT NULL, label INTEGER NOT NULL,
    iteration INTEGER NOT NULL, purpose TEXT NOT NULL, created_at REAL NOT NULL,
    external_id TEXT, cancelled INTEGER NOT NULL DEFAULT 0, updated_at TEXT, UNIQUE (item_id, worker));
CREATE TABLE IF NOT EXISTS predictions (
    item_id INTEGER PRIMARY KEY, iteration INTEGER NOT NULL, label INTEGER NOT NULL, score REAL NOT NULL);
CREATE TABLE IF NOT EXISTS model_confusions (
    iteration INTEGER PRIMARY KEY, counts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    item_id INTEGER NOT NULL, iteration INTEGER NOT NULL, status TEXT NOT NULL, seq INTEGER PRIMARY KEY AUTOINCREMENT);
CREATE TABLE IF NOT EXISTS trust_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, iteration INTEGER NOT NULL, worker TEXT NOT NULL,
    delta REAL NOT NULL, trust REAL NOT NULL, reason TEXT NOT NULL, item_id INTEGER, created_at REAL NOT NULL,
    score REAL, n REAL NOT NULL DEFAULT 0, lower REAL, upper REAL, class_upper REAL, tau REAL, flags TEXT);
CREATE TABLE IF NOT EXISTS flags (
    iteration INTEGER NOT NULL, worker TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS augmentations (
    iteration INTEGER NOT NULL, item_id INTEGER NOT NULL, method TEXT NOT NULL,
    x BLOB NOT NULL, norm REAL);  -- NULL: not an attack (noise)
CREATE TABLE IF NOT EXISTS iterations (
    iteration INTEGER PRIMARY KEY, metrics TEXT NOT NULL, state TEXT NOT NULL,
    checkpoint BLOB NOT NULL, completed_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ann_item ON annotations(item_id);
CREATE INDEX IF NOT EXISTS ann_iter ON annotations(iteration, purpose);
CREATE INDEX IF NOT EXISTS ann_worker_live ON annotations(worker) WHERE cancelled = 0;
-- (ann_worker_live: labels per labeler from the index alone)
CREATE UNIQUE INDEX IF NOT EXISTS ann_external ON annotations(external_id) WHERE external_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS trust_iter ON trust_events(iteration);
CREATE TABLE IF NOT EXISTS label_counts (
    iteration INTEGER NOT NULL, purpose TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (iteration, purpose));
-- answers per (iteration, purpose), kept by the database itself, so budget reads do not count the whole table
-- (a COUNT over earlier iterations took 0.4 / 4 / 52 ms at 10k / 100k / 1M answers); answers are never
-- deleted and never change iteration or purpose
CREATE TRIGGER IF NOT EXISTS count_answers AFTER INSERT ON annotations BEGIN
    INSERT INTO label_counts VALUES (new.iteration, new.purpose, 1)
    ON CONFLICT (iteration, purpose) DO UPDATE SET n = n + 1;
END;
CREATE TABLE IF NOT EXISTS asked (
    iteration INTEGER NOT NULL, purpose TEXT NOT NULL, position INTEGER NOT NULL, item_id INTEGER NOT NULL,
    PRIMARY KEY (iteration, purpose, position));  -- a stage's batch, stored before anyone is asked
CREATE TABLE IF NOT EXISTS batches (
    iteration INTEGER NOT NULL, purpose TEXT NOT NULL, closed_at REAL NOT NULL,
    PRIMARY KEY (iteration, purpose));  -- when a live crowd's batch stopped waiting for answers
CREATE TABLE IF NOT EXISTS injected (
    item_id INTEGER PRIMARY KEY, iteration INTEGER NOT NULL, kind TEXT NOT NULL, y INTEGER NOT NULL,
    x BLOB NOT NULL);  -- items an experiment put into the pool (poisons); ground truth y = the honest label
CREATE TABLE IF NOT EXISTS item_keys (item_id INTEGER PRIMARY KEY, key TEXT NOT NULL);  -- the user's own item ids
CREATE TABLE IF NOT EXISTS filtered (
    iteration INTEGER NOT NULL, item_id INTEGER NOT NULL, reason TEXT NOT NULL, score REAL,
    PRIMARY KEY (iteration, item_id));  -- kept out of training by the poison filter, and why
CREATE TABLE IF NOT EXISTS inferred (
    iteration INTEGER NOT NULL, item_id INTEGER NOT NULL, label INTEGER, confidence REAL,
    n_answers INTEGER NOT NULL, status TEXT NOT NULL, PRIMARY KEY (iteration, item_id));
"""

def describe_sqlite_error(e: sqlite3.Error) -> str:
    """One line saying what a SQLite failure means for the user."""
    msg = str(e)
    if "disk is full" in msg or "disk I/O" in msg:
        return f"{msg}: free some space; every answer stored so far is kept, then resume"
    if "not a database" in msg or "malformed" in msg:
        return f"{msg}: the file is corrupt or not a robust-al campaign store"
    return msg


# tables holding derived rows keyed by iteration, dropped for an iteration that did not complete
DERIVED = ("predictions", "model_confusions", "items", "trust_events", "flags", "augmentations", "inferred",
           "filtered")


SCHEMA_VERSION = 5  # PRAGMA user_version; 0 = a store from before versioning (schema 1); older ones are
# upgraded in place (3: label_counts; 4: trust_events' credible interval and routing threshold; 5: their
# detector flags)
TRUST_EVENT_COLUMNS = {"lower": "REAL", "upper": "REAL", "class_upper": "REAL", "tau": "REAL", "flags": "TEXT"}


class StoreError(ValueError):
    """The run directory holds no usable store (missing, empty, corrupt, from a newer version, disk full)."""


def abandoned_start(db: Path) -> bool:
    """A store that a killed or failed start left behind: no stored config and no answer (safe to replace)."""
    if db.stat().st_size == 0:
        return True
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" not in tables:
                return not tables
            config = con.execute("SELECT 1 FROM meta WHERE key='config'").fetchone()
            answers = con.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] if "annotations" in tables else 0
            return config is None and answers == 0
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{db}: {e}: the file is corrupt or not a robust-al campaign store") from None



class RunStore(LabelStudioTables):
    """One campaign's SQLite database, ``RUN_DIR/campaign.sqlite``.

    ``create=False`` (status, trust, export, resume) opens only an existing store and writes no schema into
    a file that is not one (a 0-byte or foreign file is reported, not initialized).
    """

    def __init__(self, run_dir: str | Path, create: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "campaign.sqlite"
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path}: no campaign store here (expected a run directory made by robust-al run)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            # autocommit mode: every statement outside an explicit transaction is durable on return
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
            if not create and "meta" not in tables:
                raise StoreError(f"{self.path}: empty or not a robust-al campaign store")
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: written by a newer robust-al (store schema {version}, this one "
                                 f"reads up to {SCHEMA_VERSION}); upgrade robust-al to read it")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA + LABEL_STUDIO_SCHEMA)
            have = {r[1] for r in self.db.execute("PRAGMA table_info(trust_events)")}
            for col, kind in TRUST_EVENT_COLUMNS.items():  # schemas 4 and 5 (trust intervals, detector flags)
                if col not in have:
                    self.db.execute(f"ALTER TABLE trust_events ADD COLUMN {col} {kind}")
            if "annotations" in tables and version < 3:  # an older store: count what it already holds
                with self.transaction():
                    self.db.execute("DELETE FROM label_counts")
                    self.db.execute("INSERT INTO label_counts SELECT iteration, purpose, COUNT(*) FROM annotations"
                                    " GROUP BY iteration, purpose")
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: {describe_sqlite_error(e)}") from None

    def close(self) -> None:
        self.db.close()

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file, so that a copy of the file alone is complete."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction: every statement inside is durable together or not at all.

        The connection is in autocommit mode (``isolation_level=None``), where ``with connection:`` opens
        nothing: measured, a two-row ``executemany`` whose second row failed left the first row stored, and so
        did the first of two ``execute`` calls. Hence an explicit BEGIN IMMEDIATE (the write lock is taken at
        the start, so a concurrent writer waits here rather than failing mid-way) and ROLLBACK on any
        exception, Ctrl-C and SIGTERM included. Nested use joins the outer transaction."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @classmethod
    def existing(cls, run_dir: str | Path) -> RunStore:
        """The store of a run directory that must already hold a campaign (never creates one)."""
        return cls(run_dir, create=False)

    # -- meta ---------------------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_item_keys(self, item_ids: Iterable[int], keys: Iterable[str]) -> None:
        """The user's key of each pool item (int id -> key string), in one transaction."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO item_keys VALUES (?, ?)",
                                [(int(i), str(k)) for i, k in zip(item_ids, keys)])

    def item_keys(self) -> dict[int, str]:
        """int id -> the user's key; items without a stored key (injected poisons, older runs) are absent."""
        return {int(i): k for i, k in self.db.execute("SELECT item_id, key FROM item_keys")}

    # -- annotations (never deleted) ----------------------------------------------------------------------
    def add_annotation(self, item_id: int, worker: str, label: int, iteration: int, purpose: str,
                       external_id: str | None = None) -> None:
        """Store one answer durably; a second answer by the same worker on the same item is an error."""
        self.db.execute(
            "INSERT INTO annotations (item_id, worker, label, iteration, purpose, created_at, external_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (int(item_id), str(worker), int(label), int(iteration), purpose, time.time(), external_id),
        )

    def count_annotations(self, exclude_purpose: str | None = None) -> int:
        """How many annotations are stored (cancelled ones included: they were asked for), optionally not
        counting those of one purpose (e.g. labels a Label Studio project held before the campaign)."""
        return int(self.db.execute("SELECT COALESCE(SUM(n), 0) FROM label_counts WHERE purpose IS NOT ?",
                                   (exclude_purpose,)).fetchone()[0])

    def labels_before(self, iteration: int, exclude_purpose: str | None = None) -> int:
        """Labels bought in iterations before ``iteration`` (late answers to no batch, iteration -1, included),
        optionally not counting one purpose."""
        return int(self.db.execute("SELECT COALESCE(SUM(n), 0) FROM label_counts"
                                   " WHERE iteration < ? AND purpose IS NOT ?",
                                   (int(iteration), exclude_purpose)).fetchone()[0])

    def labels_of_iteration(self, iteration: int) -> dict[str, int]:
        """Labels bought in ``iteration``, per purpose (query, reexam, audit:<worker>)."""
        rows = self.db.execute("SELECT purpose, n FROM label_counts WHERE iteration = ?", (int(iteration),)).fetchall()
        return {str(p): int(n) for p, n in rows}

    def set_batch(self, iteration: int, purpose: str, item_ids) -> None:
        """The items a stage is about to ask about, stored before anyone is asked (kept on resume)."""
        with self.transaction():
            self.db.executemany("INSERT OR IGNORE INTO asked VALUES (?, ?, ?, ?)",
                                [(int(iteration), purpose, k, int(i)) for k, i in enumerate(item_ids)])

    def batch(self, iteration: int, purpose: str) -> np.ndarray | None:
        """The stored batch of a stage, in the order it was asked; None if that stage never asked."""
        rows = self.db.execute("SELECT item_id FROM asked WHERE iteration = ? AND purpose = ? ORDER BY position",
                               (int(iteration), purpose)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64) if rows else None

    def asked_items(self, purpose: str, before: int) -> np.ndarray:
        """Every item a stored batch of ``purpose`` of an iteration before ``before`` asked about."""
        rows = self.db.execute("SELECT DISTINCT item_id FROM asked WHERE purpose = ? AND iteration < ?"
                               " ORDER BY item_id", (purpose, int(before))).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def close_batch(self, iteration: int, purpose: str) -> None:
        """A live crowd's batch stopped waiting: answers to it stored after now arrived late."""
        self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)", (int(iteration), purpose, time.time()))

    def open_batches(self) -> list[tuple[int, str, np.ndarray]]:
        """(iteration, purpose, items) of the stored batches a live crowd has not closed yet, oldest first:
        what a running Label Studio campaign is waiting for (a killed one left them open too)."""
        rows = self.db.execute(
            "SELECT DISTINCT a.iteration, a.purpose FROM asked a LEFT JOIN batches b ON a.iteration = b.iteration"
            " AND a.purpose = b.purpose WHERE b.closed_at IS NULL ORDER BY a.iteration").fetchall()
        out = []
        for it, p in rows:
            items = self.batch(int(it), str(p))
            out.append((int(it), str(p), items if items is not None else np.empty(0, dtype=np.int64)))
        return out

    def late_answers(self) -> int:
        """Answers stored after the batch they were asked for had closed (or to no batch of the run)."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM annotations a LEFT JOIN batches b ON a.iteration = b.iteration AND a.purpose ="
            " b.purpose WHERE a.external_id IS NOT NULL AND (a.iteration < 0 OR a.created_at > b.closed_at)"
        ).fetchone()
        return int(row[0])

    def get_annotation(self, item_id: int, worker: str) -> int | None:
        row = self.db.execute(
            "SELECT label FROM annotations WHERE item_id=? AND worker=? AND cancelled=0", (int(item_id), str(worker))
        ).fetchone()
        return None if row is None else int(row[0])

    def add_annotations(self, rows: Iterable[tuple[int, str, int]], iteration: int, purpose: str) -> int:
        """Store many (item, worker, label) answers in one transaction: all or none are durable on return.
        For simulated and replayed crowds, whose answers cost no money: one fsync per answer capped writing
        at ~400 answers/s (a million replayed answers took 42 min)."""
        now = time.time()
        # These answers are free to ask again (a simulated or replayed crowd answers the same way), so their
        # commit is not fsync'd on its own (synchronous=NORMAL: safe against a killed process, which the WAL
        # survives, though not against a power cut); the iteration's checkpoint, a FULL commit, makes them
        # durable before the iteration is reported. Measured: one 20k-answer commit took 8.0 s with FULL and
        # 1.3 s with NORMAL on this machine's disk. Paid answers (Label Studio) keep a FULL commit each.
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.transaction():
                cur = self.db.executemany(
                    "INSERT INTO annotations (item_id, worker, label, iteration, purpose, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(int(i), str(w), int(lab), int(iteration), purpose, now) for i, w, lab in rows])
        finally:
            self.db.execute("PRAGMA synchronous=FULL")
        return cur.rowcount

    def stored_labels(self, item_ids: Iterable[int]) -> dict[tuple[int, str], int]:
        """``{(item, worker): label}`` of the answers already stored on ``item_ids`` (one indexed query)."""
        rows = self.db.execute(
            "SELECT item_id, worker, label FROM annotations WHERE cancelled = 0 AND item_id IN"
            " (SELECT value FROM json_each(?))", (json.dumps([int(i) for i in item_ids]),)).fetchall()
        return {(int(i), str(w)): int(lab) for i, w, lab in rows}

    def annotations(self, item_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """All annotations (or those on ``item_ids``, read through the item index) in crowd-kit's long format
        plus bookkeeping columns."""
        cols = "id, item_id AS task, worker, label, iteration, purpose, created_at, external_id"
        if item_ids is None:
            return pd.read_sql_query(f"SELECT {cols} FROM annotations WHERE cancelled = 0 ORDER BY id", self.db)
        ids = json.dumps([int(i) for i in item_ids])
        return pd.read_sql_query(f"SELECT {cols} FROM annotations WHERE cancelled = 0 AND item_id IN "
                                 "(SELECT value FROM json_each(?)) ORDER BY id", self.db, params=(ids,))

    def labels_per_worker(self) -> pd.Series:
        """Answers (not cancelled) per labeler."""
        rows = self.db.execute(
            "SELECT worker, COUNT(*) FROM annotations WHERE cancelled = 0 GROUP BY worker").fetchall()
        return pd.Series({str(w): int(n) for w, n in rows}, dtype="int64")

    def trust_summary(self) -> pd.DataFrame:
        """Per labeler with trust events: current trust and number of events (aggregated in SQL)."""
        return pd.read_sql_query(
            "SELECT t.worker, t.trust, c.events FROM trust_events t"
            " JOIN (SELECT worker, MAX(id) AS last, COUNT(*) AS events FROM trust_events GROUP BY worker) c"
            "   ON t.id = c.last ORDER BY t.trust, t.worker", self.db)

    # -- derived rows ---------------------------------------------------------------------------------------
    def set_prediction(self, item_id: int, iteration: int, label: int, score: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?)",
                        (int(item_id), int(iteration), int(label), float(score)))

    def predictions(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM predictions ORDER BY item_id", self.db)

    def set_model_confusion(self, iteration: int, counts: np.ndarray) -> None:
        """Counts (true x predicted) of the model that made iteration ``iteration``'s predictions, on S: one
        C x C table, or one per confidence band (bands x C x C; ``robust_al.crowd.aggregate.confidence_band``)."""
        self.db.execute("INSERT OR REPLACE INTO model_confusions VALUES (?, ?)",
                        (int(iteration), json.dumps(np.asarray(counts).tolist())))

    def model_confusions(self) -> dict[int, np.ndarray]:
        rows = self.db.execute("SELECT iteration, counts FROM model_confusions").fetchall()
        return {int(i): np.array(json.loads(c), dtype=float) for i, c in rows}

    def set_status(self, item_ids: Iterable[int], status: str, iteration: int) -> None:
        with self.transaction():
            self.db.executemany("INSERT INTO items (item_id, iteration, status) VALUES (?, ?, ?)",
                                [(int(i), int(iteration), status) for i in item_ids])

    def add_filtered(self, iteration: int, rows: Iterable[tuple[int, str, float]]) -> None:
        """Items the poison filter kept out of training at ``iteration``: (item_id, reason, score) rows."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO filtered VALUES (?, ?, ?, ?)",
                                [(int(iteration), int(i), str(r), float(sc)) for i, r, sc in rows])

    def filtered(self) -> pd.DataFrame:
        """Every removal by the poison filter: iteration, item_id, reason, score."""
        return pd.read_sql_query("SELECT iteration, item_id, reason, score FROM filtered ORDER BY iteration, item_id",
                                 self.db)

    def statuses(self) -> dict[int, str]:
        """Current status per item (the latest event wins)."""
        rows = self.db.execute("SELECT item_id, status FROM items ORDER BY seq").fetchall()
        return {int(i): s for i, s in rows}

    def status_history(self, status: str) -> list[tuple[int, int]]:
        """(item_id, iteration) of every event that gave an item ``status``, in the order they were stored."""
        rows = self.db.execute("SELECT item_id, iteration FROM items WHERE status=? ORDER BY seq", (status,))
        return [(int(i), int(it)) for i, it in rows.fetchall()]

    def items_with_status(self, statuses: Iterable[str], iteration: int | None = None) -> set[int]:
        """Items that ever had one of ``statuses`` (at ``iteration``, when given)."""
        statuses = list(statuses)
        if not statuses:
            return set()
        sql = f"SELECT DISTINCT item_id FROM items WHERE status IN ({','.join('?' * len(statuses))})"
        args: list = statuses
        if iteration is not None:
            sql, args = sql + " AND iteration=?", [*statuses, int(iteration)]
        return {int(i) for (i,) in self.db.execute(sql, args).fetchall()}

    def set_inferred(self, iteration: int, rows: Iterable[tuple[int, int | None, float | None, int, str]]) -> None:
        """The labels inferred at a completed iteration: (item_id, label, confidence, n_answers, status) rows."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO inferred VALUES (?, ?, ?, ?, ?, ?)",
                [(int(iteration), int(i), None if lab is None else int(lab), None if c is None else float(c),
                  int(n), str(st)) for i, lab, c, n, st in rows])

    def inferred(self, iteration: int | None = None) -> pd.DataFrame:
        """Inferred labels of ``iteration`` (default: the last completed one), by item id; columns item_id,
        label, confidence, n_answers, status (empty before any iteration completed)."""
        if iteration is None:
            iteration = self.last_iteration()
        return pd.read_sql_query(
            "SELECT item_id, label, confidence, n_answers, status FROM inferred WHERE iteration = ? ORDER BY item_id",
            self.db, params=(-1 if iteration is None else int(iteration),))

    def add_trust_event(self, iteration: int, worker: str, delta: float, trust: float, reason: str,
                        item_id: int | None = None, score: float | None = None, n: float = 0.0, *,
                        lower: float | None = None, upper: float | None = None,
                        class_upper: float | None = None, tau: float | None = None, flags: str | None = None
                        ) -> None:
        """One change of a labeler's trust; ``score``/``n``: its agreement score and label count after it;
        ``lower``/``upper``/``class_upper``: the score's credible interval and worst class's upper bound;
        ``tau``: the routing threshold in force; ``flags``: the detectors' ';'-joined flags on it ('' none)."""
        self.db.execute(
            "INSERT INTO trust_events (iteration, worker, delta, trust, reason, item_id, created_at, score, n,"
            " lower, upper, class_upper, tau, flags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (int(iteration), str(worker), float(delta), float(trust), reason,
             None if item_id is None else int(item_id), time.time(), score, float(n),
             lower, upper, class_upper, tau, flags))

    def trust_events(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM trust_events ORDER BY id", self.db)

    def add_flag(self, iteration: int, worker: str, reason: str) -> None:
        self.db.execute("INSERT INTO flags VALUES (?, ?, ?)", (int(iteration), str(worker), reason))

    def flags(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM flags", self.db)

    def add_augmentations(self, iteration: int, item_ids: np.ndarray, method: str, X: np.ndarray,
                          norms: np.ndarray) -> None:
        X = np.ascontiguousarray(X, dtype=np.float32)
        with self.transaction():
            self.db.executemany(
                "INSERT INTO augmentations VALUES (?, ?, ?, ?, ?)",
                [(int(iteration), int(i), method, X[k].tobytes(), float(n))
                 for k, (i, n) in enumerate(zip(item_ids, norms))])

    def augmentations(self, input_shape: tuple[int, ...], before: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """(item_ids, X, methods, norms) of every stored augmentation (made before iteration ``before``)."""
        rows = self.db.execute("SELECT item_id, method, x, norm FROM augmentations WHERE iteration < ? ORDER BY rowid",
                               (2**62 if before is None else int(before),)).fetchall()
        if not rows:
            return (np.zeros(0, np.int64), np.zeros((0, *input_shape), np.float32), [], np.zeros(0))
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        X = np.stack([np.frombuffer(r[2], dtype=np.float32).reshape(input_shape) for r in rows])
        norms = np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=float)
        return ids, X, [r[1] for r in rows], norms

    def add_injected(self, iteration: int, item_ids: np.ndarray, kind: str, X: np.ndarray, y: np.ndarray,
                     meta: tuple[str, Any]) -> None:
        """Items put into the pool, with the meta entry describing them, in one transaction (kept on resume:
        an injection is part of the experiment, not a derived row)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (meta[0], json.dumps(meta[1])))
            self.db.executemany("INSERT INTO injected VALUES (?, ?, ?, ?, ?)",
                                [(int(i), int(iteration), kind, int(c), X[k].tobytes())
                                 for k, (i, c) in enumerate(zip(item_ids, y))])

    def injected_ids(self) -> np.ndarray:
        """Ids of the items injected into the pool, in id order (without loading their inputs)."""
        rows = self.db.execute("SELECT item_id FROM injected ORDER BY item_id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def injected(self, input_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """(item_ids, X, y, kinds) of the items injected into the pool, in id order."""
        rows = self.db.execute("SELECT item_id, x, y, kind FROM injected ORDER BY item_id").fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, *input_shape), np.float32), np.zeros(0, np.int64), []
        return (np.array([r[0] for r in rows], dtype=np.int64),
                np.stack([np.frombuffer(r[1], dtype=np.float32).reshape(input_shape) for r in rows]),
                np.array([r[2] for r in rows], dtype=np.int64), [r[3] for r in rows])

    # -- iterations ----------------------------------------------------------------------------------------
    def complete_iteration(self, iteration: int, metrics: dict, state: dict, checkpoint: dict) -> None:
        """Mark ``iteration`` complete with its metrics, loop state and model weights, atomically."""
        buf = io.BytesIO()
        import torch  # local: the store itself does not need torch

        torch.save(checkpoint, buf)
        self.db.execute(
            "INSERT OR REPLACE INTO iterations VALUES (?, ?, ?, ?, ?)",
            (int(iteration), json.dumps(metrics), json.dumps(state), buf.getvalue(), time.time()))

    def last_annotated_iteration(self) -> int | None:
        """The latest iteration any answer was stored for (completed or not)."""
        row = self.db.execute("SELECT MAX(iteration) FROM annotations").fetchone()
        return None if row[0] is None else int(row[0])

    def workers(self, prefix: str = "") -> list[str]:
        """Every labeler who gave an answer, optionally only those whose id starts with ``prefix``."""
        rows = self.db.execute("SELECT DISTINCT worker FROM annotations WHERE substr(worker, 1, ?) = ?",
                               (len(prefix), prefix)).fetchall()
        return sorted(w for (w,) in rows)

    def answer_update_times(self, purpose: str = "query") -> pd.DataFrame:
        """iteration, updated_at (the external tool's timestamp, as stored) of the ``purpose`` answers."""
        return pd.read_sql_query("SELECT iteration, updated_at FROM annotations WHERE purpose=?", self.db,
                                 params=(purpose,))

    def last_iteration(self) -> int | None:
        row = self.db.execute("SELECT MAX(iteration) FROM iterations").fetchone()
        return None if row[0] is None else int(row[0])

    def iteration_state(self, iteration: int) -> tuple[dict, dict, dict]:
        """(metrics, state, checkpoint) of a completed iteration."""
        import torch

        row = self.db.execute("SELECT metrics, state, checkpoint FROM iterations WHERE iteration=?",
                              (int(iteration),)).fetchone()
        if row is None:
            raise KeyError(f"iteration {iteration} is not complete in {self.path}")
        ckpt = torch.load(io.BytesIO(row[2]), map_location="cpu", weights_only=True)
        return json.loads(row[0]), json.loads(row[1]), ckpt

    def metrics(self) -> list[dict]:
        rows = self.db.execute("SELECT iteration, metrics FROM iterations ORDER BY iteration").fetchall()
        return [{"iteration": i, **json.loads(m)} for i, m in rows]

    def drop_incomplete(self) -> int:
        """Drop derived rows of iterations after the last completed one; returns the iteration to redo."""
        last = self.last_iteration()
        after = -1 if last is None else last
        with self.transaction():
            for table in DERIVED:
                self.db.execute(f"DELETE FROM {table} WHERE iteration > ?", (after,))
        return after + 1


def progress(run_dir: str | Path) -> dict[str, Any]:
    """How far a campaign another process may be running has come, read without writing anything: the
    iterations completed and the answers stored per iteration (both empty before its schema exists)."""
    path = Path(run_dir) / "campaign.sqlite"
    if not path.is_file():
        return {"completed": [], "answers": {}}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        done = [int(i) for (i,) in db.execute("SELECT iteration FROM iterations ORDER BY iteration")]
        rows = db.execute("SELECT iteration, SUM(n) FROM label_counts GROUP BY iteration")
        answers = {int(i): int(n) for i, n in rows}
        return {"completed": done, "answers": answers}
    except sqlite3.OperationalError:  # the schema is not written yet
        return {"completed": [], "answers": {}}
    finally:
        db.close()
