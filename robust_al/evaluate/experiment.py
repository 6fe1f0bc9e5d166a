"""Repeated robust-active-learning experiments (paper section IV): methods, threat scenarios, one repetition
as a whole campaign in its own folder, and the parallel runners (local processes or Ray tasks).

Library code so that Ray workers (and spawned processes) import it from the installed package;
``pipelines/robust_al_eval.py`` is the command line.
"""
from __future__ import annotations

import json
import multiprocessing
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from robust_al.report.schema import write_result

METHODS = {
    "proposed": [],
    "random": ["query.strategy=random", "aggregation.method=mv", "aggregation.model_as_worker=false",
               "aggregation.untrusted_weight=1.0", "trust.routing=false", "trust.epsilon=1.0",
               "augment.enabled=false", "model.targets=hard"],
    "uncertainty": ["query.strategy=entropy"],
    "coreset": ["query.strategy=coreset"],
    "proposed-norouting": ["trust.routing=false", "aggregation.untrusted_weight=1.0"],
    "proposed-pure-maxmin": ["query.typicality=0", "query.uncertainty=0"],  # the paper's farthest-first
    "proposed-nomargin": ["query.uncertainty=0"],  # distance x typicality, no margin weight (gamma = 0)
    "proposed-model-vote": ["aggregation.model_as_worker=true"],  # F_{i-1} votes on labels as one more worker
    # a second labeler on a fifth of each batch, neediest labelers first, and labels weighted by how sure they are
    "proposed-overlap": ["annotators.overlap=0.2", "model.targets=weighted"],
    # before model.targets: trust became the default (commit cfd279a): every inferred label with weight 1
    "proposed-hard": ["model.targets=hard"],
}
# the poison filter (robust_al.filter) on top of a method: Q3 pairs each against the method without it
METHODS |= {f"{m}-filter": [*METHODS[m], "poison_filter.enabled=true"] for m in ("proposed", "random")}
QUESTIONS = {"q1": ["proposed", "random", "uncertainty", "coreset"],
             "q2": ["proposed", "random", "proposed-norouting"],
             "q3": ["proposed", "random", "uncertainty"]}
PROFILES = {"quick": 3, "full": 30}


SCENARIOS = ("config", "malicious", "spammer", "colluding")


def scenario_labelers(scenario: str, target: int, to: int, colluders: int = 3) -> list[dict]:
    """11 labelers with pr = 0.05 (section IV-C); one (or a group) of them attacks."""
    honest = {"kind": "benign", "pr": 0.05}
    return {
        "malicious": [{**honest, "count": 10}, {"kind": "malicious", "count": 1, "pr": 0.05, "target": target,
                                                "to": to}],
        "spammer": [{**honest, "count": 10}, {"kind": "spammer", "count": 1}],
        # a colluding group gives the same wrong label on the same items (a shared, item-keyed draw)
        "colluding": [{**honest, "count": 11 - colluders},
                      {"kind": "colluding", "count": colluders, "rate": 0.5, "pr": 0.05}],
    }[scenario]


def malicious_pair(cfg) -> tuple[int, int]:
    """The class pair (c_t, c'_t) a malicious scenario uses by default: the config's own malicious labeler's
    (among ``annotators.labelers`` or ``annotators.inject``), else classes 0 -> 1."""
    for lab in [*cfg.annotators.labelers, *cfg.annotators.inject]:
        if lab.kind == "malicious":
            return int(lab.target), int(lab.to)
    return 0, 1


def scenario_overrides(cfg, scenario: str, malicious: tuple[int, int] | None = None) -> tuple[list[str], str]:
    """The override that puts ``scenario``'s labelers into config ``cfg`` and a sentence saying what it
    replaced. ``config`` keeps the config's crowd (no override). A recorded (replayed) crowd is kept and the
    attackers are injected next to it (``annotators.inject``); a simulated one is replaced."""
    if scenario == "config":
        return [], "the config's crowd is kept"
    sc = scenario_labelers(scenario, *(malicious or malicious_pair(cfg)))
    if cfg.annotators.kind == "replay":  # a recorded crowd: attackers are injected next to it
        sc = [s for s in sc if s["kind"] != "benign"]
        key, old = "annotators.inject", [d.model_dump(exclude_none=True) for d in cfg.annotators.inject]
    elif cfg.annotators.kind == "simulated":
        key, old = "annotators.labelers", [d.model_dump(exclude_none=True) for d in cfg.annotators.labelers]
    else:
        raise ValueError(f"scenario {scenario!r} needs a simulated or replayed crowd; the config's annotators.kind "
                         f"is {cfg.annotators.kind!r} (use --scenario config)")
    return [f"{key}={json.dumps(sc)}"], f"{key} {json.dumps(old)} replaced by {json.dumps(sc)}"


