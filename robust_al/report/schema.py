"""The two files of an evaluation, defined once: a run folder's ``result.json`` (one repetition of one method)
and a question's ``summary.json``. Written by :mod:`robust_al.evaluate.experiment` and
``pipelines/robust_al_eval.py`` through :func:`write_result` / :func:`write_summary`, which refuse a record the
reader would refuse; read by :mod:`robust_al.report.html` through :func:`read_result` / :func:`read_summary`.
Light to import (no torch): ``robust-al report`` needs only this and numpy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robust_al.files import atomic_write

SUMMARY_HINT = "the summary.json written by pipelines/robust_al_eval.py"
RESULT_HINT = "a run's result.json written by pipelines/robust_al_eval.py"

NUMBER, OPTIONAL_NUMBER = "number", "number or null"
# key -> JSON type; the writer requires every key, the reader checks the ones present (older files lack some)
SUMMARY_FIELDS: dict[str, Any] = {
    "question": str, "scenario": str, "dataset": str, "config": str, "overrides": list, "target": NUMBER,
    "seeds": list, "methods": list, "method_overrides": dict, "versions": dict, "wall_seconds": NUMBER,
    "failures": list, "workers": NUMBER, "ray_address": (str, type(None)), "table": str, "extra_tables": dict,
    "commit": (str, type(None)),  # of the code that ran (None outside a git checkout)
}
RESULT_FIELDS: dict[str, Any] = {
    "method": str, "rep": NUMBER, "seed": NUMBER, "curve": list, "labels_to_target": OPTIONAL_NUMBER,
    "final_acc": OPTIONAL_NUMBER, "trust": dict, "kinds": dict, "re_examinations": NUMBER, "seconds": NUMBER,
    "seconds_per_iteration": list, "peak_rss_mib": NUMBER, "wall_seconds": NUMBER,
}
RESULT_OPTIONAL: dict[str, Any] = {"poison": dict, "detection": dict}  # Q3 runs only


@dataclass
class Run:
    """One repetition of one method (a run folder's result.json), as the report uses it."""
    path: Path
    method: str
    rep: int
    curve: list[tuple[float, float]]
    labels_to_target: float | None
    final_acc: float | None
    trust: dict[str, list[tuple[int, float, float]]]
    kinds: dict[str, str]
    poison: dict[str, Any] | None
    detection: dict[str, dict[str, Any]] | None


def _type_name(typ: Any) -> str:
    if isinstance(typ, str):
        return typ
    if isinstance(typ, tuple):
        return " or ".join(_type_name(t) for t in typ)
    return {dict: "JSON object", list: "JSON list", str: "string", type(None): "null"}[typ]


def _fits(value: Any, typ: Any) -> bool:
    if typ in (NUMBER, OPTIONAL_NUMBER):
        if value is None:
            return typ == OPTIONAL_NUMBER
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(typ, tuple):
        return any(_fits(value, t) for t in typ)
    return isinstance(value, typ)


def check(record: dict[str, Any], fields: dict[str, Any], where: str, hint: str, required: bool) -> None:
    """Raise a one-line ValueError naming ``where`` and the key whose value is not of its type (or missing,
    when ``required``)."""
    for key, typ in fields.items():
        if key not in record:
            if required:
                raise ValueError(f"{where}: missing {key!r} ({hint})")
            continue
        if record[key] is None and not required:  # the reader passes an absent value as absent
            continue
        if not _fits(record[key], typ):
            raise ValueError(f"{where}: {key!r} must be a {_type_name(typ)}, got {record[key]!r:.60}")


def number(value: Any, path: Path, key: str, optional: bool = True) -> float | None:
    """``value`` as a float; a one-line ValueError naming ``path`` and ``key`` when it is not a number."""
    if value is None and optional:
        return None
    if not _fits(value, NUMBER):
        raise ValueError(f"{path}: {key!r} must be a number{' or null' if optional else ''}, got {value!r}")
    return float(value)


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected {hint}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object ({hint}), got {type(data).__name__}")
    return data


def _write_json(path: Path, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=1)
    atomic_write(Path(path), lambda f: f.write(text))


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write a question's summary.json (every key of :data:`SUMMARY_FIELDS`, of its type; whole or not at all)."""
    check(summary, SUMMARY_FIELDS, str(path), SUMMARY_HINT, required=True)
    _write_json(path, summary)


def read_summary(path: Path) -> dict[str, Any]:
    """A summary.json, its keys checked against :data:`SUMMARY_FIELDS`."""
    s = _read_json(path, SUMMARY_HINT)
    check(s, SUMMARY_FIELDS, str(path), SUMMARY_HINT, required=False)
    return s


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """Write a run folder's result.json (every key of :data:`RESULT_FIELDS`; whole or not at all)."""
    path = Path(run_dir) / "result.json"
    check(result, RESULT_FIELDS, str(path), RESULT_HINT, required=True)
    check(result, RESULT_OPTIONAL, str(path), RESULT_HINT, required=False)
    _write_json(path, result)


def read_result(path: Path) -> Run:
    """A result.json as a :class:`Run` (curve points without a test score skipped)."""
    r = _read_json(path, RESULT_HINT)
    if not isinstance(r.get("method"), str):
        raise ValueError(f"{path}: expected a string 'method' ({RESULT_HINT})")
    check(r, {**RESULT_FIELDS, **RESULT_OPTIONAL}, str(path), RESULT_HINT, required=False)
    curve = []
    for point in r.get("curve") or []:
        if not (isinstance(point, list) and len(point) == 2):
            raise ValueError(f"{path}: 'curve' must be a list of [labels used, test accuracy], got {point!r}")
        if point[0] is None or point[1] is None:  # an iteration without a test score is skipped
            continue
        if not all(_fits(v, NUMBER) for v in point):
            raise ValueError(f"{path}: 'curve' must hold numbers, got {point!r}")
        curve.append((float(point[0]), float(point[1])))
    trust: dict[str, list[tuple[int, float, float]]] = {}
    for worker, events in (r.get("trust") or {}).items():
        if not isinstance(events, list) or any(not isinstance(e, list) or len(e) != 3 for e in events):
            raise ValueError(f"{path}: trust of {worker!r} must be a list of [iteration, labels used, trust]")
        try:
            trust[str(worker)] = [(int(e[0]), float(e[1]), float(e[2])) for e in events if e[2] is not None]
        except (TypeError, ValueError):
            raise ValueError(f"{path}: trust of {worker!r} must hold [iteration, labels used, trust] numbers") \
                from None
    detection = r.get("detection")
    if detection and any(not isinstance(d, dict) for d in detection.values()):
        raise ValueError(f"{path}: 'detection' must map detector -> {{precision, recall, flagged}}")
    rep = r.get("rep", r.get("seed", 0))
    return Run(path=path, method=r["method"], rep=int(rep) if isinstance(rep, (int, float)) else 0, curve=curve,
               labels_to_target=number(r.get("labels_to_target"), path, "labels_to_target"),
               final_acc=number(r.get("final_acc"), path, "final_acc"), trust=trust,
               kinds={str(k): str(v) for k, v in (r.get("kinds") or {}).items()},
               poison=r.get("poison"), detection=detection)
