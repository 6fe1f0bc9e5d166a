"""Adversary detection on real crowds (robust_al.trust.detect): clean, with injected spammers, with a colluding bloc.

For each crowd (Zheng et al. VLDB'17 dog / duck / face_sentiment / product, CIFAR-10N) and each fraction of the
workers (10/20/30/40%), a random set of real workers is turned into
  * spammers: every label they gave is replaced by a uniformly random class, or
  * a colluding bloc: on a random half of the items, every bloc member who labelled the item gives the same wrong
    label (one wrong class drawn per item); elsewhere they keep their real labels,
and the detectors are run on the result.  Reported per setting (mean over seeds): recall (flagged adversaries /
adversaries); false-positive rate fpr (flagged real workers / real workers) and fpr_good (among the real workers whose
balanced accuracy, the mean over true classes of the per-class accuracy, is at least halfway from chance 1/C to 1:
the real crowds hold near-chance and constant-answer workers of their own); the AUC of MMSR skills for adversary vs
real worker (low skill = adversary; crowd-kit's MMSR where it is feasible, the vectorised port otherwise, see
mmsr_skills); seconds per call.  The bloc's recall / fpr are colluding_blocs' default (side="both": MMSR's choice,
vetoed when the unanimity check disagrees); recall_mmsr / fpr_mmsr and recall_u / fpr_u: the figures had the
adversarial side been chosen by MMSR alone (side="mmsr") or by the unanimity check alone (side="unanimity").
On the clean crowds it lists the flagged workers with their accuracy.

    python pipelines/bench_detect.py                      # all crowds, seeds 0 1
    python pipelines/bench_detect.py --crowds duck dog --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from robust_al.data.loaders import default_datasets_dir
from robust_al.trust.detect import colluding_blocs, mmsr_skills, spammer_scores

ZHENG = ("dog", "duck", "face_sentiment", "product")


def load_crowd(name: str, root=None):
    """(tasks, workers, labels, truth per task, n_classes) as integer codes."""
    root = default_datasets_dir() if root is None else root
    if name == "cifar10n":
        df = pd.read_csv(root / "cifar10n" / "cifar10n_worker_labels_long.csv")
        t, _ = pd.factorize(df["image_index"])
        w, _ = pd.factorize(df["worker_id"])
        truth = df.groupby(t)["clean_label"].first().to_numpy()
        return t, w, df["label"].to_numpy(), truth, 10
    folder = root / f"zheng_vldb17_{name}"
    ans = pd.read_csv(folder / "answer.csv")
    tr = pd.read_csv(folder / "truth.csv")
    ans = ans[ans["question"].isin(tr["question"])]
    t, qs = pd.factorize(ans["question"])
    w, _ = pd.factorize(ans["worker"])
    truth = tr.set_index("question").loc[qs, "truth"].to_numpy()
    y = ans["answer"].to_numpy()
    return t, w, y, truth, int(max(y.max(), truth.max()) + 1)


def inject_spammers(t, w, y, C, frac, rng):
    M = w.max() + 1
    adv = np.zeros(M, bool)
    adv[rng.choice(M, int(round(frac * M)), replace=False)] = True
    y = y.copy()
    sel = adv[w]
    y[sel] = rng.integers(C, size=sel.sum())
    return y, adv


def inject_bloc(t, w, y, truth, C, frac, rng, attack_frac=0.5):
    M, T = w.max() + 1, t.max() + 1
    adv = np.zeros(M, bool)
    adv[rng.choice(M, int(round(frac * M)), replace=False)] = True
    attacked = rng.random(T) < attack_frac
    target = (truth + rng.integers(1, C, size=T)) % C
    y = y.copy()
    sel = adv[w] & attacked[t]
    y[sel] = target[t[sel]]
    return y, adv


def accuracy_per_worker(t, w, y, truth):
    """(accuracy, balanced accuracy = mean over true classes of the per-class accuracy) per worker."""
    hit = pd.Series(y == truth[t])
    per_class = hit.groupby([w, truth[t]]).mean().groupby(level=0).mean()
    return hit.groupby(w).mean().to_numpy(), per_class.to_numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crowds", nargs="+", default=[*list(ZHENG), "cifar10n"])
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.4])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--out", default=None, help="write the tidy results to this CSV")
    args = ap.parse_args(argv)
    rows = []
    for name in args.crowds:
        t, w, y, truth, C = load_crowd(name)
        M = w.max() + 1
        acc, bal = accuracy_per_worker(t, w, y, truth)
        t0 = time.perf_counter()
        sp = spammer_scores(t, w, y, C)
        ts = time.perf_counter() - t0
        t0 = time.perf_counter()
        sk = mmsr_skills(t, w, y, C)
        tm = time.perf_counter() - t0
        t0 = time.perf_counter()
        cb = colluding_blocs(t, w, y, C, skills=sk)
        tc = time.perf_counter() - t0
        print(f"\n== {name}: {len(t)} labels, {M} workers, {t.max() + 1} items, C={C}; "
              f"spammer_scores {ts:.2f}s, mmsr_skills {tm:.2f}s, colluding_blocs {tc:.2f}s (skills given)")
        print(f"   clean: {sp.spammer.sum()} flagged as spammers "
              f"(accuracy {np.round(acc[sp.spammer], 2).tolist()}, "
              f"balanced accuracy {np.round(bal[sp.spammer], 2).tolist()}, "
              f"n_labels {sp.n_labels[sp.spammer].tolist()}), {cb.colluder.sum()} as colluders "
              f"(rho {cb.attrs['rho']:.2f} +- {cb.attrs['rho_se']:.2f})")
        rows.append({"crowd": name, "attack": "clean", "frac": 0.0, "seed": -1, "recall": np.nan,
                         "fpr_spam": sp.spammer.mean(), "fpr_bloc": cb.colluder.mean(), "auc_mmsr": np.nan,
                         "rho": cb.attrs["rho"], "s_spam": ts, "s_bloc": tc, "s_mmsr": tm})
        for frac in args.fractions:
            for seed in args.seeds:
                rng = np.random.default_rng(seed)
                for attack in ("spammers", "bloc"):
                    if attack == "spammers":
                        y2, adv = inject_spammers(t, w, y, C, frac, rng)
                    else:
                        y2, adv = inject_bloc(t, w, y, truth, C, frac, rng)
                    t0 = time.perf_counter()
                    sk = mmsr_skills(t, w, y2, C, random_state=seed)
                    tm = time.perf_counter() - t0
                    auc = roc_auc_score(adv, -np.nan_to_num(sk, nan=np.nanmedian(sk)))
                    t0 = time.perf_counter()
                    if attack == "spammers":
                        flag = spammer_scores(t, w, y2, C, random_state=seed).spammer.to_numpy()
                        rho = np.nan
                    else:
                        df = colluding_blocs(t, w, y2, C, skills=sk, random_state=seed)
                        flag, rho = df.colluder.to_numpy(), df.attrs["rho"]
                        g, cons, det = df.group.to_numpy(), df.consistent.to_numpy(), df.attrs["detected"]
                        # the flags had the side been chosen by MMSR alone, or by unanimity alone
                        su, sm = df.attrs["side_unanimity"], df.attrs["side_mmsr"]
                        flag_u = (g == su) & cons & det & (su >= 0)
                        flag_m = (g == sm) & cons & det & (sm >= 0)
                    dt = time.perf_counter() - t0
                    good = ~adv & (bal >= (1 + 1 / C) / 2)
                    extra = {}
                    if attack == "bloc":
                        extra = {"recall_mmsr": flag_m[adv].mean(), "fpr_mmsr": flag_m[~adv].mean(),
                                     "recall_u": flag_u[adv].mean(), "fpr_u": flag_u[~adv].mean()}
                    rows.append(dict(crowd=name, attack=attack, frac=frac, seed=seed, recall=flag[adv].mean(),
                                     fpr=flag[~adv].mean(), fpr_good=flag[good].mean(), **extra, auc_mmsr=auc,
                                     rho=rho, s=dt, s_mmsr=tm))
    res = pd.DataFrame(rows)
    if args.out:
        res.to_csv(args.out, index=False)
    inj = res[res.attack != "clean"]
    cols = ["recall", "fpr", "fpr_good", "recall_mmsr", "fpr_mmsr", "recall_u", "fpr_u", "auc_mmsr", "rho", "s",
            "s_mmsr"]
    table = inj.groupby(["crowd", "attack", "frac"])[cols].mean()
    pd.set_option("display.width", 200)
    print("\n", table.round(3).to_string())


if __name__ == "__main__":
    main()
