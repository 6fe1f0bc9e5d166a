"""Robustness of crowd learners (MV, DS, Crowd Layer, AggNet, A-LFC, MALC, CL-PM) under white-/black-box attacks.

For every seed: trains each learner on the training pool and its crowd (network as in the papers: one hidden layer
of 128 units, ReLU, dropout 0.5, Adam 1e-3, batch 64), trains the black-box substitute (majority vote, one hidden
layer of 32 units, as in A-LFC), and measures test accuracy clean and under FGSM, PGD-10, C&W (C&W-L2 projected to
the eps ball, see robust_al/evaluate/robustness.py), MIM and the extra CW-margin PGD over the eps grid, white box
and by transfer from the substitute; plus each learner's confusion-matrix recovery error against the empirical
matrices from ground truth.

Writes to --out: config.json (arguments, seeds, versions), results.csv (tidy: learner, seed, setting, attack, eps,
accuracy), confusion_errors.csv, timings.csv, table.md (MALC Table 1 layout, mean ± std over seeds at --table-eps),
acc_vs_eps_<attack>.png and confusions_<learner>.png (6 busiest workers, first seed).

    python pipelines/robust_lfc.py --dataset labelme --quick
    python pipelines/robust_lfc.py --dataset labelme --seeds 0 1 2 3 4 --epochs 200
    python pipelines/robust_lfc.py --dataset sentiment --seeds 0 1 2 3 4
    python pipelines/robust_lfc.py --dataset config --config configs/cifar10n.yaml --set data.options.n_train=5000
    python pipelines/robust_lfc.py --dataset generic --features X.npy --annotations ann.csv --truth y.csv
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robust_al.crowd.learners import LEARNERS, make_learner
from robust_al.crowd.names import LEARNER_NAMES
from robust_al.data.loaders import (
    TEST_ID_OFFSET,
    default_datasets_dir,
    load_generic_crowd,
    load_labelme,
)
from robust_al.data.pool import Dataset, Pool
from robust_al.evaluate.bench import apply_profile
from robust_al.evaluate.robustness import (
    ALL_ATTACKS,
    ATTACKS,
    CW_PARAMS,
    EPS_GRID,
    confusion_recovery_error,
    robustness_table,
    train_substitute,
    true_confusions,
)

ALL_LEARNERS = list(LEARNER_NAMES)
ADVERSARIAL = {"alfc", "malc", "alfc-clpm", "malc-clpm"}
DISPLAY = {"mv": "MV", "ds": "DS", "crowdlayer-mw": "CL (MW)", "crowdlayer-vw": "CL (VW)",
           "crowdlayer-vwb": "CL (VW-B)", "aggnet": "AggNet", "alfc": "A-LFC", "malc": "MALC",
           "alfc-clpm": "A-LFC + CL-PM", "malc-clpm": "MALC + CL-PM"}
TABLE_ATTACKS = {"fgsm": "FGSM", "pgd": "PGD", "cw": "CW", "mim": "MIM"}
QUICK = {"seeds": [0, 1], "eps": [0.005, 0.015, 0.03], "epochs": 10}


# ------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------
def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8").split("\n")
    return text[:-1] if text and text[-1] == "" else text


def unit_scale(X: np.ndarray, Xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-max scale every feature to [0, 1] with the train statistics (test clipped): the attacks and their
    eps live in [0, 1]."""
    lo, span = X.min(0), X.max(0) - X.min(0)
    span = np.where(span > 0, span, 1.0)
    return (X - lo) / span, np.clip((Xt - lo) / span, 0, 1)