def run_overrides(args, method: str) -> list[str]:
    """Config overrides of one run: the user's ``--set``, the scenario's labelers, poisons (q3), the method."""
    from robust_al.config import load_config

    base = load_config(args.config, args.set)
    out = list(args.set) + scenario_overrides(base, args.scenario, getattr(args, "malicious", None))[0]
    if args.question == "q3":
        out.append("poison.enabled=true")
    return out + METHODS[method]


def target_accuracy(config: str, overrides: list[str], seed: int = 0) -> float:
    """Test accuracy of the campaign's network trained on all training items with their true labels."""
    from robust_al.config import load_config
    from robust_al.crowd import NetworkTrainer
    from robust_al.data.loaders import load_dataset

    cfg = load_config(config, overrides)
    ds = load_dataset(cfg.data.name, **cfg.data.options)
    net = NetworkTrainer.from_config(ds.train.input_shape, ds.train.n_classes, cfg.model, seed)
    net.set_input_statistics(ds.train.X)
    known = ds.train.y >= 0
    net.fit(ds.train.X[known], ds.train.y[known], seed=seed)
    return float((net.predict_proba(ds.test.X).argmax(1) == ds.test.y).mean())


def worker_kind(worker: str) -> str:
    m = re.match(r"(benign|malicious|spammer|colluding)\d*$", worker)
    return m.group(1) if m else "replayed"


def one_run(job: dict) -> dict:
    """A whole campaign (resumed if its folder exists); returns and writes its ``result.json``."""
    import torch

    from robust_al.campaign import Campaign
    from robust_al.config import load_config
    from robust_al.store import RunStore

    torch.set_num_threads(1)  # one core per repetition: parallel runs do not fight, results do not depend on it
    started = time.perf_counter()
    run_dir = Path(job["run_dir"])
    if (run_dir / "campaign.sqlite").exists():
        campaign = Campaign.resume(run_dir, echo=None)
    else:
        cfg = load_config(job["config"], job["overrides"] + [f"seed={job['seed']}"])
        campaign = Campaign.create(cfg, run_dir, echo=None)
    campaign.run(progress=False)
    metrics = RunStore(run_dir).metrics()
    curve = [(m["labels_used"], m["test_acc"]) for m in metrics]
    trust: dict[str, list] = {}
    for m in metrics:
        for w, t in m["trust"].items():
            trust.setdefault(w, []).append([m["iteration"], m["labels_used"], t])
    result = {"method": job["method"], "rep": job["rep"], "seed": job["seed"], "curve": curve,
              "labels_to_target": labels_to_reach(curve, job["target"]),
              "final_acc": curve[-1][1] if curve else None, "trust": trust,
              "kinds": {w: worker_kind(w) for w in trust},
              "re_examinations": sum(m.get("secured_check") == "re-examined" for m in metrics),
              "seconds": sum(m["seconds"] for m in metrics),
              "seconds_per_iteration": [round(m["seconds"], 2) for m in metrics],
              "peak_rss_mib": max((m.get("peak_rss_mib", 0.0) for m in metrics), default=0.0)}
    last = metrics[-1] if metrics else {}
    if "poison_success" in last:
        from robust_al.evaluate.poisoning import detection_report, filter_cost, target_without_poisons

        campaign = Campaign.resume(run_dir, echo=None)
        result["poison"] = {"success": bool(last["poison_success"]), "labeled": last["poisons_labeled"],
                            "quarantined": last["poisons_quarantined"], "discarded": last["poisons_discarded"],
                            "filtered": last.get("poisons_filtered", 0),
                            **{k: v for k, v in campaign.store.get_meta("poison").items()
                               if k in ("watermark", "target_test_index", "learning_rate", "similarity_coeff")}}
        result["detection"] = detection_report(campaign)
        result["poison"].update(filter_cost(campaign.store))
        if result["poison"]["success"]:
            result["poison"]["success_without_poisons"] = target_without_poisons(campaign)  # reloads its state
    elif job.get("poison"):
        meta = RunStore(run_dir).get_meta("poison") or {}
        result["poison"] = {"crafted": bool(meta.get("crafted")), "success": None}
    result["wall_seconds"] = time.perf_counter() - started  # this call: with resuming and the detection report
    write_result(run_dir, result)
    return result


