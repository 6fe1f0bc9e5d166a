"""A thin client for the parts of Label Studio's REST API a labeling campaign needs.

``label-studio-sdk`` (``LabelStudio``) makes the calls it covers: creating projects, importing tasks with
pre-annotations, listing users, creating webhooks. Plain httpx (a dependency of the SDK) does the rest: the
synchronous export ``GET /api/projects/{id}/export``, whose task filter is spelled ``ids[]`` (the SDK's
``download_sync`` sends ``ids``, which the server ignores), the data-manager task query used to find
tasks changed since a moment without walking every task, local-files storages, Data Manager views (tabs),
predictions, and fetching task media with the token.

Every project made here uses one labeling interface (:func:`label_config`): a header with the item's key, an
object tag named ``item`` (``<Image value="$image">`` for image pools, else ``<Text value="$text">``: the item's
text, or its key for a bare feature pool) and single-choice radio buttons (``<Choices name="label"
choice="single-radio">``) with one choice per class, in class-index order. Pool item ids travel in
``task.data.item_id``, the user's item key in ``task.data.key``.

A project made elsewhere (attached with ``annotators.labelstudio.project_id``) keeps its own interface:
:func:`parse_label_config` finds its ``<Choices>`` control (any name), the object it labels and that object's
``$variable``; its task ids are the pool's item ids (``Project.item_field = None``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from collections.abc import Iterable, Sequence
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

import httpx
from label_studio_sdk import LabelStudio

FROM_NAME = "label"  # the <Choices> control tag
TO_NAME = "item"  # the object tag it labels
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
EXPORT_IDS_PER_REQUEST = 500  # ``ids[]=...`` in the query string; the dev server caps a request line at 64 kB
OBJECT_TAGS = {"Image": "image", "Text": "text", "HyperText": "text", "Paragraphs": "text"}


class ProjectNotFound(LookupError):
    """No project with that id on the server (or the token may not see it)."""


def label_config(class_names: Sequence[str], image: bool = False, header: bool = True,
                 pixelated: bool = False) -> str:
    """The labeling interface of a robust-al project: the item's key as a header, the item (an image, or a
    text), and one radio button per class (in class-index order). ``header=False`` for a bare feature pool,
    whose text already is the key. ``pixelated``: show an image's pixels as sharp squares when it is drawn
    larger than it is (``smoothing="false"``): a 32x32 image blown up to 640 px is otherwise a blur."""
    names = [str(c) for c in class_names]
    if not names:
        raise ValueError("at least one class is needed")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct: {names}")
    smooth = ' smoothing="false"' if pixelated else ""
    obj = (f'<Image name="{TO_NAME}" value="$image" maxWidth="640px" zoom="true"{smooth}/>' if image
           else f'<Text name="{TO_NAME}" value="$text"/>')
    head = '  <Header value="$key"/>\n' if header else ""
    choices = "\n    ".join(f"<Choice value={quoteattr(n)}/>" for n in names)
    # choice="single-radio": radio buttons; "single" renders checkboxes that merely allow one tick
    return (f'<View>\n{head}  {obj}\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single-radio" showInline="true" '
            f'required="true">\n    {choices}\n  </Choices>\n</View>')


@dataclass(frozen=True)
class LabelSchema:
    """What robust-al needs of a labeling config: the choices control, the object it labels, the classes."""
    from_name: str
    to_name: str
    object_tag: str  # Image, Text, ...
    value_key: str  # the task data field the object shows ($image -> image)
    class_names: tuple[str, ...]

    @property
    def media(self) -> str | None:
        return OBJECT_TAGS.get(self.object_tag)


def parse_label_config(config: str, from_name: str | None = None) -> LabelSchema:
    """The ``<Choices>`` control (named ``from_name``, or the first one labeling an Image or Text object),
    its classes, and the object it labels with that object's ``$variable``."""
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as e:
        raise ValueError(f"the labeling config is not valid XML: {e}") from None
    objects = {el.get("name"): el for el in root.iter() if el.get("name") and el.tag in OBJECT_TAGS}
    found = []
    for ch in root.iter("Choices"):
        if from_name is not None and ch.get("name") != from_name:
            continue
        to = (ch.get("toName") or "").split(",")[0].strip()
        obj = objects.get(to)
        value = (obj.get("value") or "") if obj is not None else ""
        if obj is None or not value.startswith("$"):
            continue
        names = tuple(str(c.get("value", c.get("alias", ""))) for c in ch.iter("Choice"))
        found.append(LabelSchema(str(ch.get("name")), to, obj.tag, value[1:], names))
    if not found:
        which = f'<Choices name="{from_name}">' if from_name else "<Choices>"
        raise ValueError(f"no {which} labeling an <Image> or <Text> object (with value=\"$field\") in the "
                         "labeling config")
    if len(set(found[0].class_names)) != len(found[0].class_names) or not found[0].class_names:
        raise ValueError(f'<Choices name="{found[0].from_name}"> must hold distinct, non-empty choices')
    return found[0]


