"""Everything a campaign is assembled from, checked before anything is written: the data (or an attached
Label Studio project), the crowd, the learner, the augmenter and the query strategy; creating and resuming a
run directory."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable

from robust_al.annotators import Crowd
from robust_al.annotators.factory import build_annotators
from robust_al.augment import Augmenter
from robust_al.config import CampaignConfig, ConfigError, load_config
from robust_al.crowd.learners import campaign_learner
from robust_al.data.loaders import load_dataset
from robust_al.data.pool import Dataset
from robust_al.query import MinDistance, make_strategy
from robust_al.store import RunStore
from robust_al.store.lock import RunLock
from robust_al.store.sqlite import abandoned_start
from robust_al.versions import CAMPAIGN_MODULES
from robust_al.versions import versions as _versions
import contextlib

if TYPE_CHECKING:
    from robust_al.campaign.loop import Campaign  # the class these constructors build (it imports this module)


# config keys a resumed campaign may change: where its Label Studio server is and how it is reached and watched.
# Nothing here changes which items are asked, which answers count, or how labels, trust and models are computed.
RESUME_SAFE_KEYS = ("annotators.labelstudio.url", "annotators.labelstudio.token_env",
                    "annotators.labelstudio.token_file", "annotators.labelstudio.poll_seconds",
                    "annotators.labelstudio.status_seconds", "annotators.labelstudio.webhook")


def resume_overrides(raw: dict, overrides: list[str]) -> tuple[dict, list[str]]:
    """The stored config ``raw`` with ``--set key=value`` overrides applied, refusing (a one-line
    :class:`ConfigError` naming the key) any key outside :data:`RESUME_SAFE_KEYS`; returns the new config and
    the keys whose value changed."""
    import copy

    import yaml

    new = copy.deepcopy(raw)
    changed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set annotators.labelstudio.url=http://...")
        key, value = (x.strip() for x in item.split("=", 1))
        if key not in RESUME_SAFE_KEYS:
            raise ConfigError(f"--set {key}: cannot be changed on --resume (it would change the campaign's results); "
                              f"only {', '.join(RESUME_SAFE_KEYS)} can")
        node = new
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {key}: the stored campaign has no {part} section")
            node = node[part]
        parsed = yaml.safe_load(value)
        if node.get(parts[-1]) != parsed:
            node[parts[-1]] = parsed
            changed.append(key)
    return new, changed


def versions() -> dict[str, str | None]:
    """The versions a campaign records with its results."""
    return _versions(*CAMPAIGN_MODULES)


class CampaignBuild:
    """Construction of a :class:`~robust_al.campaign.Campaign`: use :meth:`create` or :meth:`resume`."""

    def __init__(self, cfg: CampaignConfig, run_dir: Path, dataset: Dataset | None = None,
                 echo: Callable[[str], None] | None = print):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.echo = echo or (lambda s: None)
        self.attached = None
        if cfg.annotators.kind == "labelstudio" and cfg.annotators.labelstudio.project_id is not None:
            self.attached = self._attach(cfg)  # its tasks are the pool: read before anything is written
            dataset = self.attached.dataset
        # everything that can be refused is checked before the store exists: a failed start leaves nothing
        self.dataset = dataset or load_dataset(cfg.data.name, **cfg.data.options)
        self.annotators = ([] if cfg.annotators.kind == "labelstudio"
                           else build_annotators(cfg.annotators, self.dataset, cfg.seed))
        check_startable(cfg, self.dataset, self.annotators, self.run_dir)
        if cfg.annotators.kind == "labelstudio" and self.attached is None:
            from robust_al.labelstudio.media import check_media

            ls = cfg.annotators.labelstudio  # refuse media the server cannot show before anything is made
            check_media(self.dataset.train, ls.media, ls.files_root, ls.media_url)
        self.store = RunStore(self.run_dir)
        self.lock = RunLock(self.run_dir)
        inj_ids, inj_X, inj_y, _ = self.store.injected(self.dataset.train.input_shape)
        if len(inj_ids):  # a resumed campaign whose pool was injected into
            self.dataset.train = self.dataset.train.extended(inj_ids, inj_X, inj_y)
        pool = self.pool = self.dataset.train
        self.seed = cfg.seed
        if cfg.annotators.kind == "labelstudio":
            from robust_al.annotators.labelstudio import LabelStudioCrowd, read_token

            ls = cfg.annotators.labelstudio
            self.crowd = LabelStudioCrowd(self.store, ls.url, read_token(ls.token_env, ls.token_file),
                                          pool.class_names, k=cfg.annotators.k, wait_seconds=ls.wait_seconds,
                                          poll_seconds=ls.poll_seconds, webhook=ls.webhook,
                                          title=f"{ls.title} {cfg.name}", pool=pool, media=ls.media,
                                          media_url=ls.media_url, files_root=ls.files_root,
                                          show_predictions=ls.show_predictions, attached=self.attached,
                                          echo=self.echo, status_seconds=ls.status_seconds,
                                          show_keys=ls.show_keys)
        else:
            self.crowd = Crowd(self.annotators, self.store, seed=cfg.seed, k=cfg.annotators.k)
        self.crowd.lookahead = cfg.annotators.lookahead
        self.learner = campaign_learner(cfg, pool.input_shape, pool.n_classes, pool.X)
        self.net = self.learner.trainer
        self.initial_model = self.learner.snapshot("F_init")  # what every fit without warm start starts from
        a = cfg.augment
        self.augmenter = (Augmenter(self.net.model, pool.input_shape, pool.n_classes, list(a.attacks), a.eps,
                                    a.noise_scale, a.noise_copies) if a.enabled else None)
        self.strategy = make_strategy(cfg.query.strategy, method=cfg.query.clustering,
                                      n_clusters=cfg.query.n_clusters, max_clusters=cfg.query.max_clusters,
                                      typicality=cfg.query.typicality, uncertainty=cfg.query.uncertainty)
        self.mind: MinDistance | None = None
        self._now: tuple[int, str] = (2**62, "")  # (iteration, stage) being run; outside the loop: everything

    def _attach(self, cfg: CampaignConfig):
        """``data.name: labelstudio``: the existing project ``annotators.labelstudio.project_id`` as the pool
        (:func:`robust_al.labelstudio.project_pool.dataset_from_project`). A project that does not exist is a
        one-line error naming the key and the server, raised before anything is written."""
        import httpx

        from robust_al.annotators.labelstudio import read_token
        from robust_al.labelstudio.client import LabelStudioClient, ProjectNotFound
        from robust_al.labelstudio.project_pool import dataset_from_project

        from robust_al.labelstudio.server import check_reachable

        from robust_al.labelstudio.project_pool import TRUTH_FIELD_REFUSED

        ls = cfg.annotators.labelstudio
        opts = dict(cfg.data.options)
        if "truth_field" in opts:  # a truth in the project is a truth every member can read
            raise ConfigError(TRUTH_FIELD_REFUSED)
        unknown = set(opts) - {"image_size", "trusted_labels", "key_field", "ground_truth_annotations"}
        if unknown:
            raise ConfigError(f"data.options: {sorted(unknown)} not understood for data.name = 'labelstudio' "
                              "(valid: image_size, trusted_labels, key_field, ground_truth_annotations)")
        if not isinstance(opts.get("ground_truth_annotations", False), bool):
            raise ConfigError("data.options.ground_truth_annotations: expected true or false, got "
                              f"{opts['ground_truth_annotations']!r}")
        check_reachable(ls.url, self.run_dir)  # one line naming the URL, not a transport traceback
        with LabelStudioClient(ls.url, read_token(ls.token_env, ls.token_file)) as client:
            try:
                info = client.project_info(ls.project_id)
            except ProjectNotFound:
                raise ConfigError(f"annotators.labelstudio.project_id = {ls.project_id}: no such project on the "
                                  f"Label Studio server {ls.url}") from None
            except httpx.HTTPError as e:
                raise ConfigError(f"annotators.labelstudio.url = {ls.url}: cannot read project {ls.project_id} "
                                  f"({e})") from None
            most = int(info.get("maximum_annotations") or 1)
            if most < cfg.annotators.k:
                raise ConfigError(f"annotators.k = {cfg.annotators.k}, but Label Studio project {ls.project_id} takes "
                                  f"at most {most} annotation(s) per task (maximum_annotations): raise it in the "
                                  "project's settings or lower annotators.k")
            try:
                return dataset_from_project(client, ls.project_id, self.run_dir / "labelstudio-media", **opts)
            except FileNotFoundError as e:
                raise ConfigError(f"data.options.trusted_labels: {e}") from None
            except ValueError as e:
                raise ConfigError(f"annotators.labelstudio.project_id = {ls.project_id}: {e}") from None

    @classmethod
    def create(cls, cfg: CampaignConfig, run_dir: str | Path | None = None, **kw) -> Campaign:
        """A new campaign in ``run_dir``. If anything refuses to start, nothing that blocks a retry is left."""
        run_dir = Path(run_dir) if run_dir else cfg.resolved_run_dir()
        db = run_dir / "campaign.sqlite"
        if db.exists() and not abandoned_start(db):
            raise FileExistsError(f"{run_dir} already holds a campaign; continue it with --resume {run_dir}")
        made_dir = not run_dir.exists()
        try:
            self = cls(cfg, run_dir, **kw)
            with self.lock:
                self.store.set_meta("config", cfg.model_dump(mode="json"))  # first: it makes the run resumable
                self.store.set_meta("seed", cfg.seed)
                self.store.set_meta("versions", versions())
                self.store.set_meta("created_at", time.time())
                # what exports and predictions need without loading the data: keys, class names, input shape
                self.store.set_item_keys(self.pool.ids, self.pool.keys)
                self.store.set_meta("class_names", list(self.pool.class_names))
                self.store.set_meta("input_shape", list(self.pool.input_shape))
                (run_dir / "config.yaml").write_text(_yaml(cfg.model_dump(mode="json")))
        except BaseException:
            _remove_failed_start(run_dir, made_dir)
            raise
        return self

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] | None = None, **kw) -> Campaign:
        """The campaign stored in ``run_dir``. ``overrides`` (``--set key=value``) may change only
        :data:`RESUME_SAFE_KEYS` (e.g. the Label Studio URL after the server moved); the changed config is
        stored, so later commands (``status``, ``sync``, the next resume) use it too."""
        run_dir = Path(run_dir)
        store = RunStore(run_dir, create=False)
        raw = store.get_meta("config")
        store.close()
        if raw is None:
            raise ConfigError(f"{run_dir}/campaign.sqlite has no stored config: the campaign never started; "
                              f"start it again with robust-al run CONFIG --run-dir {run_dir}")
        changed: list[str] = []
        if overrides:
            raw, changed = resume_overrides(raw, overrides)
        cfg = load_config(data=raw)
        self = cls(cfg, run_dir, **kw)
        if changed:
            with self.lock:  # not while another process runs the campaign (RunDirBusy)
                self.store.set_meta("config", cfg.model_dump(mode="json"))
                (run_dir / "config.yaml").write_text(_yaml(cfg.model_dump(mode="json")))
            self.echo(f"changed on resume: {', '.join(changed)}")
        return self


def check_startable(cfg: CampaignConfig, dataset: Dataset, annotators: list, run_dir: Path | None = None) -> None:
    """Refuse, with one line naming the key, a campaign that could not run as configured (a Label Studio
    campaign whose server does not answer: one line naming its URL)."""
    k, budget = cfg.annotators.k, cfg.stop.budget
    if cfg.poison.enabled and cfg.annotators.kind == "labelstudio":
        raise ConfigError("poison.enabled: poisons are injected into a simulated or replayed campaign's pool, "
                          "not into a live Label Studio project")
    if budget < k:
        raise ConfigError(f"stop.budget = {budget} buys no item: each item takes annotators.k = {k} labels")
    if cfg.annotators.kind != "labelstudio" and len(annotators) < k:
        raise ConfigError(f"annotators.k = {k}, but the crowd has {len(annotators)} labelers; every item needs k "
                          "different ones: lower annotators.k or add labelers")
    trusted = int((dataset.train.y >= 0).sum())
    if trusted < cfg.holdout.size:
        raise ConfigError(f"holdout.size = {cfg.holdout.size}, but only {trusted} pool items have a trusted label "
                          "for the secured holdout: give trusted labels (class folders, a label column or "
                          "data.options.trusted_labels) or lower holdout.size")
    if cfg.annotators.kind == "labelstudio":
        from robust_al.labelstudio import require_labelstudio
        from robust_al.labelstudio.server import check_reachable

        require_labelstudio()
        check_reachable(cfg.annotators.labelstudio.url, run_dir)


def _remove_failed_start(run_dir: Path, made_dir: bool) -> None:
    """Undo a start that failed before the campaign held anything paid for."""
    db = run_dir / "campaign.sqlite"
    if db.exists() and not abandoned_start(db):
        return
    for name in ("campaign.sqlite", "campaign.sqlite-wal", "campaign.sqlite-shm", "config.yaml", "campaign.lock"):
        (run_dir / name).unlink(missing_ok=True)
    if made_dir:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
