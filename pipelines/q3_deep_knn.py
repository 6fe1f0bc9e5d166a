"""Deep k-NN (Peri et al. 2020) measured offline on finished Q3 campaigns: a labeled item is flagged when its
inferred label is not the plurality of its k nearest labeled items in the penultimate space; precision and recall
on the injected poisons, per method and k. Writes deep_knn.json (figures, k values, versions) next to the runs.

    python pipelines/q3_deep_knn.py results/q3/eval-cifar2-transfer/q3-config
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np

from robust_al.campaign import Campaign
from robust_al.crowd.network import penultimate
from robust_al.evaluate.poisoning import deep_knn_flags
from robust_al.versions import versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="a q3 folder of finished campaigns (<method>-rep<r>/)")
    ap.add_argument("--k", type=int, nargs="+", default=[10, 25, 50, 100])
    args = ap.parse_args()
    per: dict[str, dict[int, list]] = {}
    for d in sorted(glob.glob(f"{args.results}/*-rep*")):
        method = Path(d).name.rsplit("-rep", 1)[0]
        c = Campaign.resume(d, echo=None)
        c.load_state()
        poisons = [int(i) for i in (c.store.get_meta("poison") or {}).get("item_ids", [])]
        post = c.inferred_labels()
        lab = c.ids_with("labeled")
        lab = lab[np.isin(lab, post.index.to_numpy())]
        y = post.loc[lab].to_numpy().argmax(1)
        Z = penultimate(c.net.model, c.pool.X[c.pool.positions(lab)])
        is_p = np.isin(lab, poisons)
        for k in args.k:
            flag = deep_knn_flags(Z, y, k, c.pool.n_classes)
            per.setdefault(method, {}).setdefault(k, []).append(
                {"seed": c.seed, "hit": int((flag & is_p).sum()), "flagged": int(flag.sum()),
                 "poisons": int(is_p.sum()), "labeled": int(len(lab))})
    summary = {}
    for method, byk in per.items():
        for k, rows in byk.items():
            hit, fl, P = (np.array([r[x] for r in rows]) for x in ("hit", "flagged", "poisons"))
            summary[f"{method} k={k}"] = {"recall": float(hit.sum() / max(P.sum(), 1)),
                                          "precision": float(hit.sum() / max(fl.sum(), 1)),
                                          "flagged_mean": float(fl.mean()), "poisons_labeled_mean": float(P.mean()),
                                          "runs": len(rows)}
            print(f"{method} k={k}: recall {summary[f'{method} k={k}']['recall']:.2f} precision "
                  f"{summary[f'{method} k={k}']['precision']:.2f} flagged {fl.mean():.1f} of "
                  f"{np.mean([r['labeled'] for r in rows]):.0f} labeled, poisons labeled {P.mean():.1f}")
    out = Path(args.results) / "deep_knn.json"
    out.write_text(json.dumps({"k": args.k, "summary": summary, "runs": per, "versions": versions()}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