def run_all(jobs: list[dict], workers: int, ray_address: str | None, gpus_per_run: float = 0.0,
            failures: list[dict] | None = None) -> list[dict]:
    """Repetitions in parallel: local spawned processes, or Ray tasks (1 CPU each, ``gpus_per_run`` GPUs).

    A repetition that raises is left out of the returned results and appended to ``failures`` (or re-raised
    when no list is given) after every other repetition has finished; its folder keeps what it stored, and
    running the same command again resumes it."""
    outcomes: list[tuple[dict, dict | None, BaseException | None]] = []
    if ray_address:
        import ray

        ray.init(address=None if ray_address == "local" else ray_address,
                 num_cpus=workers if ray_address == "local" else None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_run, max_retries=1)(one_run)
        refs = [remote.remote(j) for j in jobs]
        for j, ref in zip(jobs, refs):
            try:
                r = ray.get(ref)
            except Exception as e:
                outcomes.append((j, None, e))
                progress(len(outcomes), len(jobs), j, None, e)
                continue
            progress(len(outcomes) + 1, len(jobs), j, r, None)
            # a cluster without a shared disk: the driver keeps a copy
            Path(j["run_dir"]).mkdir(parents=True, exist_ok=True)
            write_result(Path(j["run_dir"]), r)
            outcomes.append((j, r, None))
    else:
        # spawn, not fork: the parent already ran torch (OpenMP) to measure the target; forked OpenMP deadlocks
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(one_run, j): j for j in jobs}
            for f in as_completed(futures):  # one line per repetition as it finishes
                j, e = futures[f], f.exception()
                outcomes.append((j, None if e else f.result(), e))
                progress(len(outcomes), len(jobs), j, outcomes[-1][1], e)
            order = {id(j): k for k, j in enumerate(jobs)}
            outcomes.sort(key=lambda o: order[id(o[0])])  # results in job order, whatever finished first
    bad = [(j, e) for j, _, e in outcomes if e is not None]
    if bad and failures is None:
        raise bad[0][1]
    for j, e in bad:
        failures.append({"run_dir": j["run_dir"], "method": j["method"], "seed": j["seed"], "error": repr(e)})
    return [r for _, r, e in outcomes if e is None]


def progress(done: int, total: int, job: dict, result: dict | None, error: BaseException | None) -> None:
    """One line per finished repetition (the runs take minutes each; silence until the table is no help)."""
    head = f"[{done}/{total}] {job['method']} rep {job['rep']}"
    if error is not None:
        print(f"{head}: FAILED {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
              flush=True)
        return
    hit = result["labels_to_target"]
    print(f"{head}: {'target at ' + str(hit) + ' labels' if hit is not None else 'target not reached'}, final "
          f"accuracy {result['final_acc'] if result['final_acc'] is None else round(result['final_acc'], 4)} "
          f"after {result['curve'][-1][0] if result['curve'] else 0} labels, {result['seconds']:.0f} s"
          f"{poison_outcome(result.get('poison'))}", flush=True)


def poison_outcome(poison: dict | None) -> str:
    """Q3's part of a progress line: did the injected poisons make the model misclassify their target."""
    if not poison:
        return ""
    if poison.get("success") is None:
        return "; no poison set succeeded against the clean baseline (nothing injected)"
    return (f"; attack {'succeeded' if poison['success'] else 'failed'} ({poison['labeled']} poisons labeled, "
            f"{poison['quarantined']} quarantined)")


def labels_to_reach(curve: list, threshold: float) -> int | None:
    """Labels used when the test accuracy first reaches ``threshold`` (None: never)."""
    return next((n for n, acc in curve if acc >= threshold), None)