def class_names_from_config(config: str) -> list[str]:
    """The choices of the config's choices control, in order (inverse of :func:`label_config`)."""
    return list(parse_label_config(config).class_names)


def choice_result(label_name: str, from_name: str = FROM_NAME, to_name: str = TO_NAME) -> list[dict]:
    """The ``result`` of an annotation (or prediction) choosing ``label_name``."""
    return [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label_name]}}]


@dataclass(frozen=True)
class Project:
    id: int
    title: str
    class_names: tuple[str, ...]
    maximum_annotations: int
    image: bool = False
    from_name: str = FROM_NAME
    to_name: str = TO_NAME
    value_key: str = "text"  # the task data field the labeled object shows
    item_field: str | None = "item_id"  # the task data field holding the item id; None: the task id is the item id

    def label_index(self, name: str | None) -> int | None:
        try:
            return self.class_names.index(name)
        except ValueError:
            return None


@dataclass(frozen=True)
class LSAnnotation:
    """One Label Studio annotation, as the campaign needs it."""
    item_id: int
    user_id: int
    label: int | None  # class index; None when cancelled (skipped) or not one of the project's classes
    annotation_id: int
    updated_at: str  # ISO 8601, UTC
    was_cancelled: bool
    task_id: int | None = None
    updated_by: int | None = None  # who last wrote it (not in JSON_MIN)

    @property
    def foreign_write(self) -> bool:
        """Last written by someone else than the annotator it is attributed to.

        Open-source Label Studio lets any member post an annotation with another user's ``completed_by``
        and edit anyone's annotation; ``updated_by`` is set by the server to the real writer (measured on 1.23:
        the user of the token that made the POST or the last PATCH; an ``updated_by`` in the request body is
        ignored). The full ``JSON`` export and ``GET /api/annotations/{id}/`` carry it; ``JSON_MIN`` does not
        (its ``annotator`` is ``completed_by``), and 1.23 Community has no annotation-history endpoint.
        """
        return self.updated_by is not None and self.updated_by != self.user_id

    @property
    def writer(self) -> int:
        """The account that wrote this version (``updated_by``; ``completed_by`` when the source lacks it)."""
        return self.user_id if self.updated_by is None else self.updated_by

    @property
    def external_id(self) -> str:
        """What ``RunStore.add_annotation(external_id=...)`` keeps: the Label Studio annotation id."""
        return str(self.annotation_id)

    @property
    def updated(self) -> datetime:
        return parse_time(self.updated_at)


def parse_time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _chosen(result: Any, from_name: str = FROM_NAME) -> str | None:
    for r in result or ():
        if r.get("from_name", from_name) == from_name:
            choices = (r.get("value") or {}).get("choices") or []
            if choices:
                return choices[0]
    return None


def _user_id(value: Any) -> int:
    return int(value["id"] if isinstance(value, dict) else value)


