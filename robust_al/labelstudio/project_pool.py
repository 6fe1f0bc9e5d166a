"""An existing Label Studio project as a campaign's pool (``data.name: labelstudio`` with
``annotators.labelstudio.project_id``).

Each task is one pool item: the item id is the task id, the key is ``str(task id)`` (or the task data field
``data.options.key_field``). What the project's ``<Choices>`` control labels (found in its labeling config,
whatever the names) is the item: an ``<Image>``'s file is fetched through the server with the token
(``/data/upload/...``, ``/data/local-files/?d=...``, an absolute URL on that server, or a ``data:`` URL) and
written under ``RUN_DIR/labelstudio-media/`` so that the pool can be embedded; a ``<Text>``'s text is the
item's text. Model inputs: images resized to ``image_size`` (default 32) RGB in [0, 1]; texts hashed into 1024
bag-of-words features.

Ground truth (what the secured holdout S needs): the task data field ``data.options.truth_field`` (a class name
or index) and annotations marked *ground truth* in Label Studio. Other annotations already in the project are
labels already collected: the campaign stores them and never asks about those items again. Nothing in the
project is changed by reading it.
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


def _truth(value, names: tuple[str, ...]) -> int:
    if value is None or value == "":
        return UNKNOWN
    if str(value) in names:
        return names.index(str(value))
    try:
        i = int(value)
    except (TypeError, ValueError):
        return UNKNOWN
    return i if 0 <= i < len(names) else UNKNOWN


def dataset_from_project(client: LabelStudioClient, project_id: int, media_dir: str | Path,
                         image_size: int = 32, truth_field: str | None = None,
                         key_field: str | None = None) -> AttachedProject:
    """Read project ``project_id`` (tasks, labeling config, annotations) into a :class:`Dataset` whose train
    pool holds every task and whose test split is empty. Raises :class:`ProjectNotFound` for a missing
    project and ValueError for a config robust-al cannot label with (no single-choice ``<Choices>`` on an
    ``<Image>`` or ``<Text>``)."""
    proj = client.get_project(project_id, attached=True)
    rows = sorted(client.export(proj, export_type="JSON", all_tasks=True), key=lambda r: int(r["id"]))
    names = proj.class_names
    media_kind = "image" if proj.image else "text"
    ids, keys, media, values, y, X = [], [], [], {}, [], []
    existing: list[LSAnnotation] = []
    media_dir = Path(media_dir)
    for row in rows:
        tid, data = int(row["id"]), row.get("data") or {}
        value = data.get(proj.value_key)
        if value is None:
            raise ValueError(f"Label Studio project {proj.id}: task {tid} has no data.{proj.value_key} "
                             f"(what <{'Image' if proj.image else 'Text'} name=\"{proj.to_name}\"> shows)")
        truth = _truth(data.get(truth_field), names) if truth_field else UNKNOWN
        for a in row.get("annotations") or []:
            if a.get("ground_truth") and not a.get("was_cancelled"):
                ann = annotation_from_payload(a, row, proj)
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
