"""The campaign loop of the robust-active-learning paper (section III, Fig. 2): :class:`Campaign` runs,
iterates and resumes; each stage lives in a module of its own (``selection``, ``labels``, ``secured``,
``hooks``, ``stopping``; statuses and budget in ``items``; assembly in ``build``)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robust_al.annotators.labelstudio import EXISTING
from robust_al.campaign.build import CampaignBuild
from robust_al.campaign.filtering import FilterMixin
from robust_al.campaign.hooks import PoisonHook
from robust_al.campaign.items import HOLDOUT, LABELED, RETIRED, ItemsMixin
from robust_al.campaign.labels import LabelsMixin
from robust_al.campaign.secured import SecuredMixin
from robust_al.campaign.selection import SelectionMixin
from robust_al.campaign.stopping import stop_reason
from robust_al.crowd.learner import Snapshot
from robust_al.faults import kill_point
from robust_al.report.text import metric_text
from robust_al.reproducible import cpu_threads
from robust_al.trust import TrustLedger

VOLATILE_METRICS = frozenset({"timings", "seconds", "peak_rss_mib"})  # differ between identical runs


@dataclass
class IterationResult:
    iteration: int
    metrics: dict
    stop: str | None


class Campaign(CampaignBuild, ItemsMixin, SelectionMixin, LabelsMixin, FilterMixin, SecuredMixin, PoisonHook):
    """One labeling campaign, persisted in ``run_dir``. Use :meth:`create` or :meth:`resume`, then :meth:`run`."""

    def load_state(self) -> int:
        """Drop derived rows of an unfinished iteration, restore the last completed one; next iteration."""
        start = self.store.drop_incomplete()
        self.ledger = TrustLedger.configured(self.crowd.workers, self.store, self.cfg.trust, self.cfg.annotators.k,
                                             self.cfg.seed)
        self.status = self.store.statuses()
        self.taken = np.zeros(len(self.pool), dtype=bool)  # pool rows with any status (not free to query)
        if self.status:
            self.taken[self.pool.positions(list(self.status))] = True
        if self.crowd.lookahead:  # batches put to labelers (ahead, or not all answered) hold items with no status
            self.mark_posted(self.store.asked_items("query", before=start))  # this one's is made again
            # queued ahead for this iteration (an earlier one was settled: what it left is free); one queued for the
            # next is made again in its turn, from the state it was made in (post_ahead)
            ahead = self.store.batch(start, "ahead")
            if ahead is not None:
                self.mark_posted(ahead)
        self.crowd.forbidden = {i for i, s in self.status.items() if s in (HOLDOUT, RETIRED)}
        self.prev_metrics: dict = {}
        self.prev_state: dict = {}
        if start > 0:
            self.prev_metrics, self.prev_state, ckpt = self.store.iteration_state(start - 1)
            self.learner.restore(Snapshot.of(ckpt, f"F_{start - 1}"))
        return start

    @contextmanager
    def timed_stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t

    def iterate(self, iteration: int) -> IterationResult:
        """One pass of Fig. 2: query -> label -> train -> secured check -> trust -> adversarial crafting."""
        info, self.timings = {}, {}
        t0 = time.perf_counter()
        self._now = (iteration, "query")
        self.secure_holdout(iteration)
        prev_model = None if iteration == 0 else self.learner.snapshot(f"F_{iteration - 1}")
        prev = None if iteration == 0 else self.secured_accuracy()
        if iteration > 0:
            with self.timed_stage("poison"):
                self.inject_poisons(iteration)
        with self.timed_stage("query"):
            batch = self.choose_batch(iteration, info)
            ahead = self.post_ahead(iteration, batch)
        with self.timed_stage("annotate"):
            answered = self.label_batch(iteration, batch)
        with self.timed_stage("filter"):
            answered = self.filter_poisons(iteration, answered, info)
        with self.timed_stage("train"):
            post = self.train_model(iteration, 0, prev_model)
        with self.timed_stage("secured_check"):
            post, acc_s = self.secured_check(iteration, answered, prev_model, prev, post, info)
        with self.timed_stage("trust"):  # every label against the other evidence on its item
            loo, flags = self.trust_evidence(iteration)
            for worker, reason in self.store.evidence_flags().items():  # e.g. a write in another's name
                flags[worker] = ";".join(x for x in (flags.get(worker, ""), reason) if x)
            self.ledger.agreement_update(iteration, loo, self.pool.n_classes, flags)
        with self.timed_stage("augment"):
            still = answered[np.isin(answered, self.ids_with(LABELED))]
            vuln = self.augment_new(iteration, still, post)
        with self.timed_stage("evaluate"):
            metrics = self._metrics(answered, post, acc_s, vuln, info)
            metrics["stop"] = stop_reason(self, iteration, metrics, vuln)
        if self.crowd.lookahead:  # labels_used also counts answers to the batch ahead, which F_i never saw
            metrics["labels_in_model"] = self.store.labels_before(iteration + 1, exclude_purpose=EXISTING)
            metrics["ahead_items"] = 0 if ahead is None else int(len(ahead))
            if ahead is not None and metrics["stop"]:  # a target reached: nobody labels what will never be used
                metrics["withdrawn"] = self.crowd.withdraw(ahead, iteration + 1, "query")
                self.store.close_batch(iteration + 1, "ahead")
        return self._complete(iteration, metrics, post, still, vuln, t0)

    def _complete(self, iteration: int, metrics: dict, post, still: np.ndarray, vuln: np.ndarray,
                  t0: float) -> IterationResult:
        """Checkpoint the iteration: metrics, inferred labels, the items' vulnerability and F_i's weights."""
        metrics["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        metrics["seconds"] = time.perf_counter() - t0
        metrics["peak_rss_mib"] = peak_rss_mib()
        state = {"vulnerability": {str(i): float(v) for i, v in zip(still, vuln) if np.isfinite(v)}}
        self.store_inferred(iteration, post)
        kill_point("before-checkpoint", iteration)
        self.store.complete_iteration(iteration, metrics, state, dict(self.learner.snapshot(f"F_{iteration}").weights))
        kill_point("after-checkpoint", iteration)
        self.prev_metrics, self.prev_state = metrics, state
        return IterationResult(iteration, metrics, metrics["stop"])

    def _metrics(self, answered: np.ndarray, post: pd.DataFrame, acc_s: float, vuln: np.ndarray,
                 info: dict) -> dict:
        labeled = self.ids_with(LABELED)
        y_true = self.pool.y[self.pool.positions(labeled)]
        est = post.idxmax(axis=1).reindex(labeled).to_numpy()
        known = y_true >= 0
        finite = vuln[np.isfinite(vuln)]
        return {
            "labels_used": self.labels_used(), "labeled_items": int(len(labeled)),
            "new_items": int(len(answered)), "secured_acc": acc_s, "test_acc": self.test_accuracy(),
            "label_acc": float(np.mean(est[known] == y_true[known])) if known.any() else None,
            "mean_min_perturbation": float(finite.mean()) if len(finite) else None,
            "min_perturbation": float(vuln.min()) if len(vuln) else None,
            "attack_failures": int((~np.isfinite(vuln)).sum()),
            "late_answers": self.store.late_answers(),
            "trust": self.ledger.table(), "routed_out": sorted(self.ledger.routed),
            "trust_threshold": self.ledger.tau, **self.poison_metrics(), **info,
        }

    def run(self, progress: bool = True) -> IterationResult | None:
        """Run (or resume) the campaign to its stop; holds the run directory's lock meanwhile."""
        self.net.progress = progress
        if self.augmenter is not None:
            self.augmenter.progress = progress
        self.lock.acquire()  # before anything is read for resuming or written: one process per run
        try:
            with cpu_threads(self.cfg.model.cpu_threads):  # bit-reproducible (see robust_al.reproducible)
                return self._run(progress)
        finally:
            self.lock.release()

    def _run(self, progress: bool) -> IterationResult | None:
        from tqdm import tqdm

        if self.store.get_meta("ls_projects"):
            n = self.crowd.sync()  # answers given while the campaign was not running
            if n:
                self.echo(f"pulled {n} answers given while the campaign was stopped")
        # an attached project's labels: stored before the trust ledger is built, never asked about again
        existing = self.crowd.adopt_existing()
        start = self.load_state()
        if existing:
            had = [i for i in existing if i not in self.status]
            self.set_status(had, LABELED, start)
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
            self.crowd.finish()  # a live crowd: pull late answers, stop its webhook listener
        if result is not None:
            self.echo(f"stopped: {result.stop}")
        return result


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, MiB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


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
            f"test acc {metric_text(m['test_acc'])} | mean min-pert {'n/a' if pert is None else f'{pert:.3f}'}{check}\n"
            f"         trust: {trust}")
