"""Annotators: each simulated behaviour does what the threat model says; replay only answers what was seen;
the crowd never asks twice and never shows a holdout item."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robust_al.annotators import (BenignAnnotator, ColludingAnnotator, Crowd, HoldoutLeak, MaliciousAnnotator,
                                  SpammerAnnotator, replayed_crowd)
from robust_al.store import RunStore

N, C = 4000, 5
TRUTH = {i: i % C for i in range(N)}
ITEMS = list(range(N))


def labels(annotator, items=ITEMS):
    return np.array([a.label for a in annotator.annotate(items)])


def test_benign_errs_with_probability_pr_and_uniformly():
    got = labels(BenignAnnotator("b", TRUTH, C, pr=0.2, seed=1))
    truth = np.array([TRUTH[i] for i in ITEMS])
    wrong = got != truth
    assert abs(wrong.mean() - 0.2) < 0.03
    # wrong answers spread over the other classes: true class 0 -> 1..4 each ~ a quarter
    counts = np.bincount(got[(truth == 0) & wrong], minlength=C)[1:]
    assert counts.min() > 0.15 * counts.sum()


def test_malicious_always_maps_target_and_is_honest_otherwise():
    got = labels(MaliciousAnnotator("m", TRUTH, C, target=2, to=4, pr=0.0, seed=0))
    truth = np.array([TRUTH[i] for i in ITEMS])
    assert (got[truth == 2] == 4).all()
    assert (got[truth != 2] == truth[truth != 2]).all()


def test_spammer_is_uniform_and_uninformative():
    got = labels(SpammerAnnotator("s", TRUTH, C, seed=0))
    assert abs((got == np.array([TRUTH[i] for i in ITEMS])).mean() - 1 / C) < 0.03
    assert np.bincount(got, minlength=C).min() > 0.8 * N / C


def test_colluders_give_the_same_wrong_label_on_the_same_items():
    a = labels(ColludingAnnotator("c0", TRUTH, C, group="g", rate=0.3, pr=0.0, seed=3))
    b = labels(ColludingAnnotator("c1", TRUTH, C, group="g", rate=0.3, pr=0.0, seed=3))
    truth = np.array([TRUTH[i] for i in ITEMS])
    assert (a == b).all()
    assert abs((a != truth).mean() - 0.3) < 0.03


def test_answers_depend_only_on_seed_worker_and_item():
    w = BenignAnnotator("b", TRUTH, C, pr=0.5, seed=7)
    forward = labels(w, ITEMS[:300])
    backward = labels(w, ITEMS[:300][::-1])[::-1]
    assert (forward == backward).all()
    assert (labels(BenignAnnotator("b", TRUTH, C, pr=0.5, seed=7), ITEMS[:300]) == forward).all()


def test_replayed_worker_answers_only_items_it_saw():
    rec = pd.DataFrame({"task": [1, 2, 2, 3], "worker": ["w1", "w1", "w2", "w2"], "label": [0, 1, 1, 2]})
    crowd = {a.worker_id: a for a in replayed_crowd(rec)}
    assert [a.label for a in crowd["w1"].annotate([1, 2])] == [0, 1]
    assert not crowd["w1"].can_answer(3)
    with pytest.raises(KeyError, match="never labeled item 3"):
        crowd["w1"].annotate([3])


def test_crowd_asks_k_distinct_labelers_and_never_twice(tmp_path):
    store = RunStore(tmp_path)
    workers = [BenignAnnotator(f"b{k}", TRUTH, C, pr=0.1) for k in range(6)]
    crowd = Crowd(workers, store, seed=0, k=3)
    first = crowd.ask(range(50), 0, "query", lambda w: True)
    assert len(first) == 150 and crowd.asked == 150
    per_item = pd.DataFrame([a.__dict__ for a in first]).groupby("item_id")["worker"].nunique()
    assert (per_item == 3).all()
    # a new process (same store, same seed) asking the same questions gets them from the store
    again = Crowd(workers, store, seed=0, k=3)
    second = again.ask(range(50), 0, "query", lambda w: True)
    assert again.asked == 0 and sorted(map(tuple, (a.__dict__.values() for a in second))) == \
        sorted(map(tuple, (a.__dict__.values() for a in first)))


def test_crowd_routes_nothing_to_labelers_under_the_threshold(tmp_path):
    workers = [BenignAnnotator(f"b{k}", TRUTH, C) for k in range(4)]
    crowd = Crowd(workers, RunStore(tmp_path), seed=0, k=2)
    routed_out = {"b0", "b3"}
    answers = crowd.ask(range(100), 0, "query", lambda w: w not in routed_out)
    assert {a.worker for a in answers} == {"b1", "b2"}


def test_crowd_refuses_holdout_items(tmp_path):
    crowd = Crowd([BenignAnnotator("b", TRUTH, C)], RunStore(tmp_path), k=1)
    crowd.forbidden = {5}
    with pytest.raises(HoldoutLeak):
        crowd.ask([4, 5], 0, "query", lambda w: True)
    assert RunStore(tmp_path).annotations().empty


from template_crowd import CrowdContract  # noqa: E402


class TestSimulatedCrowd(CrowdContract):
    def make_crowd(self, tmp_path, k):
        workers = [BenignAnnotator(f"b{i}", TRUTH, C, pr=0.1) for i in range(5)]
        return Crowd(workers, RunStore(tmp_path / "run"), seed=0, k=k), list(ITEMS[:10])


class TestReplayedCrowd(CrowdContract):
    def make_crowd(self, tmp_path, k):
        items = list(range(10))
        recorded = pd.DataFrame([(i, f"r{w}", (i + w) % C) for i in items for w in range(4)],
                                columns=["task", "worker", "label"])
        return Crowd(replayed_crowd(recorded), RunStore(tmp_path / "run"), seed=0, k=k), items


class _LosesAnswersAtTheEnd(Crowd):
    def finish(self):  # stores an answer nobody gave
        self.store.add_annotations([(9, "b0", 0)], 0, "query")


class _SyncsForever(Crowd):
    def sync(self):
        return 1


@pytest.mark.parametrize("broken", [_LosesAnswersAtTheEnd, _SyncsForever])
def test_the_contract_refuses_a_crowd_that_stores_or_pulls_what_nobody_asked(tmp_path, broken):
    class Broken(CrowdContract):
        def make_crowd(self, tmp_path, k):
            workers = [BenignAnnotator(f"b{i}", TRUTH, C, pr=0.1) for i in range(5)]
            return broken(workers, RunStore(tmp_path / "run"), seed=0, k=k), list(ITEMS[:10])

    with pytest.raises(AssertionError):
        Broken().test_nothing_pending_at_the_start_or_the_end(tmp_path)


class _FakeLabelStudio:
    """The parts of ``LabelStudioClient`` a ``LabelStudioCrowd`` without webhooks, media or an attached project
    calls, in memory, with people in it: ``people`` maps a user id to how that person labels an item. Every
    person ``at_work`` annotates each task they are served, in a per-task rotation, until the task holds its
    project's ``maximum_annotations`` (the server then stops serving it); ``work()`` lets them go through every
    open task again (answers given while no batch waits)."""

    def __init__(self, people: dict[int, object]):
        self.people, self.at_work = people, list(people)
        self.projects, self.tasks, self.annotations = {}, {}, []  # tasks: id -> (project id, item id)
        self.exports = 0

    def create_project(self, title, class_names, maximum_annotations=1, **_):
        from robust_al.labelstudio.client import Project

        proj = Project(len(self.projects) + 1, title, tuple(class_names), int(maximum_annotations))
        self.projects[proj.id] = proj
        return proj

    def get_project(self, project_id, attached=False):
        return self.projects[int(project_id)]

    def import_tasks(self, proj, items, model_version=""):
        ids = []
        for it in items:
            assert "item_id" not in it  # the campaign's tasks never carry their item id
            ids.append(len(self.tasks) + 1)
            self.tasks[ids[-1]] = (proj.id, int(self.store.get_meta("ls_pending_imports")[str(proj.id)]["items"]
                                                [it["row"]]))
        self.work()
        return ids

    def work(self):
        from robust_al.labelstudio.client import LSAnnotation

        for tid, (pid, item) in self.tasks.items():
            held = [a.user_id for a in self.annotations if a.task_id == tid]
            turn = tid % max(len(self.at_work), 1)
            for uid in self.at_work[turn:] + self.at_work[:turn]:
                if len(held) < self.projects[pid].maximum_annotations and uid not in held:
                    held.append(uid)
                    self.annotations.append(LSAnnotation(item, uid, int(self.people[uid](item)),
                                                         len(self.annotations) + 1, "2024-01-01T00:00:00+00:00",
                                                         False, tid, uid))

    def export_annotations(self, proj, task_ids=None, since=None):  # the whole history: storing must dedupe
        self.exports += 1
        return [a for a in self.annotations if self.tasks[a.task_id][0] == proj.id
                and (task_ids is None or a.task_id in set(task_ids))]

    def list_users(self):
        return [{"id": u, "email": f"u{u}@example.com", "username": f"u{u}"} for u in self.people]


def _label_studio_crowd(tmp_path, people, k):
    pytest.importorskip("label_studio_sdk", reason="the labelstudio extra is not installed")
    from robust_al.annotators.labelstudio import LabelStudioCrowd

    store = RunStore(tmp_path / "run")
    crowd = LabelStudioCrowd(store, "http://127.0.0.1:9", "token", [str(c) for c in range(C)], k=k,
                             webhook=False, poll_seconds=0.0, wait_seconds=5.0)
    crowd.client = server = _FakeLabelStudio(people)
    server.store = store  # which item an import row is (task data carries no item id)
    return crowd, server, store


def test_the_label_studio_crowd_asks_k_people_per_item_and_stores_each_answer_once(tmp_path):
    # its behaviour against a real server and people: tests/test_labelstudio.py; here the crowd's own logic
    people = {1: lambda i: TRUTH[i], 2: lambda i: TRUTH[i], 3: lambda i: (TRUTH[i] + 1) % C}
    crowd, server, store = _label_studio_crowd(tmp_path, people, k=2)
    assert crowd.workers == [] and crowd.adopt_existing() == [] and crowd.sync() == 0
    answers = crowd.ask(range(6), 0, "query", lambda w: True)
    # one task per item in a project that takes k answers; k different people per item, as they answered
    assert len(server.tasks) == 6 and [p.maximum_annotations for p in server.projects.values()] == [2]
    by_item = pd.DataFrame([a.__dict__ for a in answers]).groupby("item_id")["worker"].agg(list)
    assert sorted(by_item.index) == list(range(6)) and all(len(set(ws)) == 2 for ws in by_item)
    assert all(a.label == people[int(a.worker[2:])](a.item_id) for a in answers)
    assert crowd.workers == ["ls1", "ls2", "ls3"] and crowd.asked == 12
    stored = store.annotations()
    assert sorted(zip(stored["task"], stored["worker"], stored["label"])) == \
        sorted((a.item_id, a.worker, a.label) for a in answers)
    # asked again (a resumed campaign): no new task, nothing stored twice, the same answers
    again = crowd.ask(range(6), 0, "query", lambda w: True)
    assert len(server.tasks) == 6 and len(store.annotations()) == 12
    assert sorted(again, key=str) == sorted(answers, key=str)


def test_the_label_studio_crowd_keeps_but_does_not_return_what_it_must_not_use(tmp_path):
    people = {1: lambda i: TRUTH[i], 2: lambda i: TRUTH[i], 3: lambda i: (TRUTH[i] + 1) % C}
    crowd, server, store = _label_studio_crowd(tmp_path, people, k=2)
    answers = crowd.ask(range(6), 0, "query", lambda w: w != "ls3")
    # a routed-out person cannot be kept away from a task: their answer is stored, takes one of its k slots
    # (the server stops serving the task), and is not returned
    assert "ls3" not in {a.worker for a in answers} and "ls3" in set(store.annotations()["worker"])
    got = pd.Series([a.item_id for a in answers]).value_counts().reindex(range(6), fill_value=0)
    by_ls3 = set(store.annotations().query("worker == 'ls3'")["task"])
    assert by_ls3 and got.to_dict() == {i: 2 - (i in by_ls3) for i in range(6)}
    # re-examination (a project taking 3 answers, where everyone answers): a person cannot be excluded from an
    # item, nor kept from answering it twice; such answers are not used (a second answer on an item is kept in
    # the store's change log only)
    before = set(zip(store.annotations()["task"], store.annotations()["worker"]))
    crowd.wait_seconds = 0.5  # see test_a_reexamination_task_the_server_holds_full_ends_the_wait
    reexam = crowd.ask([0, 1], 1, "reexam", lambda w: True, n_per_item=3, exclude={0: {"ls1"}})
    assert sum(pid == 2 for pid, _ in server.tasks.values()) == 2 and len(server.annotations) == 12 + 6
    fresh = {(i, w) for i in (0, 1) for w in ("ls1", "ls2", "ls3") if (i, w) not in before} - {(0, "ls1")}
    assert {(a.item_id, a.worker) for a in reexam} == fresh and fresh
    # nobody allowed: the queue must stay coverable, so everyone is eligible
    assert crowd.eligible_workers(lambda w: False) == crowd.workers == ["ls1", "ls2", "ls3"]


def test_the_label_studio_crowd_never_shows_a_holdout_item(tmp_path):
    crowd, server, store = _label_studio_crowd(tmp_path, {1: lambda i: TRUTH[i]}, k=1)
    crowd.forbidden = {5}
    assert crowd.answerable(np.array([4, 5, 6]), lambda w: True).tolist() == [True, False, True]
    with pytest.raises(HoldoutLeak):
        crowd.ask([4, 5], 0, "query", lambda w: True)
    assert server.tasks == {} and store.annotations().empty  # refused before anything reached the server


def test_the_label_studio_crowd_pulls_answers_given_after_its_batch_closed(tmp_path):
    people = {1: lambda i: TRUTH[i], 2: lambda i: (TRUTH[i] + 2) % C}
    crowd, server, store = _label_studio_crowd(tmp_path, people, k=2)
    crowd.wait_seconds = 0.0
    server.at_work = [1]  # person 2 is away: the batch closes with one answer per item
    answers = crowd.ask(range(4), 0, "query", lambda w: True)
    assert {a.worker for a in answers} == {"ls1"} and len(answers) == 4
    server.at_work = [1, 2]
    server.work()  # person 2 answers while no batch waits
    assert crowd.sync() == 4 and crowd.sync() == 0  # pulled once
    late = store.annotations()
    late = late[late["worker"] == "ls2"]
    assert sorted(zip(late["task"], late["label"])) == [(i, people[2](i)) for i in range(4)]
    assert set(late["iteration"]) == {0} and set(late["purpose"]) == {"query"}  # filed under the batch asked
    assert store.late_answers() == 4
    # finish stores what is still on its way too, once
    tid = len(server.tasks) + 1
    server.tasks[tid] = (1, 7)
    store.set_ls_tasks(1, [7], [tid], 0, "query")  # the campaign's task (answers on anyone else's are not read)
    server.work()
    crowd.finish()
    assert len(store.annotations()) == 10 and crowd.sync() == 0


def test_a_reexamination_task_the_server_holds_full_ends_the_wait(tmp_path):
    people = {1: lambda i: TRUTH[i], 2: lambda i: TRUTH[i], 3: lambda i: TRUTH[i]}
    crowd, server, _ = _label_studio_crowd(tmp_path, people, k=2)
    crowd.ask(range(3), 0, "query", lambda w: True)
    crowd.wait_seconds, server.exports = 2.0, 0
    crowd.ask(range(3), 1, "reexam", lambda w: True, n_per_item=3)
    # every re-examination task holds its 3 answers after the first poll: Label Studio serves it to nobody else
    assert all(sum(a.task_id == t for a in server.annotations) == 3 for t, (p, _) in server.tasks.items() if p == 2)
    assert server.exports == 1


def test_an_answer_delivered_again_adds_no_change_row(tmp_path):
    people = {1: lambda i: TRUTH[i], 2: lambda i: TRUTH[i]}
    crowd, _, store = _label_studio_crowd(tmp_path, people, k=2)
    crowd.ask([0], 0, "query", lambda w: True)
    crowd.wait_seconds = 0.0
    crowd.ask([0], 1, "reexam", lambda w: True, n_per_item=2)  # both answer again: two repeats
    for _ in range(3):
        crowd.poll_answers(crowd.project("reexam", 2), {0: 2}, 1, "reexam")
    rows = store.db.execute("SELECT external_id, COUNT(*) FROM annotation_changes GROUP BY external_id").fetchall()
    assert len(rows) == 4 and {n for _, n in rows} == {1}, rows