def table(results: list[dict], methods: list[str], threshold: float) -> str:
    """Table III layout: labels used when the test accuracy first reaches ``threshold``, over repetitions."""
    rows = ["| Method | Mean | Std | Min | 25% | 50% | 75% | Max | never reached | final acc (mean) "
            "| final labels (mean) |",
            "|---|" + "---:|" * 10]
    for s in methods:
        rs = [r for r in results if r["method"] == s]
        hits = [labels_to_reach(r["curve"], threshold) for r in rs]
        b = [h for h in hits if h is not None]
        acc = np.mean([r["final_acc"] for r in rs]) if rs else float("nan")
        used = np.mean([r["curve"][-1][0] for r in rs if r["curve"]]) if rs else float("nan")
        never = len(rs) - len(b)
        tail = f"{never} | {acc:.4f} | {used:.0f} |"
        if b:
            q = np.percentile(b, [0, 25, 50, 75, 100])
            rows.append(f"| {s} | {np.mean(b):.1f} | {np.std(b, ddof=1) if len(b) > 1 else 0:.1f} | {q[0]:.0f} | "
                        f"{q[1]:.0f} | {q[2]:.0f} | {q[3]:.0f} | {q[4]:.0f} | {tail}")
        else:
            rows.append(f"| {s} | - | - | - | - | - | - | - | {tail}")
    return "\n".join(rows)


def poison_tables(results: list[dict], methods: list[str]) -> dict[str, str]:
    """Q3: attack success rate per method and detection precision/recall per detector."""
    from scipy.stats import binomtest

    out = {}
    rows = ["| Method | runs with poisons | attack success rate (95 % CI, Wilson) | vs random (a -filter method: vs "
            "the method without it), paired by seed "
            "(exact McNemar) | of the successes, target missed also without the poisons | poisons labeled (mean) "
            "| quarantined (mean) | filtered (mean) |", "|---|---:|---:|---|---:|---:|---:|---:|"]
    won = {s: {r["seed"]: bool(r["poison"]["success"]) for r in results
               if r["method"] == s and r.get("poison", {}).get("success") is not None} for s in methods}
    for s in methods:
        ps = [r["poison"] for r in results if r["method"] == s and r.get("poison", {}).get("success") is not None]
        if not ps:
            continue
        k = int(sum(p["success"] for p in ps))
        ci = binomtest(k, len(ps)).proportion_ci(method="wilson")
        paired = "-"
        ref = s.removesuffix("-filter") if s.endswith("-filter") else "random"  # a filter against its method
        if s != ref and won.get(ref):
            both = sorted(set(won[s]) & set(won[ref]))
            b = sum(won[s][i] and not won[ref][i] for i in both)  # only this method's model fell
            c = sum(won[ref][i] and not won[s][i] for i in both)
            p_val = binomtest(b, b + c).pvalue if b + c else 1.0
            paired = f"{len(both)} seeds: {b} fell only here, {c} only under {ref}, p = {p_val:.3g}"
        control = [p["success_without_poisons"] for p in ps if p["success"] and "success_without_poisons" in p]
        rows.append(f"| {s} | {len(ps)} | {k}/{len(ps)} = {k / len(ps):.2f} ({ci.low:.2f}-{ci.high:.2f}) | {paired} | "
                    f"{f'{sum(control)}/{len(control)}' if control else '-'} | "
                    f"{np.mean([p['labeled'] for p in ps]):.1f} | {np.mean([p['quarantined'] for p in ps]):.1f} | "
                    f"{np.mean([p.get('filtered', 0) for p in ps]):.1f} |")
    out["Attack success"] = "\n".join(rows)
    cost = filter_cost_table(results, methods)
    if cost:
        out["What the poison filter cost"] = cost
    rows = ["| Method | Detector | precision (mean) | recall (mean) | flagged (mean) |", "|---|---|---:|---:|---:|"]
    for s in methods:
        dets: dict[str, list] = {}
        for r in results:
            if r["method"] == s:
                for d, v in r.get("detection", {}).items():
                    dets.setdefault(d, []).append(v)
        for d, vs in dets.items():
            def mean(k, vs=vs):
                xs = [v[k] for v in vs if v.get(k) is not None]
                return f"{np.mean(xs):.2f}" if xs else "-"
            rows.append(f"| {s} | {d} | {mean('precision')} | {mean('recall')} | {mean('flagged')} |")
    out["Detection of the injected poisons"] = "\n".join(rows)
    return out


