"""Benchmark (not a test): what a campaign pays for Label Studio on this machine.

Starts a real server (its own venv; run ``robust-al labelstudio install`` first), then prints seconds to
  - start it (from the migrated template; ``--cold`` also times building a fresh template, ~45 s),
  - import 10k tasks with pre-annotations (predictions),
  - post one annotation as an invited annotator (median of ``--annotations`` posts, which make the 1k),
  - pull the 1k annotations: the whole-project export (JSON_MIN and JSON), the task-filtered export of one
    batch, and the ``since`` pull (data-manager query + filtered export),
  - deliver a webhook: from posting an annotation to the listener holding its event,
  - restart the server on the same data directory.

    python pipelines/bench_labelstudio.py                     # 10k tasks, 1k annotations
    python pipelines/bench_labelstudio.py --tasks 2000 --annotations 200 --disk

Writes the figures as JSON with ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from robust_al.labelstudio import server as ls_server
from robust_al.labelstudio.client import LabelStudioClient
from robust_al.labelstudio.users import annotate, create_annotator
from robust_al.labelstudio.webhook import WebhookListener

CLASSES = [str(d) for d in range(10)]


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t


def campaign_latency(srv, run_dir: Path) -> list[float]:
    """A small campaign against the server with 5 simulated users (one malicious); for each batch, seconds
    from the last annotation Label Studio recorded to the trust update the campaign stored."""

    from robust_al.annotators.simulated import BenignAnnotator, MaliciousAnnotator, truth_map
    from robust_al.campaign import Campaign
    from robust_al.config import load_config
    from robust_al.data.loaders import load_digits_dataset
    from robust_al.labelstudio.client import parse_time
    from robust_al.labelstudio.simulate import SimulatedUsers

    ds = load_digits_dataset()
    truth = truth_map(ds.train.ids, ds.train.y)
    crowd = [BenignAnnotator(f"bench-benign{i}", truth, 10, pr=0.05) for i in range(4)]
    crowd.append(MaliciousAnnotator("bench-malicious", truth, 10, target=1, to=7, pr=0.05))
    users = SimulatedUsers(srv.url, srv.token, crowd, ds.train.class_names,
                           title_prefix="robust-al campaign ls-bench", run_dir=run_dir).start()
    os.environ["ROBUST_AL_BENCH_TOKEN"] = srv.token
    cfg = load_config(data={"name": "ls-bench", "holdout": {"size": 60}, "query": {"initial": 30, "batch": 30},
                            "annotators": {"kind": "labelstudio", "k": 3, "labelstudio": {
                                "url": srv.url, "token_env": "ROBUST_AL_BENCH_TOKEN", "poll_seconds": 1.0}},
                            "model": {"epochs": 10}, "stop": {"budget": 360}})
    camp = Campaign.create(cfg, run_dir, dataset=ds, echo=None)
    camp.run(progress=False)
    users.stop()
    camp.crowd.close()
    # per iteration: from its last answer's update in Label Studio to the loop's first trust event
    answered = camp.store.answer_update_times("query")
    stamps = answered["updated_at"].map(lambda u: parse_time(u).timestamp())
    last = stamps.groupby(answered["iteration"]).max()
    first_update = camp.store.trust_events().groupby("iteration")["created_at"].min()
    out = [float(first_update[it] - t) for it, t in last.items() if it in first_update.index]
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--annotations", type=int, default=1_000)
    ap.add_argument("--annotators", type=int, default=3)
    ap.add_argument("--webhooks", type=int, default=50, help="annotations whose webhook latency is timed")
    ap.add_argument("--batch", type=int, default=100, help="tasks in the batch pulled by the filtered export")
    ap.add_argument("--disk", action="store_true", help="data directory on disk instead of /dev/shm")
    ap.add_argument("--cold", action="store_true", help="also time building a fresh template (migrations)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not ls_server.installed():
        raise SystemExit(f"label-studio is not installed at {ls_server.executable()}: "
                         "run `robust-al labelstudio install` first")

    figures: dict[str, float] = {}
    use_shm = os.path.isdir("/dev/shm") and not args.disk
    base = Path(tempfile.mkdtemp(prefix="robust-al-lsbench-", dir="/dev/shm" if use_shm else None))
    try:
        if args.cold:
            cold = ls_server.LabelStudioServer(template=base / "template")
            _, figures["first_start_with_migrations_s"] = timed(cold.start, base / "cold")
            cold.stop()
        srv = ls_server.LabelStudioServer()
        _, figures["start_from_template_s"] = timed(srv.start, base / "labelstudio")
        print(f"server {srv.url} (data on {'tmpfs' if use_shm else 'disk'})", flush=True)
        c = LabelStudioClient.for_server(srv)
        p = c.create_project("benchmark", CLASSES, maximum_annotations=args.annotators)
        items = [{"item_id": i, "prediction": {"label": i % 10, "score": 0.5}} for i in range(args.tasks)]
        task_ids, figures["import_tasks_s"] = timed(c.import_tasks, p, items)
        print(f"import {args.tasks} tasks with predictions: {figures['import_tasks_s']:.2f} s", flush=True)

        users = [create_annotator(srv, f"bench{k}@example.com", f"bench-password-{k}")
                 for k in range(args.annotators)]
        # the annotations: each annotator labels the same tasks (overlap), one POST each, no keep-alive
        n_tasks = -(-args.annotations // args.annotators)
        post_s = []
        done = 0
        for j in range(n_tasks):
            for uid, tok in users:
                if done == args.annotations:
                    break
                _, dt = timed(annotate, srv.url, tok, task_ids[j], CLASSES[(j + uid) % 10])
                post_s.append(dt)
                done += 1
        figures["post_annotation_median_s"] = statistics.median(post_s)
        figures["post_annotations_total_s"] = sum(post_s)
        print(f"post {done} annotations: {sum(post_s):.1f} s, median {1e3 * statistics.median(post_s):.0f} ms",
              flush=True)

        rows, figures["export_json_min_s"] = timed(c.export, p, export_type="JSON_MIN")
        assert len(rows) == done, (len(rows), done)
        anns, figures["export_json_s"] = timed(c.export_annotations, p)
        assert len(anns) == done
        print(f"export {done} annotations: JSON_MIN {figures['export_json_min_s']:.2f} s, "
              f"JSON + convert {figures['export_json_s']:.2f} s", flush=True)
        batch = task_ids[max(0, n_tasks - args.batch):n_tasks]
        got, figures["export_batch_s"] = timed(c.export_annotations, p, task_ids=batch)
        print(f"export the annotations of one batch of {len(batch)} tasks ({len(got)} annotations): "
              f"{figures['export_batch_s']:.2f} s", flush=True)
        since = max(a.updated for a in anns)
        _, figures["since_nothing_new_s"] = timed(c.export_annotations, p, since=since)
        for _uid, tok in users:
            annotate(srv.url, tok, task_ids[n_tasks], CLASSES[0])
        new, figures["since_pull_s"] = timed(c.export_annotations, p, since=since)
        assert len(new) == len(users), new
        print(f"pull since the last pull ({len(new)} new among {args.tasks} tasks): "
              f"{figures['since_pull_s']:.2f} s (nothing new: {figures['since_nothing_new_s']:.2f} s)", flush=True)

        with WebhookListener() as hook:
            c.create_webhook(p, hook.url)
            lat, post_hook = [], []
            uid, tok = users[0]
            for j in range(n_tasks + 1, n_tasks + 1 + args.webhooks):
                t0 = time.time()
                ann = annotate(srv.url, tok, task_ids[j], CLASSES[1])
                post_hook.append(time.time() - t0)
                assert hook.wait(10), "no webhook within 10 s"  # Label Studio rings before the POST returns
                lat.append(time.time() - t0)
                assert hook.take() == ([ann["id"]], False)
            figures["webhook_latency_median_s"] = statistics.median(lat)
            figures["webhook_latency_max_s"] = max(lat)
            figures["post_annotation_with_webhook_median_s"] = statistics.median(post_hook)
            print(f"webhook: post -> event received median {1e3 * statistics.median(lat):.0f} ms "
                  f"(max {1e3 * max(lat):.0f} ms); the POST itself takes "
                  f"{1e3 * statistics.median(post_hook):.0f} ms with a webhook", flush=True)

        c.close()
        lat = campaign_latency(srv, Path(tempfile.mkdtemp(prefix="robust-al-bench-run-")))
        figures["annotation_to_trust_update_median_s"] = statistics.median(lat)
        figures["annotation_to_trust_update_max_s"] = max(lat)
        print(f"end to end, last annotation of a batch -> trust update stored (digits campaign, MLP, DeepFool): "
              f"median {statistics.median(lat):.2f} s, max {max(lat):.2f} s over {len(lat)} batches", flush=True)
        _, figures["restart_s"] = timed(srv.restart)
        print(f"restart on the same data: {figures['restart_s']:.2f} s", flush=True)
        srv.stop()
        figures["first_start_with_migrations_s"] = figures.get("first_start_with_migrations_s", float("nan"))
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}, indent=1))
        if args.out:
            args.out.write_text(json.dumps({
                "figures": figures, "tasks": args.tasks, "annotations": done, "tmpfs": use_shm,
                "python": platform.python_version(), "cpus": os.cpu_count(),
                "when": datetime.now(timezone.utc).isoformat()}, indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