def load_sentiment(root: Path | None = None, dims: int = 300, seed: int = 0) -> Dataset:
    """Sentiment polarity (Rodrigues et al. 2013): 4999 train sentences with 27,746 AMT labels from 203 workers,
    3999 test sentences. Features: TF-IDF (uni+bigrams, min_df 2, sublinear tf) + truncated SVD to ``dims``, both
    fit on the TRAIN text only, then min-max scaled to [0, 1] with train statistics (test clipped)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    root = Path(root) if root is not None else default_datasets_dir() / "sentiment_polarity"
    tr_text, te_text = _lines(root / "Sentiment_text_train.txt"), _lines(root / "Sentiment_text_test.txt")
    y = np.loadtxt(root / "Sentiment_Z_train.txt", dtype=np.int64)
    yt = np.loadtxt(root / "Sentiment_Z_test.txt", dtype=np.int64)
    answers = np.loadtxt(root / "answers.txt", dtype=np.int64)
    if not (len(tr_text) == len(y) == len(answers)) or len(te_text) != len(yt):
        raise ValueError(f"{root}: row counts disagree: train text {len(tr_text)}, truth {len(y)}, answers "
                         f"{len(answers)}; test text {len(te_text)}, truth {len(yt)}")
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    svd = TruncatedSVD(n_components=dims, random_state=seed)
    Z = svd.fit_transform(vec.fit_transform(tr_text))
    Zt = svd.transform(vec.transform(te_text))
    X, Xt = unit_scale(Z, Zt)
    rows, cols = np.nonzero(answers != -1)
    recorded = pd.DataFrame({"task": rows.astype(np.int64), "worker": [f"amt{j}" for j in cols],
                             "label": answers[rows, cols]})
    names = ["negative", "positive"]
    return Dataset(name="sentiment",
                   train=Pool(np.arange(len(X)), X.astype(np.float32), y, 2, list(names)),
                   test=Pool(TEST_ID_OFFSET + np.arange(len(Xt)), Xt.astype(np.float32), yt, 2, list(names)),
                   recorded=recorded)


def load(args) -> Dataset:
    if args.dataset == "labelme":
        return load_labelme(args.data_root)
    if args.dataset == "sentiment":
        return load_sentiment(args.data_root, dims=args.sentiment_dims)
    if args.dataset == "config":  # a campaign config's data section, with its recorded crowd
        from robust_al.config import load_config
        from robust_al.data.loaders import load_dataset

        if not args.config:
            sys.exit("--dataset config needs --config CONFIG.yaml (its data section is loaded)")
        cfg = load_config(args.config, args.set)
        ds = load_dataset(cfg.data.name, **cfg.data.options)
        if ds.train.X.min() < 0 or ds.train.X.max() > 1:  # e.g. a frozen trunk's features
            X, Xt = unit_scale(ds.train.X, ds.test.X)
            print(f"{ds.name}: features in [{ds.train.X.min():.3g}, {ds.train.X.max():.3g}] min-max scaled to "
                  f"[0, 1] with the train statistics (mean feature std now {X.std(0).mean():.3f})", flush=True)
            ds.train.X, ds.test.X = X.astype(np.float32), Xt.astype(np.float32)
        return ds
    if not (args.features and args.annotations):
        sys.exit("--dataset generic needs --features and --annotations (and --truth for the confusion errors)")
    return load_generic_crowd(args.features, args.annotations, truth=args.truth, test_features=args.test_features,
                              test_truth=args.test_truth, n_classes=args.n_classes)


# ------------------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------------------
def _fmt(values: pd.Series) -> str:
    v = 100 * values.to_numpy(dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f}"


def markdown_table(res: pd.DataFrame, learners: list[str], setting: str, eps: float) -> str:
    """MALC Table 1 layout: rows = learners, Clean | FGSM | PGD | CW | MIM | Avg., mean ± std (%) over seeds.
    Avg. is the mean over the four attacks per seed, then mean ± std over seeds. Best mean per column in bold."""
    attacks = [a for a in TABLE_ATTACKS if a in set(res.attack)]
    at = res[(res.setting == setting) & np.isclose(res.eps, eps)]
    clean = res[res.setting == "clean"]
    cells, means = {}, {}
    for name in learners:
        row = {"Clean": clean[clean.learner == name].set_index("seed").accuracy}
        for a in attacks:
            row[TABLE_ATTACKS[a]] = at[(at.learner == name) & (at.attack == a)].set_index("seed").accuracy
        if attacks:
            row["Avg."] = pd.concat([row[TABLE_ATTACKS[a]] for a in attacks], axis=1).mean(axis=1)
        cells[name] = {k: _fmt(v) if len(v) else "–" for k, v in row.items()}
        means[name] = {k: v.mean() if len(v) else -1 for k, v in row.items()}
    cols = ["Clean"] + [TABLE_ATTACKS[a] for a in attacks] + (["Avg."] if attacks else [])
    best = {c: max(means[n][c] for n in learners) for c in cols}
    lines = ["| Method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for n in learners:
        cs = [f"**{cells[n][c]}**" if means[n][c] == best[c] else cells[n][c] for c in cols]
        lines.append(f"| {DISPLAY.get(n, n)} | " + " | ".join(cs) + " |")
    return "\n".join(lines)


def extra_table(res: pd.DataFrame, learners: list[str], eps: float) -> str:
    """CW-margin PGD at eps and unbounded C&W-L2, white and black box."""
    cols = []
    for setting in ("white", "black"):
        if ((res.setting == setting) & (res.attack == "cw-margin")).any():
            cols.append((f"CW-margin PGD ({setting})", setting, "cw-margin", eps))
        if ((res.setting == setting) & (res.attack == "cw-unbounded")).any():
            cols.append((f"C&W-L2 unbounded ({setting})", setting, "cw-unbounded", math.inf))
    if not cols:
        return ""
    lines = ["| Method | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for n in learners:
        cs = []
        for _, setting, attack, e in cols:
            sel = res[(res.learner == n) & (res.setting == setting) & (res.attack == attack) & np.isclose(res.eps, e)]
            cs.append(_fmt(sel.accuracy) if len(sel) else "–")
        lines.append(f"| {DISPLAY.get(n, n)} | " + " | ".join(cs) + " |")
    return "\n".join(lines)


def confusion_table(cerr: pd.DataFrame, learners: list[str]) -> str:
    if cerr.empty:
        return ""
    per_seed = cerr.groupby(["learner", "seed"]).apply(
        lambda d: np.average(d.error.fillna(0), weights=d.n_labels) if d.n_labels.sum() else np.nan,
        include_groups=False)
    lines = ["| Method | weighted mean Frobenius error |", "|---|---:|"]
    for n in learners:
        if n in per_seed.index.get_level_values(0):
            v = per_seed.loc[n].to_numpy()
            lines.append(f"| {DISPLAY.get(n, n)} | {v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f} |")
    return "\n".join(lines)


def plot_acc_vs_eps(res: pd.DataFrame, learners: list[str], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    clean = res[res.setting == "clean"]
    for attack in [a for a in ALL_ATTACKS if a in set(res.attack)]:
        settings = [s for s in ("white", "black") if ((res.setting == s) & (res.attack == attack)).any()]
        fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4.5), squeeze=False, sharey=True)
        for ax, setting in zip(axes[0], settings):
            for n in learners:
                d = pd.concat([clean[clean.learner == n].assign(eps=0.0),
                               res[(res.learner == n) & (res.setting == setting) & (res.attack == attack)]])
                g = d.groupby("eps").accuracy
                m, s = g.mean() * 100, g.std(ddof=1).fillna(0) * 100
                ax.plot(m.index, m.values, marker="o", ms=3, label=DISPLAY.get(n, n))
                ax.fill_between(m.index, (m - s).values, (m + s).values, alpha=0.15)
            ax.set_title(f"{attack.upper()} — {setting}-box")
            ax.set_xlabel("eps (L-inf, features in [0, 1])")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("test accuracy (%)")
        axes[0][-1].legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        p = out / f"acc_vs_eps_{attack}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def plot_confusions(name: str, learned: np.ndarray, workers: list[str], ann: pd.DataFrame, truth: dict,
                    n_classes: int, out: Path, top: int = 6) -> Path:
    """True (top row) vs learned (bottom row) confusion matrices of the ``top`` workers with most truth-known labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pi, counts = true_confusions(ann, truth, workers, n_classes)
    n = counts.sum(axis=(1, 2))
    busiest = [int(i) for i in np.argsort(-n, kind="stable")[:top] if n[i] > 0]
    fig, axes = plt.subplots(2, len(busiest), figsize=(2.3 * len(busiest), 5), squeeze=False)
    for j, w in enumerate(busiest):
        err = np.sqrt(np.nansum((learned[w] - pi[w]) ** 2))
        for i, (mat, lab) in enumerate(((pi[w], "true"), (learned[w], "learned"))):
            ax = axes[i][j]
            ax.imshow(np.nan_to_num(mat, nan=0.0), vmin=0, vmax=1, cmap="Blues")
            if n_classes <= 4:
                for (a, b), v in np.ndenumerate(mat):
                    ax.text(b, a, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v > 0.6 else "black")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{workers[w]} ({int(n[w])})\n{lab}" + (f", err {err:.2f}" if i else ""), fontsize=8)
    fig.suptitle(f"{DISPLAY.get(name, name)}: true vs learned confusion matrices (rows = true class)", fontsize=10)
    fig.tight_layout()
    p = out / f"confusions_{name}.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _versions() -> dict:
    from robust_al.campaign import versions
    from robust_al.versions import git_commit, versions as module_versions

    return {**versions(), **module_versions("matplotlib"), "git_commit": git_commit(Path(__file__).parent)}


