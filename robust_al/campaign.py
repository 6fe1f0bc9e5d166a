"""The campaign loop of the robust-active-learning paper (section III, Fig. 2).

Each iteration: embed and cluster the unlabeled pool in the current model's feature space, pick per-cluster
queries farthest from what is labeled, send them to the crowd, infer labels with trust-weighted Dawid-Skene,
train the next model on them and on adversarial examples made at no labeling cost, check it against the
secured holdout S; if S accuracy drops, roll back, re-examine the batch with h independent labelers and cut
the trust of contradicted labelers; move trust with agreement; craft adversarial examples of the new items
(their minimal perturbation is their vulnerability); stop when robust enough, accurate enough, or out of
budget. Everything is written to the run's SQLite store as it happens; a killed campaign resumes where it
stopped without asking any annotator again.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from robust_al.annotators import Crowd
from robust_al.annotators.base import Answer, item_rng
from robust_al.annotators.labelstudio import EXISTING
from robust_al.annotators.factory import build_annotators
from robust_al.augment import Augmenter
from robust_al.config import CampaignConfig, ConfigError, load_config
from robust_al.crowd import NetworkTrainer, TrustWeightedDS, confidence_band, model_worker
from robust_al.crowd.aggregate import CONFIDENCE_BANDS
from robust_al.crowd.classifier import CampaignLearner
from robust_al.crowd.learners import campaign_learner
from robust_al.data.holdout import draw_holdout
from robust_al.data.loaders import load_dataset
from robust_al.data.pool import Dataset
from robust_al.faults import kill_point
from robust_al.query import MinDistance, QueryContext, make_strategy
from robust_al.store import RunStore
from robust_al.store.sqlite import abandoned_start
from robust_al.store.lock import RunLock
from robust_al.trust import TrustLedger, independent_labelers
from robust_al.versions import CAMPAIGN_MODULES
from robust_al.versions import versions as _versions

log = logging.getLogger(__name__)

LABELED, DISCARDED, HOLDOUT, RETIRED = "labeled", "discarded", "holdout", "retired"
QUARANTINED = "quarantined"  # labels confirmed, yet training on them fails the secured check: suspected poison


@dataclass
class IterationResult:
    iteration: int
    metrics: dict
    stop: str | None


def versions() -> dict[str, str | None]:
    """The versions a campaign records with its results."""
    return _versions(*CAMPAIGN_MODULES)


class Campaign:
    """One labeling campaign, persisted in ``run_dir``. Use :meth:`create` or :meth:`resume`, then :meth:`run`."""

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
        check_startable(cfg, self.dataset, self.annotators)
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
                                          echo=self.echo, status_seconds=ls.status_seconds)
        else:
            self.crowd = Crowd(self.annotators, self.store, seed=cfg.seed, k=cfg.annotators.k)
        self.learner = campaign_learner(cfg, pool.input_shape, pool.n_classes, pool.X)
        self.net = self.learner.trainer
        self.initial_state = self.net.state_dict()
        a = cfg.augment
        self.augmenter = (Augmenter(self.net.model, pool.input_shape, pool.n_classes, list(a.attacks), a.eps,
                                    a.noise_scale, a.noise_copies) if a.enabled else None)
        self.strategy = make_strategy(cfg.query.strategy, method=cfg.query.clustering,
                                      n_clusters=cfg.query.n_clusters, max_clusters=cfg.query.max_clusters,
                                      typicality=cfg.query.typicality, uncertainty=cfg.query.uncertainty)
        self.mind: MinDistance | None = None
        self._now: tuple[int, str] = (2**62, "")  # (iteration, stage) being run; outside the loop: everything

    # -- construction ---------------------------------------------------------------------------------------
    def _attach(self, cfg: CampaignConfig):
        """``data.name: labelstudio``: the existing project ``annotators.labelstudio.project_id`` as the pool
        (:func:`robust_al.labelstudio.project_pool.dataset_from_project`). A project that does not exist is a
        one-line error naming the key and the server, raised before anything is written."""
        import httpx

        from robust_al.annotators.labelstudio import read_token
        from robust_al.labelstudio.client import LabelStudioClient, ProjectNotFound
        from robust_al.labelstudio.project_pool import dataset_from_project

        ls = cfg.annotators.labelstudio
        opts = dict(cfg.data.options)
        unknown = set(opts) - {"image_size", "truth_field", "key_field"}
        if unknown:
            raise ConfigError(f"data.options: {sorted(unknown)} not understood for data.name = 'labelstudio' "
                              "(valid: image_size, truth_field, key_field)")
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
            except ValueError as e:
                raise ConfigError(f"annotators.labelstudio.project_id = {ls.project_id}: {e}") from None

    @classmethod
    def create(cls, cfg: CampaignConfig, run_dir: str | Path | None = None, **kw) -> "Campaign":
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
    def resume(cls, run_dir: str | Path, **kw) -> "Campaign":
        run_dir = Path(run_dir)
        store = RunStore(run_dir, create=False)
        raw = store.get_meta("config")
        store.close()
        if raw is None:
            raise ConfigError(f"{run_dir}/campaign.sqlite has no stored config: the campaign never started; "
                              f"start it again with robust-al run CONFIG --run-dir {run_dir}")
        return cls(load_config(data=raw), run_dir, **kw)

    # -- state ----------------------------------------------------------------------------------------------
    def load_state(self) -> int:
        """Drop derived rows of an unfinished iteration, restore the last completed one; next iteration."""
        start = self.store.drop_incomplete()
        self.ledger = TrustLedger.configured(self.crowd.workers, self.store, self.cfg.trust, self.cfg.annotators.k,
                                             self.cfg.seed)
        self.status = self.store.statuses()
        self.taken = np.zeros(len(self.pool), dtype=bool)  # pool rows with any status (not free to query)
        if self.status:
            self.taken[self.pool.positions(list(self.status))] = True
        self.crowd.forbidden = {i for i, s in self.status.items() if s in (HOLDOUT, RETIRED)}
        self.prev_metrics: dict = {}
        self.prev_state: dict = {}
        if start > 0:
            self.prev_metrics, self.prev_state, ckpt = self.store.iteration_state(start - 1)
            self.net.load_state_dict(ckpt)
        return start

    def ids_with(self, status: str) -> np.ndarray:
        return np.array(sorted(i for i, s in self.status.items() if s == status), dtype=np.int64)

    def _set_status(self, ids, status: str, iteration: int) -> None:
        ids = [int(i) for i in ids]
        self.store.set_status(ids, status, iteration)
        for i in ids:
            self.status[i] = status
        if ids:
            self.taken[self.pool.positions(ids)] = True
        if status in (HOLDOUT, RETIRED):
            self.crowd.forbidden.update(ids)

    def labels_used(self) -> int:
        """Labels bought by this campaign (an attached project's earlier annotations were not; a budget per
        stage: :meth:`_spent_before`)."""
        return self.store.count_annotations(exclude_purpose=EXISTING)

    def _ask(self, item_ids, iteration: int, purpose: str, **kw) -> list[Answer]:
        self._now = (iteration, purpose)
        return self.crowd.ask(item_ids, iteration, purpose, self.ledger.allowed, **kw)

    def _rng(self, *keys) -> np.random.Generator:
        return item_rng(self.seed, *keys)

    def seed_globals(self, *keys) -> None:
        """ART draws random starts (PGD, BIM) from numpy's and torch's global generators: seed them from the
        campaign seed so that a run does not depend on what its process did before (measured: the same
        campaign gave different learning curves in a fresh process and in a reused worker)."""
        s = int(self._rng("globals", *keys).integers(2**31))
        np.random.seed(s)
        torch.manual_seed(s)

    def _train_seed(self, iteration: int, attempt: int = 0) -> int:
        return int(self._rng("train", iteration, attempt).integers(2**31))

    # -- steps ------------------------------------------------------------------------------------------------
    def _secure_holdout(self, iteration: int) -> None:
        """Set S aside at the start and refresh it every q iterations; old S items are retired for good."""
        q = self.cfg.holdout.refresh_every
        current = self.ids_with(HOLDOUT)
        if len(current) and not (q and iteration > 0 and iteration % q == 0):
            return
        free = self.pool.ids[~self.taken]
        free = free[~np.isin(free, self.injected_ids())]  # S is trusted data: nothing injected ever enters it
        if len(current):
            self._set_status(current, RETIRED, iteration)
        new = draw_holdout(self.pool, free, self.cfg.holdout.size, self._rng("holdout", iteration))
        self._set_status(new, HOLDOUT, iteration)

    def injected_ids(self) -> np.ndarray:
        """Ids of items an experiment injected into the pool (poisons)."""
        return self.store.injected_ids()

    def _inject_poisons(self, iteration: int) -> None:
        """Q3: craft feature-collision poisons against the current model F_{i-1} and put them into the
        unlabeled pool, labeled honestly (as their base class) by whoever is asked. Done once per campaign."""
        from robust_al.augment.poison import craft_verified

        p = self.cfg.poison
        if not p.enabled or iteration != p.at_iteration or self.store.get_meta("poison") is not None:
            return
        self.seed_globals("poison", iteration)
        T = self.dataset.test
        ok = np.where((T.y == p.target_class) & (self.learner.predict(T.X) == p.target_class))[0]
        order = ok[self._rng("poison", "targets").permutation(len(ok))][:p.max_targets]
        free = self.pool.ids[(~self.taken) & (self.pool.y == p.base_class)][:p.n_base]
        base_X = self.pool.X[self.pool.positions(free)]

        def verify(PX: np.ndarray, Py: np.ndarray, target_x: np.ndarray) -> bool:
            clean = self.pool.y >= 0
            base = NetworkTrainer.from_config(self.pool.input_shape, self.pool.n_classes, self.cfg.model,
                                              self.seed)
            base.set_input_statistics(self.pool.X)
            base.fit(np.concatenate([self.pool.X[clean], PX]), np.concatenate([self.pool.y[clean], Py]),
                     seed=self._train_seed(iteration, "poison-baseline"))
            return bool(base.predict_proba(target_x[None]).argmax(1)[0] == p.base_class)

        ps = craft_verified(self.net.model, self.pool.input_shape, self.pool.n_classes,
                            [(T.X[t], p.target_class) for t in order], base_X, free, p.base_class,
                            list(p.watermarks), p.learning_rate, p.similarity_coeff, p.max_iter,
                            verify if p.verify else None)
        if ps is None:
            self.store.set_meta("poison", {"crafted": False, "targets_tried": [int(t) for t in order]})
            return
        target = int(order[ps.target_rank])
        ids = np.arange(len(ps.X), dtype=np.int64) + int(max(self.pool.ids.max(), T.ids.max())) + 1
        meta = {"crafted": True, "iteration": iteration, "target_test_index": target,
                "target_class": ps.target_class, "base_class": ps.base_class, "watermark": ps.watermark,
                "item_ids": [int(i) for i in ids], "base_ids": [int(i) for i in ps.base_ids], **ps.info}
        self.store.add_injected(iteration, ids, "feature-collision", ps.X, ps.y, ("poison", meta))
        self.dataset.train = self.pool = self.pool.extended(ids, ps.X, ps.y)
        self.taken = np.concatenate([self.taken, np.zeros(len(ids), dtype=bool)])
        if self.annotators:  # simulated / replayed labelers learn the new items' (honest) answers
            self.annotators = build_annotators(self.cfg.annotators, self.dataset, self.seed)
            self.crowd.annotators = {a.worker_id: a for a in self.annotators}
        self.mind = None  # the pool changed: distances are rebuilt at the next query

    def _quarantine(self, iteration: int, answered: np.ndarray, prev_state: dict, acc_s: float,
                    post: pd.DataFrame, info: dict) -> tuple[pd.DataFrame, float]:
        """The re-examined batch still fails the secured check, so its labels are not the cause: suspect the
        inputs. Items whose confirmed label contradicts F_{i-1}'s out-of-sample prediction (what clean-label
        poisons look like: base-class images with target-class features) are set aside and F_i retrained;
        kept aside if S accuracy recovers, restored otherwise. Quarantined items are never deleted or reused."""
        oos = self.store.predictions().set_index("item_id")["label"]
        est = post.idxmax(axis=1)
        still = answered[np.isin(answered, self.ids_with(LABELED))]
        suspects = [int(i) for i in still if i in oos.index and i in est.index and int(est[i]) != int(oos[i])]
        info["quarantined"] = 0
        if not suspects:
            return post, acc_s
        state1 = self.net.state_dict()
        self.net.load_state_dict(prev_state)
        self._set_status(suspects, QUARANTINED, iteration)
        post2 = self._fit(iteration, 2, prev_state)
        acc2, _ = self._secured_accuracy()
        if acc2 > acc_s:
            info.update(quarantined=len(suspects), quarantined_secured_acc=acc2)
            return post2, acc2
        self._set_status(suspects, LABELED, iteration)  # no better without them: not the cause
        self.net.load_state_dict(state1)
        return self.inferred_labels(), acc_s

    def _candidates(self) -> np.ndarray:
        cand = self.pool.ids[~self.taken]
        return cand[self.crowd.answerable(cand, self.ledger.allowed)]

    def _spent_before(self, iteration: int, purpose: str) -> int:
        """Labels bought before stage ``purpose`` of ``iteration``: every earlier iteration's and this one's
        earlier stages' (query, then reexam, then the audits in name order). An unfinished iteration's stored
        answers count as bought for the stage that asked them, so a resumed iteration derives the same batch
        and uses every answer it paid for (counting them against its own batch shrank it: 144 instead of 150
        items, 90 paid labels unused, when killed in the last, budget-limited iteration)."""
        return self.store.labels_before(iteration, exclude_purpose=EXISTING) + sum(
            n for p, n in self.store.labels_of_iteration(iteration).items()
            if p != EXISTING and stage_key(p) < stage_key(purpose))

    def _visible(self, ann: pd.DataFrame) -> pd.DataFrame:
        """The answers that existed at this point of the uninterrupted run: none of a later iteration or of a
        later stage of this one. A resumed iteration finds its later stages' answers already stored; used
        early (training before the re-examination, an audit choosing its labelers) they changed the model
        and the trust of a run killed mid re-examination."""
        it, purpose = self._now
        later = (ann["iteration"] > it) | ((ann["iteration"] == it) & (
            ann["purpose"].map(stage_key) > stage_key(purpose)))
        return ann[~later | (ann["purpose"] == EXISTING)]

    def _affordable(self, n_items: int, iteration: int | None = None) -> int:
        """Items of k labels the budget still buys: for the query batch of ``iteration`` when given, else after
        everything stored."""
        spent = self.labels_used() if iteration is None else self._spent_before(iteration, "query")
        per_item = self.cfg.annotators.k + self.cfg.annotators.overlap  # the overlap's labels, on average
        return max(0, min(n_items, int((self.cfg.stop.budget - spent) / per_item)))

    def _annotations(self, with_model: bool | None = None) -> pd.DataFrame:
        """Annotations of the labeled items, plus the model's out-of-sample predictions as one more worker
        (``with_model``, default ``aggregation.model_as_worker``)."""
        labeled = self.ids_with(LABELED)
        ann = self._visible(self.store.annotations(labeled))[["task", "worker", "label"]]
        if self.cfg.aggregation.model_as_worker if with_model is None else with_model:
            pred = self.store.predictions()
            pred = pred[pred["item_id"].isin(labeled)]
            band = confidence_band(pred["score"].to_numpy(), self.pool.n_classes)
            ann = pd.concat([ann, pd.DataFrame({"task": pred["item_id"],
                                                "worker": [model_worker(i, b) for i, b in zip(pred["iteration"], band)],
                                                "label": pred["label"]})], ignore_index=True)
        return ann

    def _trust_evidence(self) -> pd.DataFrame:
        """Each label against the other evidence on its item (leave-one-out posteriors). When the model does not
        vote on labels (``aggregation.model_as_worker`` off) it still testifies here (``trust.model_evidence``):
        with one label per item it is the only other evidence, and a labeler who always turns one class into
        another disagrees with it on that class."""
        if self.cfg.aggregation.model_as_worker or not self.cfg.trust.model_evidence:
            return self.learner.aggregator.leave_one_out()
        witness = TrustWeightedDS(self.pool.n_classes, self.cfg.aggregation.method)
        witness.fit(self._annotations(with_model=True), self._label_weight, self.model_counts())
        return witness.leave_one_out()

    def _label_weight(self, worker: str) -> float:
        """Labels of labelers routed out by trust are down-weighted (``aggregation.untrusted_weight``)."""
        return 1.0 if self.ledger.trusted(worker) else self.cfg.aggregation.untrusted_weight

    def model_counts(self) -> dict[str, np.ndarray]:
        """Each F_{i-1}'s confusion counts on S per confidence band, measured when it made its predictions (a
        store from before the bands holds one C x C table: it stands for every band)."""
        out = {}
        for i, c in self.store.model_confusions().items():
            bands = c if c.ndim == 3 else np.repeat(c[None], len(CONFIDENCE_BANDS) + 1, axis=0)
            out.update({model_worker(i, b): counts for b, counts in enumerate(bands)})
        return out

    def inferred_labels(self, annotations: pd.DataFrame | None = None) -> pd.DataFrame:
        """Posteriors (task x class) of the labeled items from their visible annotations, routed-out labelers
        down-weighted (``aggregation``)."""
        ann = self._annotations() if annotations is None else annotations
        return self.learner.aggregate(ann, self._label_weight, self.model_counts())

    def _fit(self, iteration: int, attempt: int, prev_state: dict | None) -> pd.DataFrame:
        """Infer labels and train F_i on the labeled items and every stored augmentation of them."""
        ann = self._annotations()
        post = self.inferred_labels(ann)
        if self.cfg.model.warm_start and prev_state is not None:
            self.net.load_state_dict(prev_state)
        else:
            self.net.load_state_dict(self.initial_state)
        labeled = self.ids_with(LABELED)
        if isinstance(self.learner, CampaignLearner):  # crowd learners make their own adversarial examples
            aug_ids, aug_X = np.zeros(0, np.int64), np.zeros((0, *self.pool.input_shape), np.float32)
        else:
            aug_ids, aug_X, _, _ = self.store.augmentations(self.pool.input_shape)
        keep = np.isin(aug_ids, labeled)
        kill_point("training", iteration)
        self.learner.fit(self.pool.X[self.pool.positions(labeled)], labeled, ann, self.ledger,
                         extra_X=aug_X[keep], extra_items=aug_ids[keep], posteriors=post,
                         seed=self._train_seed(iteration, attempt))
        return post

    def _significant_drop(self, before: np.ndarray, after: np.ndarray, info: dict) -> bool:
        """Is F_i worse than F_{i-1} on S beyond chance? One-sided exact McNemar test on the items the two
        models disagree about (b = lost, c = gained; under 'no change' b ~ Binomial(b + c, 1/2)). With a
        small S a drop of epsilon is often noise, and each false alarm costs h relabels of the batch."""
        alpha = self.cfg.trust.significance
        if alpha is None or before is None or len(before) != len(after):
            return True
        from scipy.stats import binomtest

        b, c = int(np.sum(before & ~after)), int(np.sum(~before & after))
        p = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
        info["secured_drop_p"] = float(p)
        return p < alpha

    def _secured_accuracy(self) -> tuple[float, np.ndarray]:
        S = self.pool.subset(self.ids_with(HOLDOUT))
        correct = self.learner.predict(S.X) == S.y
        return float(correct.mean()), correct

    def _test_accuracy(self) -> float:
        T = self.dataset.test
        known = T.y >= 0
        return float((self.learner.predict(T.X[known]) == T.y[known]).mean()) if known.any() else float("nan")

    def _query(self, iteration: int, n: int, info: dict) -> np.ndarray:
        """Choose up to n unlabeled items with the configured strategy, in F_{i-1}'s feature space."""
        cand = self._candidates()
        if len(cand) == 0 or n == 0:
            return np.zeros(0, dtype=np.int64)
        with self._stage("embed"):
            self._refresh_distances(iteration)
        pos = self.pool.positions(cand)
        S = self.pool.subset(self.ids_with(HOLDOUT))
        prev_aug = self.prev_state.get("vulnerability", {})
        v_ids = np.array([int(k) for k in prev_aug], dtype=np.int64)
        v_norm = np.array(list(prev_aug.values()), dtype=float)
        ctx = QueryContext(
            positions=pos, embed=None, rng=self._rng("query", iteration),
            proba=self.learner.predict_proba(self.pool.X[pos]) if self.strategy.needs_proba else None,
            mind=self.mind, secured_embed=self.learner.embed(S.X),
            secured_correct=self.learner.predict(S.X) == S.y,
            vuln_embed=self.mind.E[self.pool.positions(v_ids)] if len(v_ids) else None,
            vuln_norm=v_norm if len(v_ids) else None, info=info)
        picked = cand[self.strategy.query(ctx, n)]
        return picked

    def _refresh_distances(self, iteration: int) -> None:
        """Keep min distances to the labeled set; re-embed every ``query.refresh_every`` iterations.

        Between refreshes only the items labeled since are folded in, so the cost per iteration does not
        grow with the labeled set. A resumed run replays the same resets and additions.
        """
        r = self.cfg.query.refresh_every
        last_refresh = 1 + ((iteration - 1) // r) * r
        if self.mind is not None and self._mind_iter == iteration - 1 and iteration != last_refresh:
            return  # up to date: additions were folded in at the end of the previous iteration
        # rebuild: embed with F_{last_refresh-1}, reset with what was labeled before, replay additions since
        current = self.net.state_dict()
        if last_refresh != iteration:
            self.net.load_state_dict(self.store.iteration_state(last_refresh - 1)[2])
        E = self.learner.embed(self.pool.X)
        self.net.load_state_dict(current)
        by_iter = self.store.status_history(LABELED)
        before = [i for i, it in by_iter if it < last_refresh]
        self.mind = MinDistance(E, self.cfg.query.chunk_size)
        self.mind.reset(E, E[self.pool.positions(before)] if before else np.zeros((0, E.shape[1]), np.float32))
        for it in range(last_refresh, iteration):
            self.mind.add_positions(self.pool.positions([i for i, j in by_iter if j == it]))
        self._mind_iter = iteration - 1

    def _overlap(self, iteration: int, answers: list[Answer]) -> list[Answer]:
        """One more labeler on a share of the answered items (``annotators.overlap``), within the budget: the
        answers that let agreement, not the model alone, speak about each labeler. The share goes to the items
        of the labelers least known to be good first (highest 1 - the lower end of their accuracy interval; a
        labeler not scored yet counts 1), so checks gather where they can still change a routing decision."""
        share = self.cfg.annotators.overlap
        if share <= 0 or not answers:
            return []
        asked: dict[int, set[str]] = defaultdict(set)
        for a in answers:
            asked[a.item_id].add(a.worker)
        items = np.array(sorted(asked), dtype=np.int64)
        need = np.array([max(1.0 - self.ledger.interval(w)[0] for w in asked[int(i)]) for i in items])
        rng = self._rng("overlap", iteration)
        n = int(np.floor(share * len(items) + rng.random()))  # share x batch on average
        order = np.lexsort((rng.permutation(len(items)), -need))  # neediest first, ties at random
        room = max(0, self.cfg.stop.budget - self._spent_before(iteration, "overlap"))
        chosen = np.sort(items[order[:min(n, room)]])
        return self._ask(chosen, iteration, "overlap", n_per_item=1, exclude=asked)

    def _reexamine(self, iteration: int, answered: np.ndarray, rejected_proba: np.ndarray, info: dict) -> None:
        """Secured-check failure (section III-B, Fig. 3): h independent labelers relabel the batch D' (by default
        only its suspicious items: ``trust.reexamine``)."""
        cfg = self.cfg.trust
        h = independent_labelers(self.ledger.p1(self.crowd.eligible_workers(self.ledger.allowed)), cfg.p_h)
        batch = answered
        ann = self.store.annotations(batch)
        ann = ann[ann["purpose"].isin(["query", "overlap"])]
        original = {int(i): dict(zip(g["worker"], g["label"])) for i, g in ann.groupby("task")}
        # suspicious: a label F_{i-1} disagreed with out of sample. trust.reexamine = 'suspicious' relabels only
        # those (the others stand); 'all' relabels the batch, suspicious items first, as far as the budget
        # goes, and of the rest keeps only labels F_{i-1} agreed with
        oos = self.store.predictions().set_index("item_id")["label"].to_dict()
        suspicious = {i: any(int(l) != oos.get(i, int(l)) for l in original.get(i, {}).values())
                      for i in map(int, batch)}
        order = sorted(map(int, batch), key=lambda i: (not suspicious[i], i))
        if cfg.reexamine == "suspicious":
            order = [i for i in order if suspicious[i]]
        n_afford = max(0, (self.cfg.stop.budget - self._spent_before(iteration, "reexam")) // h)
        batch, skipped = np.array(order[:n_afford], dtype=np.int64), order[n_afford:]
        dropped = [i for i in skipped if suspicious[i]]
        answers = self._ask(batch, iteration, "reexam", n_per_item=h,
                            exclude={i: set(w) for i, w in original.items()})
        relabels: dict[int, list[int]] = {}
        for a in answers:
            relabels.setdefault(a.item_id, []).append(a.label)
        pos_of = {int(i): k for k, i in enumerate(answered)}
        discarded, contradicted, unverified, flagged = [], 0, 0, set()
        for item in map(int, batch):
            labels = relabels.get(item, [])
            if not labels:  # no independent labeler can be asked about it (a replayed crowd): unverified
                unverified += 1
                continue
            if len(set(labels)) != 1:  # the relabels disagree: discard the item
                discarded.append(item)
                continue
            consensus = labels[0]
            p = rejected_proba[pos_of[item]]
            pred, conf = int(p.argmax()), float(p.max())
            for worker, label in sorted(original.get(item, {}).items()):
                if int(label) != consensus:
                    contradicted += 1
                    self.ledger.penalize(iteration, worker, conf, self.pool.n_classes, cfg.penalty, item)
                    if pred != consensus and conf >= cfg.high_confidence:
                        flagged.add(worker)
        discarded += dropped
        if discarded:
            self._set_status(discarded, DISCARDED, iteration)
        for worker in sorted(flagged):
            self.store.add_flag(iteration, worker, "F_i misclassified with high confidence after its label")
            self._audit(iteration, worker, h)
        info.update(suspicious=int(sum(suspicious.values())), reexamined=len(batch), not_reexamined=len(skipped),
                    h=h, discarded=len(discarded), contradicted=contradicted, unverified=unverified,
                    flagged=sorted(flagged))

    def _audit(self, iteration: int, worker: str, h: int) -> None:
        """Immediate check of a flagged labeler: h others relabel some of its past items; trust is capped at
        the share of those it got right."""
        n = min(self.cfg.trust.audit_size,
                max(0, (self.cfg.stop.budget - self._spent_before(iteration, f"audit:{worker}")) // h))
        ann = self._visible(self.store.annotations())
        mine = ann[(ann["worker"] == worker) & ann["task"].isin(self.ids_with(LABELED))]
        if n == 0 or mine.empty:
            return
        rng = self._rng("audit", iteration, worker)
        pick = mine.iloc[np.sort(rng.choice(len(mine), size=min(n, len(mine)), replace=False))]
        others = {int(t): set(ann.loc[ann["task"] == t, "worker"]) for t in pick["task"]}
        answers = self._ask(pick["task"].to_numpy(), iteration, f"audit:{worker}", n_per_item=h, exclude=others)
        by_item: dict[int, list[int]] = {}
        for a in answers:
            by_item.setdefault(a.item_id, []).append(a.label)
        checked = [(int(t), int(l)) for t, l in zip(pick["task"], pick["label"])
                   if len(set(by_item.get(int(t), []))) == 1]
        if checked:
            right = np.mean([by_item[t][0] == l for t, l in checked])
            if right < self.ledger(worker):
                self.ledger.set(iteration, worker, float(right), f"audit: {right:.2f} of {len(checked)} right")

    def _augment(self, iteration: int, new_items: np.ndarray, post: pd.DataFrame) -> np.ndarray:
        """Adversarial examples (and noisy copies) of the newly labeled items on the accepted model F_i."""
        if self.augmenter is None or len(new_items) == 0:
            return np.zeros(0)
        new_items = new_items[np.isin(new_items, post.index.to_numpy())]
        X = self.pool.X[self.pool.positions(new_items)]
        self.seed_globals("augment", iteration)
        labels = post.loc[new_items].to_numpy().argmax(axis=1)
        norms = []
        for aug in self.augmenter.adversarial(new_items, X, labels):
            self.store.add_augmentations(iteration, aug.item_ids, aug.method, aug.X, aug.norms)
            kill_point("augmentation-written", iteration)
            norms.append(aug.norms)
        for aug in self.augmenter.noise(new_items, X, self._rng("noise", iteration)):
            self.store.add_augmentations(iteration, aug.item_ids, aug.method, aug.X, aug.norms)
        # an item's vulnerability: its smallest perturbation over the attacks
        return np.min(np.stack(norms), axis=0) if norms else np.zeros(0)

    # -- the loop ---------------------------------------------------------------------------------------------
    @contextmanager
    def _stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t

    def iterate(self, iteration: int) -> IterationResult:
        """One pass of Fig. 2: query -> label -> train -> secured check -> trust -> adversarial crafting."""
        cfg, info, self.timings = self.cfg, {}, {}
        t0 = time.perf_counter()
        self._now = (iteration, "query")
        self._secure_holdout(iteration)
        prev_state = None if iteration == 0 else self.net.state_dict()
        prev_acc, prev_correct = (None, None) if iteration == 0 else self._secured_accuracy()
        if iteration > 0:
            with self._stage("poison"):
                self._inject_poisons(iteration)

        with self._stage("query"):
            if iteration == 0:  # m items at random before there is any model
                cand = self._candidates()
                n = self._affordable(min(cfg.query.initial, len(cand)), iteration)
                batch = np.sort(self._rng("initial").choice(cand, size=n, replace=False))
            else:
                batch = self._query(iteration, self._affordable(cfg.query.batch, iteration), info)
            stored = self.store.batch(iteration, "query")
            if stored is not None and not np.array_equal(stored, batch):  # people were asked about these
                log.warning("iteration %d: the resumed query differs from the stored batch; using the stored one",
                            iteration)
                batch = stored
            self.store.set_batch(iteration, "query", batch)
            kill_point("batch-stored", iteration)
            if iteration > 0:
                self._record_predictions(iteration, batch)

        with self._stage("annotate"):
            answers = self._ask(batch, iteration, "query")
            answers += self._overlap(iteration, answers)
            answered = np.array(sorted({a.item_id for a in answers}), dtype=np.int64)
            self._set_status(answered, LABELED, iteration)
            if self.mind is not None:
                self.mind.add_positions(self.pool.positions(answered))
                self._mind_iter = iteration

        with self._stage("train"):
            post = self._fit(iteration, 0, prev_state)
        with self._stage("secured_check"):
            acc_s, correct = self._secured_accuracy()
            info["secured_check"] = "accepted"
            if (prev_acc is not None and prev_acc - acc_s > cfg.trust.epsilon and len(answered)
                    and self._significant_drop(prev_correct, correct, info)):
                # F_i lost more than epsilon on S: roll back to F_{i-1} and re-examine D'
                rejected = self.learner.predict_proba(self.pool.X[self.pool.positions(answered)])
                info.update(secured_check="re-examined", rejected_secured_acc=acc_s)
                self.net.load_state_dict(prev_state)
                self._reexamine(iteration, answered, rejected, info)
                post = self._fit(iteration, 1, prev_state)
                acc_s, _ = self._secured_accuracy()
                if prev_acc - acc_s > cfg.trust.epsilon:
                    post, acc_s = self._quarantine(iteration, answered, prev_state, acc_s, post, info)

        with self._stage("trust"):
            # trust moves with agreement: every label against the other evidence on its item
            self.ledger.agreement_update(iteration, self._trust_evidence(), self.pool.n_classes)
        with self._stage("augment"):
            still = answered[np.isin(answered, self.ids_with(LABELED))]
            vuln = self._augment(iteration, still, post)

        with self._stage("evaluate"):
            metrics = self._metrics(answered, post, acc_s, vuln, info)
            metrics["stop"] = stop = self._stop_reason(iteration, metrics, vuln)
        metrics["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        metrics["seconds"] = time.perf_counter() - t0
        metrics["peak_rss_mib"] = peak_rss_mib()
        state = {"vulnerability": {str(i): float(v) for i, v in zip(still, vuln) if np.isfinite(v)}}
        self._store_inferred(iteration, post)
        kill_point("before-checkpoint", iteration)
        self.store.complete_iteration(iteration, metrics, state, self.net.state_dict())
        kill_point("after-checkpoint", iteration)
        self.prev_metrics, self.prev_state = metrics, state
        return IterationResult(iteration, metrics, stop)

    def _store_inferred(self, iteration: int, post: pd.DataFrame) -> None:
        """The accepted labels of this iteration, as exports read them. Labeled items carry their posterior;
        discarded and quarantined items (out of the aggregation) the majority of their answers and its share;
        S items their trusted label."""
        # human answers only (the model votes in _annotations, not in the store), read for these items alone
        ann = self.store.annotations(list(self.status))
        n_ans = ann.groupby("task").size()
        labels_of = dict(iter(ann.groupby("task")["label"]))
        rows = []
        for item, status in sorted(self.status.items()):
            n = int(n_ans.get(item, 0))
            if status == LABELED:  # an item without a posterior (its answers were cancelled) has no label
                p = post.loc[item].to_numpy() if item in post.index else None
                rows.append((item, None if p is None else int(p.argmax()), None if p is None else float(p.max()),
                             n, status))
            elif status in (DISCARDED, QUARANTINED):
                votes = labels_of[item].value_counts() if n else None
                rows.append((item, int(votes.index[0]) if n else None, float(votes.iloc[0] / n) if n else None,
                             n, status))
            elif status in (HOLDOUT, RETIRED):
                y = int(self.pool.y[self.pool.positions([item])[0]])
                rows.append((item, y if y >= 0 else None, 1.0 if y >= 0 else None, n, status))
        self.store.set_inferred(iteration, rows)

    def _record_predictions(self, iteration: int, batch: np.ndarray) -> None:
        """F_{i-1}'s out-of-sample opinion on the queried items, kept as evidence (and as pre-annotations)."""
        proba = self.learner.predict_proba(self.pool.X[self.pool.positions(batch)])
        for item, p in zip(batch, proba):
            self.store.set_prediction(int(item), iteration, int(p.argmax()), float(p.max()))
        if self.cfg.aggregation.model_as_worker or self.cfg.trust.model_evidence:
            S = self.pool.subset(self.ids_with(HOLDOUT))
            p_s = self.learner.predict_proba(S.X)
            C = self.pool.n_classes
            counts = np.zeros((len(CONFIDENCE_BANDS) + 1, C, C))
            np.add.at(counts, (confidence_band(p_s.max(axis=1), C), S.y, p_s.argmax(axis=1)), 1.0)
            self.store.set_model_confusion(iteration, counts)

    def _metrics(self, answered: np.ndarray, post: pd.DataFrame, acc_s: float, vuln: np.ndarray,
                 info: dict) -> dict:
        labeled = self.ids_with(LABELED)
        y_true = self.pool.y[self.pool.positions(labeled)]
        est = post.idxmax(axis=1).reindex(labeled).to_numpy()
        known = y_true >= 0
        finite = vuln[np.isfinite(vuln)]
        return {
            "labels_used": self.labels_used(), "labeled_items": int(len(labeled)),
            "new_items": int(len(answered)), "secured_acc": acc_s, "test_acc": self._test_accuracy(),
            "label_acc": float(np.mean(est[known] == y_true[known])) if known.any() else None,
            "mean_min_perturbation": float(finite.mean()) if len(finite) else None,
            "min_perturbation": float(vuln.min()) if len(vuln) else None,
            "attack_failures": int((~np.isfinite(vuln)).sum()),
            "late_answers": self.store.late_answers(),
            "trust": self.ledger.table(), "routed_out": sorted(self.ledger.routed),
            "trust_threshold": self.ledger.tau, **self._poison_metrics(), **info,
        }

    def _poison_metrics(self) -> dict:
        """Q3: is the target misclassified as the base class now; where did the poisons go."""
        meta = self.store.get_meta("poison")
        if not meta or not meta.get("crafted"):
            return {}
        T = self.dataset.test
        pred = int(self.learner.predict(T.X[[meta["target_test_index"]]])[0])
        st = [self.status.get(int(i)) for i in meta["item_ids"]]
        return {"poison_target_pred": pred, "poison_success": pred == meta["base_class"],
                "poisons_labeled": st.count(LABELED), "poisons_quarantined": st.count(QUARANTINED),
                "poisons_discarded": st.count(DISCARDED)}

    def _stop_reason(self, iteration: int, metrics: dict, vuln: np.ndarray) -> str | None:
        s = self.cfg.stop
        if s.target_accuracy is not None and metrics["secured_acc"] >= s.target_accuracy:
            return f"target accuracy reached on S ({metrics['secured_acc']:.3f} >= {s.target_accuracy})"
        if s.tau is not None and len(vuln) and float(vuln.min()) > s.tau:
            return f"every adversarial perturbation exceeds tau ({float(vuln.min()):.3f} > {s.tau})"
        if self._affordable(1) == 0:
            return f"label budget spent ({metrics['labels_used']} of {s.budget})"
        if iteration + 1 >= s.max_iterations:
            return f"max_iterations ({s.max_iterations}) reached"
        if len(self._candidates()) == 0:
            return "no unlabeled item left that an eligible labeler can answer"
        return None

    def run(self, progress: bool = True) -> IterationResult | None:
        """Run (or resume) the campaign to its stop; holds the run directory's lock meanwhile."""
        self.net.progress = progress
        if self.augmenter is not None:
            self.augmenter.progress = progress
        self.lock.acquire()  # before anything is read for resuming or written: one process per run
        try:
            return self._run(progress)
        finally:
            self.lock.release()

    def _run(self, progress: bool) -> IterationResult | None:
        from tqdm import tqdm

        if hasattr(self.crowd, "sync") and self.store.get_meta("ls_projects"):
            n = self.crowd.sync()  # answers given while the campaign was not running
            if n:
                self.echo(f"pulled {n} answers given while the campaign was stopped")
        # an attached project's labels: stored before the trust ledger is built, never asked about again
        existing = self.crowd.adopt_existing() if hasattr(self.crowd, "adopt_existing") else []
        start = self.load_state()
        if existing:
            had = [i for i in existing if i not in self.status]
            self._set_status(had, LABELED, start)
            if had:
                self.echo(f"{len(had)} item(s) already labeled in Label Studio project "
                          f"{self.cfg.annotators.labelstudio.project_id}: stored, not asked again")
        if self.prev_metrics.get("stop"):
            self.echo(f"campaign already finished: {self.prev_metrics['stop']}")
            return None
        if start > 0:
            self.echo(f"resuming at iteration {start} ({self.labels_used()} labels already stored)")
        result = None
        # sized by the label budget: max_iterations is a safety limit, the budget is what ends a campaign
        bar = tqdm(total=self.cfg.stop.budget, initial=self.labels_used(), desc="labels", unit="label",
                   disable=not progress, leave=False)
        try:
            for iteration in range(start, self.cfg.stop.max_iterations):
                result = self.iterate(iteration)
                bar.update(self.labels_used() - bar.n)
                bar.clear()
                self.echo(format_metrics(iteration, result.metrics, self.cfg.stop.budget))
                bar.refresh()
                if result.stop:
                    break
        finally:
            bar.close()
            if hasattr(self.crowd, "finish"):  # a live crowd: pull late answers, stop its webhook listener
                self.crowd.finish()
        if result is not None:
            self.echo(f"stopped: {result.stop}")
        return result


VOLATILE_METRICS = frozenset({"timings", "seconds", "peak_rss_mib"})  # differ between identical runs


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, MiB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def stage_key(purpose: str) -> tuple[int, str]:
    """Order of the asking stages within an iteration: the query, its overlap, the re-examination, the audits by
    name."""
    return ((0, "") if purpose == "query" else (0, "overlap") if purpose == "overlap"
            else (1, "") if purpose == "reexam" else (2, purpose))


def check_startable(cfg: CampaignConfig, dataset: Dataset, annotators: list) -> None:
    """Refuse, with one line naming the key, a campaign that could not run as configured."""
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

        require_labelstudio()


def _remove_failed_start(run_dir: Path, made_dir: bool) -> None:
    """Undo a start that failed before the campaign held anything paid for."""
    db = run_dir / "campaign.sqlite"
    if db.exists() and not abandoned_start(db):
        return
    for name in ("campaign.sqlite", "campaign.sqlite-wal", "campaign.sqlite-shm", "config.yaml", "campaign.lock"):
        (run_dir / name).unlink(missing_ok=True)
    if made_dir:
        try:
            run_dir.rmdir()
        except OSError:
            pass


def format_metrics(iteration: int, m: dict, budget: int) -> str:
    pert = m.get("mean_min_perturbation")
    items = list(m["trust"].items())
    if len(items) <= 15:
        trust = " ".join(f"{w}={t:.2f}" for w, t in items)
    else:  # a large (replayed) crowd: the least trusted, then a summary
        low = sorted(items, key=lambda kv: kv[1])
        trust = (" ".join(f"{w}={t:.2f}" for w, t in low[:10]) +
                 f" ... {len(low) - 10} more, median {np.median([t for _, t in low]):.2f} (robust-al trust RUN_DIR)")
    check = "" if m.get("secured_check", "accepted") == "accepted" else (
        f" | RE-EXAMINED h={m.get('h')} discarded={m.get('discarded')} flagged={m.get('flagged')}")
    return (f"iter {iteration:3d} | labels {m['labels_used']:5d}/{budget} | S acc {m['secured_acc']:.3f} | "
            f"test acc {m['test_acc']:.3f} | mean min-pert {'n/a' if pert is None else f'{pert:.3f}'}{check}\n"
            f"         trust: {trust}")


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