def annotation_from_payload(annotation: dict, task: dict | None, project: Project | Sequence[str]
                            ) -> LSAnnotation:
    """Convert an annotation object (REST API, full JSON export, webhook payload) and its task."""
    names = tuple(project.class_names if isinstance(project, Project) else project)
    proj = project if isinstance(project, Project) else None
    from_name = proj.from_name if proj else FROM_NAME
    item_field = proj.item_field if proj else "item_id"
    data = (task or {}).get("data") or {}
    task_id = annotation.get("task", (task or {}).get("id"))
    if item_field is None:  # an attached project: its task ids are the item ids
        item_id = None if task_id is None else _user_id(task_id)
    else:
        item_id = data.get(item_field, annotation.get(item_field))
        if task_id is not None:
            # any member can edit task data: the campaign maps the task id to its item (LabelStudioCrowd._own),
            # so an edited or missing field must not break the conversion of the task's other annotations
            try:
                item_id = int(item_id)
            except (TypeError, ValueError):
                item_id = -1
    if item_id is None:
        raise ValueError(f"annotation {annotation.get('id')}: its task carries no data.{item_field}")
    cancelled = bool(annotation.get("was_cancelled", False))
    name = None if cancelled else _chosen(annotation.get("result"), from_name)
    return LSAnnotation(
        item_id=int(item_id), user_id=_user_id(annotation["completed_by"]),
        label=names.index(name) if name in names else None, annotation_id=int(annotation["id"]),
        updated_at=str(annotation.get("updated_at") or annotation.get("created_at")),
        was_cancelled=cancelled, task_id=None if task_id is None else int(_user_id(task_id)),
        updated_by=None if annotation.get("updated_by") is None else _user_id(annotation["updated_by"]))


def answered(task: dict) -> bool:
    """Does a task (as ``GET /api/tasks/`` gives it) hold an annotation, a cancelled one included?"""
    return bool(int(task.get("total_annotations") or 0) or int(task.get("cancelled_annotations") or 0))


def annotations_from_export(rows: Iterable[dict], project: Project | Sequence[str]) -> list[LSAnnotation]:
    """Convert export rows: ``JSON_MIN`` (one row per annotation) or ``JSON`` (one row per task)."""
    names = tuple(project.class_names if isinstance(project, Project) else project)
    proj = project if isinstance(project, Project) else None
    from_name = proj.from_name if proj else FROM_NAME
    item_field = proj.item_field if proj else "item_id"
    out: list[LSAnnotation] = []
    for row in rows:
        if "annotations" in row:  # full JSON: a task with its annotations
            out.extend(annotation_from_payload(a, row, proj or names) for a in row["annotations"])
        elif "annotation_id" in row:  # JSON_MIN: task data, task id and one annotation flattened together
            label = row.get(from_name)
            # JSON_MIN omits was_cancelled: a skipped task's row has no choice at all
            out.append(LSAnnotation(
                item_id=int(row["id"] if item_field is None else row[item_field]), user_id=int(row["annotator"]),
                label=names.index(label) if label in names else None,
                annotation_id=int(row["annotation_id"]),
                updated_at=str(row.get("updated_at") or row.get("created_at")),
                was_cancelled=label is None, task_id=int(row["id"])))
    return out