def filter_cost_table(results: list[dict], methods: list[str]) -> str:
    """Each -filter method against the method without it, paired by seed: honest labeled items the filter kept
    out of training (mean count and share of the honest items labeled, and the largest share in one run), and
    the final clean test accuracy (mean of each, paired difference in points with its 95 % half-width)."""
    by = {(r["method"], r["seed"]): r for r in results}
    rows = ["| Method vs without | seeds | honest items removed: mean (share), worst run | final test accuracy: "
            "filter / without | difference, points (95 %) |", "|---|---:|---|---|---|"]
    for m in [m for m in methods if m.endswith("-filter")]:
        ref = m.removesuffix("-filter")
        seeds = sorted(s for (mm, s) in by if mm == m and (ref, s) in by
                       and by[m, s].get("final_acc") is not None and by[ref, s].get("final_acc") is not None)
        if not seeds:
            continue
        ps = [by[m, s].get("poison", {}) for s in seeds]
        share = [p["honest_filtered"] / p["honest_labeled"] for p in ps if p.get("honest_labeled")]
        removed = (f"{np.mean([p['honest_filtered'] for p in ps if 'honest_filtered' in p]):.1f} "
                   f"({100 * np.mean(share):.1f} %), {100 * max(share):.1f} %" if share else "-")
        a = np.array([by[m, s]["final_acc"] for s in seeds])
        b = np.array([by[ref, s]["final_acc"] for s in seeds])
        d = (a - b) * 100
        half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
        rows.append(f"| {m} vs {ref} | {len(seeds)} | {removed} | {a.mean():.4f} / {b.mean():.4f} | "
                    f"{d.mean():+.2f} ± {half:.2f} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def accuracy_at(curve: list, n: int) -> float:
    """Test accuracy of the model trained on at most ``n`` labels (the last curve point at or below n)."""
    below = [acc for m, acc in curve if m <= n]
    return below[-1] if below else float("nan")


def paired_table(results: list[dict], methods: list[str], threshold: float, baseline: str = "random",
                 never: int | None = None) -> str:
    """Each method against ``baseline``, paired by seed: labels to ``threshold`` (a run that never got there
    counts as ``never``, default the largest budget seen + 1), the ratio of means, how many seeds needed fewer /
    as many / more labels, and a one-sided Wilcoxon signed-rank p (H1: the method needs fewer); then the mean
    learning-curve gap (accuracy minus the baseline's, points, paired 95 % half-width) at the budgets both reach
    after the first (the initial random set, the same for every method of a seed)."""
    from scipy.stats import wilcoxon

    by = {(r["method"], r["seed"]): r for r in results if r.get("curve")}
    top = max((r["curve"][-1][0] for r in by.values()), default=0)
    never = top + 1 if never is None else never
    rows = [f"| Method vs {baseline} | seeds | labels: mean (method / {baseline}) | ratio | fewer / same / more | "
            "Wilcoxon p (one-sided) | curve gap: worst (at) | ahead at budgets |",
            "|---|---:|---|---:|---|---:|---|---|"]
    for m in [m for m in methods if m != baseline]:
        seeds = sorted(s for (mm, s) in by if mm == m and (baseline, s) in by)
        if not seeds:
            continue
        a = np.array([labels_to_reach(by[m, s]["curve"], threshold) or never for s in seeds], float)
        b = np.array([labels_to_reach(by[baseline, s]["curve"], threshold) or never for s in seeds], float)
        d = a - b
        p = float(wilcoxon(a, b, alternative="less").pvalue) if np.any(d != 0) else 1.0
        grid = sorted({n for s in seeds for n, _ in by[baseline, s]["curve"]})
        grid = [n for n in grid[1:] if all(by[m, s]["curve"][-1][0] >= n and by[baseline, s]["curve"][-1][0] >= n
                                       for s in seeds)]
        gaps = [(n, np.array([accuracy_at(by[m, s]["curve"], n) - accuracy_at(by[baseline, s]["curve"], n)
                              for s in seeds]) * 100) for n in grid]
        mean = [(n, g.mean(), 1.96 * g.std(ddof=1) / np.sqrt(len(g)) if len(g) > 1 else 0.0) for n, g in gaps]
        worst = min(mean, key=lambda t: t[1]) if mean else (0, float("nan"), 0.0)
        rows.append(f"| {m} | {len(seeds)} | {a.mean():.0f} / {b.mean():.0f} | {a.mean() / b.mean():.2f} | "
                    f"{int((d < 0).sum())} / {int((d == 0).sum())} / {int((d > 0).sum())} | {p:.2g} | "
                    f"{worst[1]:+.2f} ± {worst[2]:.2f} ({worst[0]}) | {sum(g > 0 for _, g, _ in mean)}/{len(mean)} |")
    return "\n".join(rows) + f"\n\n(never reached counts as {never} labels)"
