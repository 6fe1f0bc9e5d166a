"""An existing Label Studio project as a campaign's pool (``data.name: labelstudio`` with
``annotators.labelstudio.project_id``).

Each task is one pool item: the item id is the task id, the key is ``str(task id)`` (or the task data field
``data.options.key_field``). What the project's ``<Choices>`` control labels (found in its labeling config,
whatever the names) is the item: an ``<Image>``'s file is fetched through the server with the token
(``/data/upload/...``, ``/data/local-files/?d=...``, an absolute URL on that server, or a ``data:`` URL) and
written under ``RUN_DIR/labelstudio-media/`` so that the pool can be embedded; a ``<Text>``'s text is the
item's text. Model inputs: images resized to ``image_size`` (default 32) RGB in [0, 1]; texts hashed into 1024
bag-of-words features.

Trusted labels (what the secured holdout S needs) come from a file outside Label Studio,
``data.options.trusted_labels``: a CSV ``task,label`` (task id, class name). Never from the project itself: every
project member can read every task's data and every annotation (``GET /api/tasks/``), so a truth kept there is
a truth every labeler can see. A ``truth_field`` is refused for that reason. Annotations marked *ground truth*
are labels already collected like any other (stored, never asked about again), unless
``data.options.ground_truth_annotations: true`` makes them trusted labels too, knowing that every member can
read them. Nothing in the project is changed by reading it.
"""
from __future__ import annotations

import base64
import hashlib
import io
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from robust_al.data.pool import UNKNOWN, Dataset, Pool
from robust_al.labelstudio.client import LabelStudioClient, LSAnnotation, Project, annotation_from_payload

TEXT_FEATURES = 1024


@dataclass
class AttachedProject:
    """A project read as a pool: the dataset, the project, and the annotations it already held."""
    project: Project
    dataset: Dataset
    existing: list[LSAnnotation] = field(default_factory=list)  # not ground truth: labels already collected
    values: dict[int, str] = field(default_factory=dict)  # item -> the task's original data value (URL / text)


def _image_bytes(client: LabelStudioClient, value: str) -> tuple[bytes, str]:
    """The image behind a task's data value and a file suffix for it."""
    if value.startswith("data:"):
        head, _, payload = value.partition(",")
        mime = head[5:].split(";")[0]
        data = base64.b64decode(payload) if ";base64" in head else unquote(payload).encode()
        return data, mimetypes.guess_extension(mime) or ".img"
    suffix = Path(unquote(urlparse(value).query.rpartition("=")[2] or urlparse(value).path)).suffix or ".img"
    return client.fetch(value), suffix