# ------------------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--dataset", choices=["labelme", "sentiment", "generic", "config"], required=True)
    ap.add_argument("--config", help="config: a campaign config whose data section is loaded, with its recorded "
                    "crowd (e.g. configs/cifar10n.yaml: CIFAR-10N in the transferred feature space)")
    ap.add_argument("--set", action="append", default=[], help="config: overrides, e.g. data.options.n_train=5000")
    ap.add_argument("--data-root", type=Path, help="dataset folder (default: under default_datasets_dir())")
    ap.add_argument("--features", help="generic: features .npy/.csv")
    ap.add_argument("--annotations", help="generic: long CSV item,worker,label")
    ap.add_argument("--truth", help="generic: truth CSV")
    ap.add_argument("--test-features", help="generic: separate test features")
    ap.add_argument("--test-truth", help="generic: truth of the separate test features")
    ap.add_argument("--n-classes", type=int, help="generic: number of classes")
    ap.add_argument("--sentiment-dims", type=int, default=300, help="sentiment: truncated-SVD dimensions")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--learners", nargs="+", default=ALL_LEARNERS, choices=sorted(LEARNERS))
    ap.add_argument("--attacks", nargs="+", default=[*list(ATTACKS), "cw-margin"], choices=ALL_ATTACKS)
    ap.add_argument("--eps", type=float, nargs="+", default=list(EPS_GRID))
    ap.add_argument("--table-eps", type=float, default=None,
                    help="eps of the markdown tables (default: the largest eps of --eps)")
    ap.add_argument("--epochs", type=int, default=200, help="training epochs of every learner (papers: 200)")
    ap.add_argument("--substitute-epochs", type=int, help="default: --epochs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128])
    ap.add_argument("--no-standardize", action="store_true",
                    help="no input standardization inside the networks: an eps then means the same along every "
                         "feature (with it, eps/std_j along feature j; see robust_al.crowd.network.Standardize)")
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--train-eps", type=float, default=None,
                    help="training eps of the adversarial learners (default: the table's eps, the attack scale "
                         "asked for; 8/255 on features in [0, 1] collapsed MALC's clean accuracy at 3x that scale)")
    ap.add_argument("--pgd-steps", type=int, default=10, help="training PGD steps of the adversarial learners")
    ap.add_argument("--cw-binary-steps", type=int, default=CW_PARAMS["binary_search_steps"])
    ap.add_argument("--cw-max-iter", type=int, default=CW_PARAMS["max_iter"])
    ap.add_argument("--no-black-box", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: on a shared 2-core box, 2 threads made ART's C&W ~6x slower)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke profile: seeds {QUICK['seeds']}, eps {QUICK['eps']}, {QUICK['epochs']} epochs "
                         "(explicit --seeds/--eps/--epochs win)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        apply_profile(args, QUICK, argv)
    if args.table_eps is None:
        args.table_eps = max(args.eps)
    elif not any(math.isclose(args.table_eps, e) for e in args.eps):
        args.table_eps = max(args.eps)
        print(f"--table-eps not in the eps grid: tables use eps = {args.table_eps}")
    if args.train_eps is None:  # train against the attack scale the user evaluates
        args.train_eps = args.table_eps
    print(f"tables at eps = {args.table_eps}; adversarial learners trained at eps = {args.train_eps}", flush=True)
    name = Path(args.config).stem if args.dataset == "config" and args.config else args.dataset
    args.out = args.out or Path("results/robust_lfc") / (name + ("-quick" if args.quick else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    t0 = time.time()

    ds = load(args)
    train, test = ds.train, ds.test
    ann = ds.recorded
    keep = test.y >= 0
    Xt, yt = test.X[keep], test.y[keep]
    truth = {int(i): int(c) for i, c in zip(train.ids, train.y) if c >= 0}
    C, shape = train.n_classes, train.input_shape
    info = {"name": ds.name, "n_train": len(train), "n_test_with_truth": int(keep.sum()),
            "input_shape": list(shape), "n_classes": C, "n_workers": int(ann.worker.nunique()),
            "n_annotations": len(ann), "n_train_with_truth": len(truth)}
    cw_params = dict(CW_PARAMS, binary_search_steps=args.cw_binary_steps, max_iter=args.cw_max_iter)
    common = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "hidden": tuple(args.hidden),
              "dropout": args.dropout, "device": args.device, "standardize": not args.no_standardize}
    config = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "seeds": args.seeds, "dataset": info, "learner_kwargs": dict(common),
              "adversarial_kwargs": {"eps": args.train_eps, "pgd_steps": args.pgd_steps}, "cw_params": cw_params,
              "substitute": {"method": "mv", "hidden": [32], "epochs": args.substitute_epochs or args.epochs},
              "versions": _versions(), "torch_threads": torch.get_num_threads()}
    (args.out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    print(f"{ds.name}: {info['n_train']} train items, {info['n_test_with_truth']} test items, {C} classes, "
          f"{info['n_workers']} workers, {info['n_annotations']} labels; out: {args.out}", flush=True)

    results, cerrs, timings, first_conf = [], [], [], {}
    for seed in args.seeds:
        fitted = {}
        for name in args.learners:
            kw = dict(common, seed=seed)
            if name in ADVERSARIAL:
                kw.update(eps=args.train_eps, pgd_steps=args.pgd_steps)
            t = time.time()
            learner = make_learner(name, C, shape, **kw).fit(train.X, ann, train.ids)
            fit_s = time.time() - t
            fitted[name] = learner
            per_worker, mean_err = confusion_recovery_error(learner, ann, truth) if truth else ({}, float("nan"))
            _, counts = true_confusions(ann, truth, learner.workers_, C)
            for (w, e), n in zip(per_worker.items(), counts.sum(axis=(1, 2))):
                cerrs.append({"learner": name, "seed": seed, "worker": w, "n_labels": int(n), "error": e})
            if seed == args.seeds[0]:
                first_conf[name] = (np.asarray(learner.confusion_matrices_), list(learner.workers_))
            clean = float(np.mean(learner.predict(Xt) == yt))
            timings.append({"learner": name, "seed": seed, "what": "fit", "seconds": fit_s})
            print(f"seed {seed} {name:>15}: fit {fit_s:6.1f}s  clean {100 * clean:5.2f}%  "
                  f"confusion error {mean_err:.3f}", flush=True)
        substitute = None
        if not args.no_black_box:
            t = time.time()
            substitute = train_substitute(train.X, ann, train.ids, C, seed=seed,
                                          epochs=args.substitute_epochs or args.epochs,
                                          batch_size=args.batch_size, lr=args.lr, dropout=args.dropout,
                                          device=args.device)
            timings.append({"learner": "substitute", "seed": seed, "what": "fit", "seconds": time.time() - t})
        t = time.time()
        df = robustness_table(fitted, Xt, yt, attacks=args.attacks, eps_grid=args.eps, substitute=substitute,
                              seed=seed, cw_params=cw_params)
        for key, s in df.attrs["craft_seconds"].items():
            setting, model, attack = key.split("/")
            timings.append({"learner": model, "seed": seed, "what": f"craft-{setting}-{attack}", "seconds": s})
        results.append(df)
        print(f"seed {seed}: attacks {time.time() - t:.0f}s, elapsed {time.time() - t0:.0f}s", flush=True)
        # written after every seed, so a long run leaves usable partial results
        res = pd.concat(results, ignore_index=True)
        res.to_csv(args.out / "results.csv", index=False)
        pd.DataFrame(cerrs).to_csv(args.out / "confusion_errors.csv", index=False)
        pd.DataFrame(timings).to_csv(args.out / "timings.csv", index=False)

    res = pd.concat(results, ignore_index=True)
    cerr = pd.DataFrame(cerrs, columns=["learner", "seed", "worker", "n_labels", "error"])
    wall = time.time() - t0
    n_seeds = len(args.seeds)
    parts = [f"# Robustness of crowd learners on {ds.name}", "",
             (f"Test accuracy (%), mean ± std (ddof=1) over {n_seeds} seed(s) {args.seeds}, at eps = "
              f"{args.table_eps} (L-inf, features in [0, 1]); {args.epochs} training epochs; Avg. = mean of "
              f"{'/'.join(TABLE_ATTACKS[a] for a in TABLE_ATTACKS if a in args.attacks)} per seed. "
              f"CW = C&W-L2 ({cw_params['binary_search_steps']} binary-search steps x "
              f"{cw_params['max_iter']} iterations) projected to the eps ball. Bold = best mean."), "",
             "## White-box", "", markdown_table(res, args.learners, "white", args.table_eps), ""]
    if (res.setting == "black").any():
        parts += ["## Black-box (transfer from an MV substitute, one hidden layer of 32 units)", "",
                  markdown_table(res, args.learners, "black", args.table_eps), ""]
    extra = extra_table(res, args.learners, args.table_eps)
    if extra:
        parts += [f"## Other attacks (CW-margin PGD at eps = {args.table_eps}; C&W-L2 without the eps bound)", "",
                  extra, ""]
    ct = confusion_table(cerr, args.learners)
    if ct:
        parts += [("## Confusion-matrix recovery (Frobenius error vs empirical matrices from ground truth, "
                   "mean over workers weighted by label count)"), "", ct, ""]
    parts += [f"Wall time: {wall:.0f} s ({wall / 60:.1f} min) with {torch.get_num_threads()} torch thread(s)."]
    table = "\n".join(parts)
    (args.out / "table.md").write_text(table + "\n")
    plot_acc_vs_eps(res, args.learners, args.out)
    if truth:
        for name, (conf, workers) in first_conf.items():
            plot_confusions(name, conf, workers, ann, truth, C, args.out)
    print()
    print(table)
    print(f"\nwrote {args.out}/: config.json results.csv confusion_errors.csv timings.csv table.md "
          f"acc_vs_eps_*.png confusions_*.png; wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
