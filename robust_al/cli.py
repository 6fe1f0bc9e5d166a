"""Command line: ``robust-al run CONFIG [--set key=value] | --resume RUN_DIR``, ``status``, ``trust``, ``export``,
``predict``, ``report``, ``aggregate`` (labels only)."""
from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path

from robust_al.config import ConfigError, load_config


def _run(args: argparse.Namespace) -> int:
    from robust_al.campaign import Campaign

    if args.resume:
        if args.config:
            print("error: --resume takes the run directory only; its stored config is used (--set may change "
                  "the Label Studio connection: annotators.labelstudio.url, token_env, token_file, ...)",
                  file=sys.stderr)
            return 2
        campaign = Campaign.resume(args.resume, overrides=args.set)
    else:
        if not args.config:
            print("error: give a CONFIG file or --resume RUN_DIR", file=sys.stderr)
            return 2
        cfg = load_config(args.config, args.set)
        campaign = Campaign.create(cfg, args.run_dir)
    print(f"run directory: {campaign.run_dir}")
    try:
        campaign.run(progress=not args.no_progress)
    except sqlite3.Error as e:  # e.g. a full disk mid-run: what is stored stays stored
        from robust_al.store.sqlite import describe_sqlite_error

        print(f"error: {campaign.store.path}: {describe_sqlite_error(e)} (robust-al run --resume {campaign.run_dir})",
              file=sys.stderr)
        return 2
    except Exception as e:  # Label Studio went away (past the crowd's own retries): one line, no traceback
        if not _unreachable(e, campaign):
            raise
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the current write finished (each is one transaction)
        code = 143 if _terminated else 130
        print(f"\nstopped ({'SIGTERM' if _terminated else 'Ctrl-C'}); every answer is stored. Continue with:\n"
              f"  robust-al run --resume {campaign.run_dir}", file=sys.stderr)
        return code
    d = campaign.run_dir
    print(f"results: {d} (campaign.sqlite: every answer, trust event, metric and model)\n"
          f"next:    robust-al export {d}           # labels, annotations, labelers, model.pt\n"
          f"         robust-al report {d}           # HTML page + figures\n"
          f"         robust-al predict {d} INPUT    # the final model on new items (a .npy / .csv, images, a table)")
    return 0


_terminated = False


def _unreachable(e: BaseException, campaign) -> bool:
    """A Label Studio campaign's server stopped answering: print one line naming its URL (no transport
    traceback) and return True; any other error: False."""
    if not type(e).__module__.startswith("httpx"):
        return False
    import httpx

    if not isinstance(e, httpx.TransportError):
        return False
    from robust_al.labelstudio.server import unreachable_message

    ls = campaign.cfg.annotators.labelstudio
    print(f"error: {unreachable_message(ls.url if ls else '?', campaign.run_dir)}", file=sys.stderr)
    return True


def _on_sigterm(signum, frame) -> None:
    """SIGTERM stops a campaign as Ctrl-C does: between two writes, with a resume hint, exit 143."""
    global _terminated
    _terminated = True
    raise KeyboardInterrupt


def _status(args: argparse.Namespace) -> int:
    """The run's progress; for an unfinished Label Studio campaign, whether its server answers (one line on
    stderr naming the URL and exit 2 when it does not)."""
    from robust_al.report import status_text
    from robust_al.store import RunStore

    print(status_text(Path(args.run_dir)))
    store = RunStore(Path(args.run_dir), create=False)
    cfg = store.get_meta("config", {}) or {}
    metrics = store.metrics()
    store.close()
    ann = cfg.get("annotators", {}) or {}
    url = (ann.get("labelstudio") or {}).get("url")
    if ann.get("kind") == "labelstudio" and url and not (metrics and metrics[-1].get("stop")):
        from robust_al.labelstudio.server import LabelStudioError, check_reachable

        try:
            check_reachable(url, args.run_dir)
        except LabelStudioError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