def _load_image(data: bytes, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
    return arr.transpose(2, 0, 1)


def _text_features(texts: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import HashingVectorizer

    hv = HashingVectorizer(n_features=TEXT_FEATURES, alternate_sign=False, norm="l2")
    return hv.transform(texts).toarray().astype(np.float32)


TRUTH_FIELD_REFUSED = ("data.options.truth_field: a task data field every project member can read (GET /api/tasks/); "
                       "give the trusted labels in a file: data.options.trusted_labels")


def read_trusted_tasks(path: str | Path, task_ids: list[int], class_names: tuple[str, ...] | list[str],
                       project_id: int) -> dict[int, int]:
    """task id -> class index of a CSV ``task,label`` (task id, class name); a bad line is one ValueError
    naming the file, the line and what was expected."""
    from robust_al.data.loaders.common import pair_rows, user_file

    path = user_file(path, "a CSV task,label of trusted labels (data.options.trusted_labels)")
    tasks, index = set(task_ids), {c: k for k, c in enumerate(class_names)}
    out: dict[int, int] = {}
    for line, task, label in pair_rows(path, "task", "label"):
        try:
            tid = int(task)
        except ValueError:
            raise ValueError(f"{path}: line {line}: task {task!r} is not a task id (expected an integer)") from None
        if tid not in tasks:
            raise ValueError(f"{path}: line {line}: task {tid} is not a task of Label Studio project {project_id}")
        if label not in index:
            raise ValueError(f"{path}: line {line}: label {label!r} is not a class; known classes: "
                             f"{list(class_names)}")
        if tid in out:
            raise ValueError(f"{path}: line {line}: task {tid} is listed twice")
        out[tid] = index[label]
    return out


def dataset_from_project(client: LabelStudioClient, project_id: int, media_dir: str | Path,
                         image_size: int = 32, trusted_labels: str | Path | None = None,
                         key_field: str | None = None, ground_truth_annotations: bool = False,
                         truth_field: str | None = None) -> AttachedProject:
    """Read project ``project_id`` (tasks, labeling config, annotations) into a :class:`Dataset` whose train
    pool holds every task and whose test split is empty; the trusted labels are those of the file
    ``trusted_labels`` (:func:`read_trusted_tasks`), and of the ground-truth annotations only with
    ``ground_truth_annotations``. Raises :class:`ProjectNotFound` for a missing project and ValueError for
    a ``truth_field`` (:data:`TRUTH_FIELD_REFUSED`), a bad trusted-labels file, or a config robust-al cannot
    label with (no single-choice ``<Choices>`` on an ``<Image>`` or ``<Text>``)."""
    if truth_field:
        raise ValueError(TRUTH_FIELD_REFUSED)
    proj = client.get_project(project_id, attached=True)
    rows = sorted(client.export(proj, export_type="JSON", all_tasks=True), key=lambda r: int(r["id"]))
    names = proj.class_names
    media_kind = "image" if proj.image else "text"
    ids, keys, media, values, y, X = [], [], [], {}, [], []
    existing: list[LSAnnotation] = []
    media_dir = Path(media_dir)
    trusted = (read_trusted_tasks(trusted_labels, [int(r["id"]) for r in rows], names, proj.id)
               if trusted_labels is not None else {})
    for row in rows:
        tid, data = int(row["id"]), row.get("data") or {}
        value = data.get(proj.value_key)
        if value is None:
            raise ValueError(f"Label Studio project {proj.id}: task {tid} has no data.{proj.value_key} "
                             f"(what <{'Image' if proj.image else 'Text'} name=\"{proj.to_name}\"> shows)")
        truth = trusted.get(tid, UNKNOWN)
        for a in row.get("annotations") or []:
            if ground_truth_annotations and a.get("ground_truth") and not a.get("was_cancelled"):
                ann = annotation_from_payload(a, row, proj)
                if ann.label is not None and truth not in (UNKNOWN, ann.label):
                    raise ValueError(f"{trusted_labels}: task {tid} labelled {names[truth]!r}, but its ground-truth "
                                     f"annotation {a.get('id')} says {names[ann.label]!r}")
                truth = ann.label if ann.label is not None else truth
            else:
                existing.append(annotation_from_payload(a, row, proj))
        if proj.image:
            blob, suffix = _image_bytes(client, str(value))
            path = media_dir / f"{tid}{suffix}"
            if not path.exists() or hashlib.sha1(path.read_bytes()).digest() != hashlib.sha1(blob).digest():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(blob)
            X.append(_load_image(blob, image_size))
            media.append(str(path.resolve()))
        else:
            media.append(str(value))
        ids.append(tid)
        keys.append(str(data.get(key_field, tid)) if key_field else str(tid))
        values[tid] = str(value)
        y.append(truth)
    if not ids:
        raise ValueError(f"Label Studio project {proj.id} has no tasks: there is nothing to label")
    Xa = np.stack(X) if proj.image else _text_features(media)
    train = Pool(np.array(ids), Xa, np.array(y), len(names), list(names), keys=np.array(keys, dtype=object),
                 media=np.array(media, dtype=object), media_kind=media_kind,
                 media_root=media_dir.resolve() if proj.image else None)
    test = Pool(np.zeros(0, np.int64), np.zeros((0, *Xa.shape[1:]), np.float32), np.zeros(0, np.int64),
                len(names), list(names), media_kind=media_kind)
    return AttachedProject(proj, Dataset(f"labelstudio-project-{proj.id}", train, test), existing, values)