class LabelStudioClient:
    """REST access to one server with one user's token (the admin's for campaign management)."""

    def __init__(self, url: str, token: str, timeout: float = 120.0):
        self.url, self.token = url.rstrip("/"), token
        self.sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout)
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {token}"},
                                 timeout=timeout)

    @classmethod
    def for_server(cls, server, **kw) -> LabelStudioClient:
        """A client for a running :class:`~robust_al.labelstudio.server.LabelStudioServer`, as its admin."""
        return cls(server.url, server.token, **kw)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, path: str, **params) -> Any:
        """The JSON of a GET on the server's API (``path`` from its root, e.g. ``/api/projects/``)."""
        r = self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    # -- projects -----------------------------------------------------------------------------------------
    def create_project(self, title: str, class_names: Sequence[str], maximum_annotations: int = 1,
                       image: bool = False, description: str = "", header: bool = True,
                       show_predictions: bool = False, pixelated: bool = False) -> Project:
        """A single-choice classification project; ``maximum_annotations`` answers per task (overlap).

        ``show_predictions=False`` also turns off the display of other annotators' predictions
        (``show_collab_predictions``): a visible guess biases labelers who should answer independently.
        """
        if len(title) < 3:
            raise ValueError("Label Studio wants project titles of at least 3 characters")
        p = self.sdk.projects.create(title=title, description=description,
                                     label_config=label_config(class_names, image, header, pixelated),
                                     maximum_annotations=int(maximum_annotations),
                                     show_skip_button=True, enable_empty_annotation=False,
                                     show_collab_predictions=bool(show_predictions))
        return Project(int(p.id), title, tuple(str(c) for c in class_names), int(maximum_annotations), image,
                       value_key="image" if image else "text")

    def project_info(self, project_id: int) -> dict:
        """The project's settings as the server returns them; :class:`ProjectNotFound` when it has none."""
        r = self.http.get(f"/api/projects/{int(project_id)}/")
        if r.status_code == 404:
            raise ProjectNotFound(f"no project {int(project_id)} on {self.url}")
        r.raise_for_status()
        return r.json()

    def get_project(self, project_id: int, attached: bool = False) -> Project:
        """A project read back: one made by :meth:`create_project` (e.g. when a campaign resumes), or, with
        ``attached``, one made elsewhere whose task ids are the item ids."""
        p = self.project_info(project_id)
        schema = parse_label_config(p["label_config"])
        return Project(int(p["id"]), p["title"], schema.class_names, int(p.get("maximum_annotations") or 1),
                       schema.media == "image", schema.from_name, schema.to_name, schema.value_key,
                       None if attached else "item_id")

    def import_tasks(self, project: Project | int, items: Sequence[dict], model_version: str = "robust-al",
                     batch_size: int = 5000) -> list[int]:
        """Create one task per item; returns the task ids in the order of ``items``.

        Each item is ``{"key": str, "image": url | "text": str, "prediction": {"label": int | str, "score":
        float}, "item_id": int, "import": str, "row": int}`` (all optional but the key). The task shows the
        image, else the text, else the key; a prediction becomes a pre-annotation tagged ``model_version``.
        ``item_id`` goes into the task's data only when given: every member reads task data, and a campaign
        gives none (ids follow the pool's order, e.g. class folders). ``import`` (a nonce) and ``row`` (the
        item's place in that import) let a retry adopt what an import made (:meth:`imported_rows`).
        """
        if isinstance(project, int):
            project = self.get_project(project)
        ids: list[int] = []
        for start in range(0, len(items), batch_size):
            tasks = []
            for it in items[start:start + batch_size]:
                key = str(it.get("key", it.get("item_id")))
                data: dict[str, Any] = {"key": key}
                if it.get("item_id") is not None:
                    data["item_id"] = int(it["item_id"])
                if it.get("import"):  # the import's nonce and the item's row: what a retry may adopt
                    data["import"], data["row"] = str(it["import"]), int(it.get("row", 0))
                if it.get("image"):
                    data["image"] = it["image"]
                elif project.image:
                    raise ValueError(f"item {key}: the project shows images but the item has none")
                else:
                    data["text"] = str(it["text"]) if it.get("text") is not None else key
                task: dict[str, Any] = {"data": data}
                pred = it.get("prediction")
                if pred is not None:
                    task["predictions"] = [self._prediction(project, key, pred, model_version)]
                tasks.append(task)
            r = self.sdk.projects.import_tasks(project.id, request=tasks, return_task_ids=True)
            got = [int(t) for t in (r.task_ids or [])]
            if len(got) != len(tasks):
                raise RuntimeError(f"imported {len(tasks)} tasks, Label Studio returned {len(got)} ids")
            ids.extend(got)
        return ids

    @staticmethod
    def _prediction(project: Project, item_id: int | str, pred: dict, model_version: str) -> dict:
        label = pred.get("label")
        result: list[dict] = []
        if label is not None:
            name = label if isinstance(label, str) else project.class_names[int(label)]
            if name not in project.class_names:
                raise ValueError(f"item {item_id}: predicted label {label!r} is not a class")
            result = choice_result(name, project.from_name, project.to_name)
        return {"model_version": pred.get("model_version", model_version), "score": float(pred.get("score", 0.0)),
                "result": result}

    # -- predictions, views, storages, media ------------------------------------------------------------------
    def add_prediction(self, project: Project, task_id: int, model_version: str, score: float,
                       label: int | str | None = None) -> int:
        """One prediction on an existing task (``label=None``: no visible guess, only a score); its id."""
        body = self._prediction(project, task_id, {"label": label, "score": score}, model_version)
        r = self.http.post("/api/predictions/", json={"task": int(task_id), **body})
        r.raise_for_status()
        return int(r.json()["id"])

    def predictions(self, task_id: int) -> list[dict]:
        """The predictions of one task (``id``, ``model_version``, ``score``, ``result``)."""
        return self.get("/api/predictions/", task=int(task_id))

    def delete_prediction(self, prediction_id: int) -> None:
        r = self.http.delete(f"/api/predictions/{int(prediction_id)}/")
        if r.status_code != 404:  # already gone is fine
            r.raise_for_status()

    def views(self, project: Project | int) -> list[dict]:
        """The project's Data Manager views (the tabs every member sees)."""
        pid = project.id if isinstance(project, Project) else int(project)
        return self.get("/api/dm/views/", project=pid)

    def create_view(self, project: Project | int, title: str, filters: dict | None = None,
                    ordering: Sequence[str] = ()) -> int:
        """A Data Manager tab with ``filters`` and ``ordering``; returns its id."""
        pid = project.id if isinstance(project, Project) else int(project)
        data: dict[str, Any] = {"title": title, "ordering": list(ordering)}
        if filters:
            data["filters"] = filters
        r = self.http.post("/api/dm/views/", json={"project": pid, "data": data})
        r.raise_for_status()
        return int(r.json()["id"])

    def local_storages(self, project: Project | int) -> list[dict]:
        pid = project.id if isinstance(project, Project) else int(project)
        return self.get("/api/storages/localfiles", project=pid)

    def create_local_storage(self, project: Project | int, path: str, title: str = "robust-al media") -> int:
        """A local-files import storage for ``path`` (never synced: it only grants ``/data/local-files/``
        access to files under it to the project's members). A refusal raises ValueError with the server's
        reason (serving disabled, path not strictly under the server's document root, ...)."""
        pid = project.id if isinstance(project, Project) else int(project)
        r = self.http.post("/api/storages/localfiles",
                           json={"project": pid, "path": str(path), "title": title, "use_blob_urls": False})
        if r.status_code == 400:
            errs = (r.json() or {}).get("validation_errors") or {}
            msg = "; ".join(str(m) for v in errs.values() for m in (v if isinstance(v, list) else [v]))
            raise ValueError(" ".join((msg or r.text).split()))
        r.raise_for_status()
        return int(r.json()["id"])

    def fetch(self, url: str) -> bytes:
        """The bytes behind a task's media URL on this server (``/data/upload/...``, ``/data/local-files/?d=``,
        an absolute URL on this server), fetched with the token."""
        base = self.url
        if url.startswith(("http://", "https://")) and not url.startswith(base + "/"):
            raise ValueError(f"{url} is not on the Label Studio server {base}")
        r = self.http.get(url[len(base):] if url.startswith(base) else url)
        r.raise_for_status()
        return r.content

    # -- annotations --------------------------------------------------------------------------------------
    def export(self, project: Project | int, task_ids: Sequence[int] | None = None,
               export_type: str = "JSON_MIN", all_tasks: bool = False) -> list[dict]:
        """Raw rows of ``GET /api/projects/{id}/export`` (only annotated tasks unless ``all_tasks``).

        ``task_ids`` restricts the export to those tasks (sent as ``ids[]`` in batches), which is what keeps
        a campaign's incremental pull cheap: only the tasks of the current batch are serialized.
        """
        pid = project.id if isinstance(project, Project) else int(project)
        base: list[tuple[str, Any]] = [("exportType", export_type)]
        if all_tasks:
            base.append(("download_all_tasks", "true"))
        if task_ids is None:
            batches: list[list[tuple[str, Any]]] = [[]]
        else:
            tids = [int(t) for t in task_ids]
            if not tids:
                return []
            batches = [[("ids[]", t) for t in tids[i:i + EXPORT_IDS_PER_REQUEST]]
                       for i in range(0, len(tids), EXPORT_IDS_PER_REQUEST)]
        rows: list[dict] = []
        for extra in batches:
            r = self.http.get(f"/api/projects/{pid}/export", params=base + extra)
            r.raise_for_status()
            rows.extend(r.json())
        return rows

    def export_annotations(self, project: Project | int, task_ids: Sequence[int] | None = None,
                           since: str | datetime | None = None) -> list[LSAnnotation]:
        """Every annotation of the project (or of ``task_ids``, or changed after ``since``), converted.

        Uses the full ``JSON`` export, which, unlike ``JSON_MIN``, says which annotations were cancelled
        (skipped). With ``since``, only tasks the data manager reports as updated after it are exported.
        """
        if isinstance(project, int):
            project = self.get_project(project)
        if since is not None:
            changed = self.changed_task_ids(project, since)
            task_ids = changed if task_ids is None else sorted(set(changed) & {int(t) for t in task_ids})
            if not task_ids:
                return []
        anns = annotations_from_export(self.export(project, task_ids, export_type="JSON"), project)
        if since is not None:
            t0 = parse_time(since)
            anns = [a for a in anns if a.updated > t0]
        return anns

    def changed_task_ids(self, project: Project | int, since: str | datetime, page_size: int = 1000
                         ) -> list[int]:
        """Ids of tasks updated after ``since`` (creating/updating an annotation touches its task).

        One data-manager query filtered in the database (``filter:tasks:updated_at``), paged, ids only.
        """
        t = parse_time(since).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return [int(x["id"]) for x in self._query_tasks(project, {
            "filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime", "value": t}, page_size)]

    def _query_tasks(self, project: Project | int, condition: dict, page_size: int = 1000):
        """Tasks (``task_only`` fields) matching one data-manager filter ``condition``, by id, page by page."""
        pid = project.id if isinstance(project, Project) else int(project)
        query = {"filters": {"conjunction": "and", "items": [condition]}, "ordering": ["tasks:id"]}
        seen, page = 0, 1
        while True:
            r = self.http.get("/api/tasks/", params={"project": pid, "fields": "task_only", "page": page,
                                                    "page_size": page_size, "query": json.dumps(query)})
            if r.status_code == 404:  # past the last page
                return
            r.raise_for_status()
            body = r.json()
            tasks = body.get("tasks", body) if isinstance(body, dict) else body
            yield from tasks
            seen += len(tasks)
            total = body.get("total") if isinstance(body, dict) else None
            if not tasks or len(tasks) < page_size or (total is not None and seen >= total):
                return
            page += 1

    def imported_rows(self, project: Project | int, nonce: str, after_task: int = 0, page_size: int = 1000
                      ) -> dict[int, int]:
        """``{row: task_id}`` of the tasks the import ``nonce`` made (``data.import``; ``data.row``: the item's
        place in it), among the tasks with an id above ``after_task`` (a data-manager query filtered on the task
        id in the database, paged). A campaign calls it before importing, to adopt tasks an import created
        whose response never arrived (a server restart mid-request): importing them again would put every item
        of the batch into the project twice, and people would answer both copies. Only tasks that hold no
        annotation: any member can import tasks, annotations included, into the project; those are never
        adopted."""
        out: dict[int, int] = {}
        for t in self._query_tasks(project, {"filter": "filter:tasks:id", "operator": "greater", "type": "Number",
                                            "value": int(after_task)}, page_size):
            data = t.get("data") or {}
            if data.get("import") != nonce or answered(t):
                continue
            try:
                row = int(data["row"])
            except (KeyError, TypeError, ValueError):
                continue  # not a task robust-al imported
            if int(t["id"]) > after_task:
                out.setdefault(row, int(t["id"]))  # the first copy, should there be two
        return out

    def close_unanswered_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Stop the server serving the tasks that hold no annotation (cancelled ones count): each one's ``overlap``
        (the answers it takes) is set to 0, so ``/next`` and "Label All Tasks" pass it by; an answer posted to it
        still lands on it. Returns the ids closed. Nothing is deleted: measured on Label Studio 1.23 (SQLite), a
        deleted task's id goes to the next task imported, in any project, so a page still open on the deleted task
        would post its answer to another item."""
        closed = []
        for tid in task_ids:
            r = self.http.get(f"/api/tasks/{int(tid)}/", params={"fields": "task_only"})
            if r.status_code == 404:
                continue
            r.raise_for_status()
            if answered(r.json()):
                continue
            self.http.patch(f"/api/tasks/{int(tid)}/", json={"overlap": 0}).raise_for_status()
            closed.append(int(tid))
        return closed

    def reopen_tasks(self, task_ids: Sequence[int], overlap: int) -> None:
        """Serve closed tasks again (:meth:`close_unanswered_tasks`), each taking ``overlap`` answers."""
        for tid in task_ids:
            self.http.patch(f"/api/tasks/{int(tid)}/", json={"overlap": int(overlap)}).raise_for_status()

    def annotation(self, annotation_id: int) -> dict | None:
        """One annotation as the server holds it (``GET /api/annotations/{id}/``: ``project``, ``task``,
        ``completed_by``, ``updated_by``, ``result``, ...); None when the server holds no such annotation."""
        r = self.http.get(f"/api/annotations/{int(annotation_id)}/")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def task_annotations(self, task_id: int, project: Project) -> list[LSAnnotation]:
        """Annotations of one task (``GET /api/tasks/{id}/annotations/``)."""
        task = self.get(f"/api/tasks/{int(task_id)}/")
        return [annotation_from_payload(a, task, project) for a in task.get("annotations", [])]

    # -- people and webhooks --------------------------------------------------------------------------------
    def list_users(self) -> list[dict]:
        """Users of the organization: ``{"id", "email", "username", "first_name", "last_name"}``."""
        return [{"id": int(u.id), "email": u.email, "username": u.username,
                 "first_name": u.first_name, "last_name": u.last_name} for u in self.sdk.users.list()]

    def whoami(self) -> dict:
        return self.get("/api/current-user/whoami")

    def create_webhook(self, project: Project | int | None, url: str,
                       actions: Sequence[str] = ANNOTATION_ACTIONS, headers: dict | None = None) -> int:
        """A webhook POSTing full payloads of ``actions`` to ``url`` (for one project, or all if None)."""
        pid = None if project is None else (project.id if isinstance(project, Project) else int(project))
        kw: dict[str, Any] = {"url": url, "send_payload": True, "send_for_all_actions": False,
                              "actions": list(actions), "is_active": True}
        if pid is not None:
            kw["project"] = pid
        if headers:
            kw["headers"] = headers
        return int(self.sdk.webhooks.create(**kw).id)

    def webhooks(self, project: Project | int | None = None) -> list[dict]:
        """The organization's webhooks (of one project, when given)."""
        params = {} if project is None else {"project": project.id if isinstance(project, Project) else int(project)}
        return self.get("/api/webhooks/", **params)

    def delete_webhook(self, webhook_id: int) -> None:
        """Remove a webhook (one already gone is fine)."""
        r = self.http.delete(f"/api/webhooks/{int(webhook_id)}/")
        if r.status_code != 404:
            r.raise_for_status()