def _trust(args: argparse.Namespace) -> int:
    from robust_al.report import trust_text

    print(trust_text(Path(args.run_dir)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from robust_al.report import write_report

    path = Path(args.results_dir)
    out = Path(args.out) if args.out else None
    if (path / "campaign.sqlite").exists():  # one campaign's run directory
        from robust_al.report.campaign import write_campaign_report

        print(write_campaign_report(path, out))
    else:
        print(write_report(path, out))
    return 0


def _export(args: argparse.Namespace) -> int:
    from robust_al.export import export_run
    from robust_al.export.tables import load_hint

    paths = export_run(Path(args.run_dir), args.format, Path(args.out) if args.out else None)
    for p in paths:
        print(p)
    if any(p.name == "model.pt" for p in paths):
        print(f"load the model: {load_hint(paths[0].parent)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from robust_al.export import predict_file

    print(predict_file(Path(args.run_dir), Path(args.input), Path(args.out) if args.out else None))
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    """Labels only: the input is read and aggregated whole before --out is created or written."""
    from robust_al.crowd.labels_only import aggregate_labels

    result = aggregate_labels(args.annotations, method=args.method, route=args.route, truth=args.truth,
                              random_state=args.seed)
    paths = result.write(args.out)
    print(result.summary())
    for p in paths:
        print(p)
    return 0


def _labelstudio(args: argparse.Namespace) -> int:
    from robust_al.labelstudio import server

    if args.ls_command == "install":
        return server.main_install()
    if args.ls_command == "serve":
        return server.main_serve(args.run_dir, port=args.port, files_root=args.files_root)
    if args.ls_command == "sync":
        from robust_al.campaign import Campaign

        # --url: the server moved (stored as the campaign's URL, as run --resume --set annotators.labelstudio.url)
        camp = Campaign.resume(args.run_dir, echo=None,
                               overrides=[f"annotators.labelstudio.url={args.url}"] if args.url else None)
        if camp.cfg.annotators.kind != "labelstudio":
            print(f"error: {args.run_dir} is not a Label Studio campaign (annotators.kind = "
                  f"{camp.cfg.annotators.kind!r}): nothing to sync", file=sys.stderr)
            return 2
        try:
            with camp.lock:
                new = camp.crowd.sync()
        except Exception as e:
            if not _unreachable(e, camp):
                raise
            return 2
        finally:
            camp.crowd.close()
        print(f"pulled {new} new annotation(s) into {camp.store.path}")
        return 0
    return _simulate(args)


def _simulate(args: argparse.Namespace) -> int:
    """Simulated labelers of the run's config (annotators.labelers) as real users of its Label Studio."""
    import time

    from robust_al.annotators.factory import simulated_labelers
    from robust_al.annotators.labelstudio import read_token
    from robust_al.annotators.simulated import truth_map
    from robust_al.data.loaders import load_dataset
    from robust_al.labelstudio.simulate import SimulatedUsers

    cfg = load_config(args.config, args.set)
    ls = cfg.annotators.labelstudio
    if cfg.annotators.kind != "labelstudio" or ls is None:
        print("error: the config's annotators.kind must be 'labelstudio'", file=sys.stderr)
        return 2
    run_dir = args.run_dir or cfg.resolved_run_dir()  # the campaign's store says which item a task shows
    from robust_al.labelstudio.server import check_reachable

    check_reachable(ls.url)
    token = read_token(ls.token_env, ls.token_file)
    if ls.project_id is not None:  # an attached project: its tasks are the pool, data.options.trusted_labels the truth
        import tempfile

        from robust_al.labelstudio.client import LabelStudioClient
        from robust_al.labelstudio.project_pool import dataset_from_project

        with LabelStudioClient(ls.url, token) as client, tempfile.TemporaryDirectory() as media:
            pool = dataset_from_project(client, ls.project_id, media, **cfg.data.options).dataset.train
        if not (pool.y >= 0).any():
            print(f"error: project {ls.project_id} has no known truth for simulated labelers to answer from: "
                  "give data.options.trusted_labels (a CSV task,label; simulated labelers answer only the tasks "
                  "it lists)", file=sys.stderr)
            return 2
    else:
        pool = load_dataset(cfg.data.name, **cfg.data.options).train
    behaviours = simulated_labelers(cfg.annotators.labelers, truth_map(pool.ids, pool.y), pool.n_classes, cfg.seed)
    # one thread answers for everyone, one task at a time: a pause of pace / n after each answer gives each
    # user one answer per ``pace`` seconds
    users = SimulatedUsers(ls.url, token, behaviours, pool.class_names,
                           password=args.password, title_prefix=f"{ls.title} {cfg.name}",
                           attached=ls.project_id, delay=args.seconds_per_answer / max(len(behaviours), 1),
                           run_dir=run_dir).start()
    print(f"{len(users.users)} simulated users answering at {ls.url}: "
          + ", ".join(f"{b.worker_id}=ls{uid}" for b, uid, _ in users.users) + " (Ctrl-C stops)", flush=True)
    import signal

    # Ctrl-C stops it even when started in the background (a shell starts those with SIGINT ignored, and
    # Python then installs no handler of its own)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        users.stop()
    waited = {w: sum(b - a for a, b in gaps) for w, gaps in users.idle_gaps.items()}
    print(f"posted {users.posted} annotations; seconds without a task between two tasks, per user: "
          + ", ".join(f"{w} {s:.1f}" for w, s in waited.items()))
    if args.report:
        import json

        Path(args.report).write_text(json.dumps({
            "posted": users.posted, "seconds_per_answer": args.seconds_per_answer,
            "users": {b.worker_id: f"ls{uid}" for b, uid, _ in users.users},
            "idle_gaps": users.idle_gaps}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robust-al", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or --resume) a campaign")
    run.add_argument("config", nargs="?", help="campaign YAML config")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set query.batch=20 (repeatable); with --resume only the "
                          "Label Studio connection: annotators.labelstudio.url, token_env, token_file, "
                          "poll_seconds, status_seconds, webhook")
    run.add_argument("--run-dir", help="where to write the run (default: runs/<name>-seed<seed>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or stopped campaign")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(fn=_run)
    st = sub.add_parser("status", help="iterations, labels used and accuracies of a run")
    st.add_argument("run_dir")
    st.set_defaults(fn=_status)
    tr = sub.add_parser("trust", help="the trust table of a run, with its history")
    tr.add_argument("run_dir")
    tr.set_defaults(fn=_trust)
    ex = sub.add_parser("export", help="a run's inferred labels, annotations, labelers and final model as files")
    ex.add_argument("run_dir")
    ex.add_argument("--format", choices=["csv", "jsonl", "crowdkit", "labelstudio"], default="csv",
                    help="csv/jsonl: labels, annotations, workers + model.pt/model.json; crowdkit: annotations.csv "
                         "(task,worker,label) only; labelstudio: tasks.json to import")
    ex.add_argument("--out", metavar="DIR", help="default: RUN_DIR/export")
    ex.set_defaults(fn=_export)
    pr = sub.add_parser("predict", help="the run's final model on new inputs: item,label,confidence,p_<class>...")
    pr.add_argument("run_dir")
    pr.add_argument("input", help=".npy or .csv features (a .csv may start with an item key column)")
    pr.add_argument("--out", metavar="FILE", help="default: RUN_DIR/predictions.csv")
    pr.set_defaults(fn=_predict)
    rp = sub.add_parser("report", help="static HTML page (index.html + PNGs) of one run or of evaluation results")
    rp.add_argument("results_dir", help="a run directory (holding campaign.sqlite), or a folder searched "
                                        "recursively for the summary.json of pipelines/robust_al_eval.py")
    rp.add_argument("--out", metavar="DIR", help="where to write index.html and its figures "
                                                 "(default: RUN_DIR/report or RESULTS_DIR/report)")
    rp.set_defaults(fn=_report)
    ag = sub.add_parser("aggregate", help="labels only: infer a label per item and a trust per labeler from a "
                                         "crowd's answers (a task,worker,label CSV)")
    ag.add_argument("annotations", help="CSV with a header: task (or item, question), worker, label (or answer)")
    ag.add_argument("--out", required=True, metavar="DIR", help="where to write labels.csv and workers.csv")
    ag.add_argument("--method", choices=["twds", "ds", "mv", "mmsr"], default="twds",
                    help="twds: robust-al's trust pipeline (default); ds / mv: its Dawid-Skene / majority vote "
                         "without trust weighting; mmsr: crowd-kit's MMSR")
    ag.add_argument("--route", action="store_true", help="leave labelers confidently under the routing threshold "
                                                         "out and infer the labels again")
    ag.add_argument("--truth", metavar="TRUTH.csv", help="task,truth CSV: print the labels' accuracy")
    ag.add_argument("--seed", type=int, default=0, help="random state (mmsr)")
    ag.set_defaults(fn=_aggregate)
    lsp = sub.add_parser("labelstudio", help="Label Studio: install | serve RUN_DIR | sync RUN_DIR | simulate CONFIG")
    ls_sub = lsp.add_subparsers(dest="ls_command", required=True)
    ls_sub.add_parser("install", help="create ~/.cache/robust-al/labelstudio-venv (or $ROBUST_AL_LS_VENV)")
    sv = ls_sub.add_parser("serve", help="serve RUN_DIR/labelstudio on 127.0.0.1 until Ctrl-C, on the same port at "
                                         "every start")
    sv.add_argument("run_dir")
    sv.add_argument("--port", type=int, help="default: the port RUN_DIR/labelstudio was served on before (kept in "
                    "RUN_DIR/labelstudio/port), a free one at the first start; a given port is kept for the next")
    sv.add_argument("--files-root", metavar="DIR", help="serve image files under DIR to the projects' labelers "
                    "(annotators.labelstudio.media: local-files with files_root: DIR; the images must be in a "
                    "subfolder of DIR)")
    sy = ls_sub.add_parser("sync", help="pull annotations made while the campaign was not running")
    sy.add_argument("run_dir")
    sy.add_argument("--url", help="the server's URL when it moved (stored as annotators.labelstudio.url)")
    sm = ls_sub.add_parser("simulate", help="sign up the config's simulated labelers as users and let them annotate")
    sm.add_argument("config")
    sm.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sm.add_argument("--password", default="simulated-pw-1", help="password of the simulated users (>= 8 chars)")
    sm.add_argument("--run-dir", metavar="RUN_DIR", help="the campaign's --run-dir, as given to robust-al run "
                    "(default: the same as run's): where the simulated users look up which item a task shows")
    sm.add_argument("--seconds-per-answer", type=float, default=0.0, metavar="S",
                    help="each user's pace: one answer every S seconds (0: as fast as the server serves)")
    sm.add_argument("--report", metavar="FILE", help="at Ctrl-C, write each user's waits (JSON): the spans between "
                    "two tasks in which the server had no task for them")
    lsp.set_defaults(fn=_labelstudio)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import signal

    from robust_al.store.lock import RunDirBusy

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunDirBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except ModuleNotFoundError as e:
        from robust_al.labelstudio import EXTRA_HINT, MissingExtra

        if isinstance(e, MissingExtra) or e.name in ("label_studio_sdk", "httpx"):
            print(f"error: {EXTRA_HINT}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
