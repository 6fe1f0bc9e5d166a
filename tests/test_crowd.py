"""Truth inference and the classifier: correctness on known crowds and invariance to worker names."""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from robust_al.crowd import CrowdClassifier, NetworkTrainer, TrustWeightedDS


def synthetic_crowd(n_items=300, C=3, seed=0, accs=(0.9, 0.85, 0.8, 0.6, 0.35)):
    rng = np.random.default_rng(seed)
    truth = rng.integers(C, size=n_items)
    rows = []
    for w, acc in enumerate(accs):
        for i in range(n_items):
            if rng.random() < 0.7:
                label = truth[i] if rng.random() < acc else (truth[i] + 1 + rng.integers(C - 1)) % C
                rows.append((i, f"w{w}", int(label)))
    return pd.DataFrame(rows, columns=["task", "worker", "label"]), truth


def test_dawid_skene_matches_crowdkit_on_a_dense_crowd_and_beats_majority_vote():
    import warnings

    from crowdkit.aggregation import DawidSkene

    df, truth = synthetic_crowd()
    agg = TrustWeightedDS(3).fit(df)
    acc = (agg.labels_.to_numpy() == truth[agg.labels_.index]).mean()
    mv = TrustWeightedDS(3, method="mv").fit(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = DawidSkene().fit(df).labels_.sort_index()
    assert acc >= (ref.to_numpy() == truth[ref.index]).mean() - 0.01
    assert acc > (mv.labels_.to_numpy() == truth[mv.labels_.index]).mean() + 0.04
    est = {w: np.trace(agg.confusions_[w]) / 3 for w in agg.confusions_}
    assert est["w0"] > est["w2"] > est["w3"] > est["w4"]


def test_zero_weight_ignores_a_labeler():
    df, _truth = synthetic_crowd(accs=(0.9, 0.9, 0.0))  # w2 always wrong
    with_all = TrustWeightedDS(3).fit(df)
    without = TrustWeightedDS(3).fit(df, {"w2": 0.0})
    only_honest = TrustWeightedDS(3).fit(df[df["worker"] != "w2"])
    common = only_honest.posteriors_.index
    np.testing.assert_allclose(without.posteriors_.loc[common].to_numpy(),
                               only_honest.posteriors_.to_numpy(), atol=0.05)
    assert with_all.labels_.size >= without.labels_.size


def test_known_model_confusion_is_not_reestimated():
    df, _ = synthetic_crowd()
    model = df.groupby("task").head(1).assign(worker="__model__0")
    counts = np.array([[30.0, 5, 5], [5, 30, 5], [5, 5, 30]])
    agg = TrustWeightedDS(3).fit(pd.concat([df, model]), known_counts={"__model__0": counts})
    np.testing.assert_allclose(agg.confusions_["__model__0"], (counts + 1) / (counts.sum(1, keepdims=True) + 3))


@settings(max_examples=15, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(["ds", "mv"]))
def test_renaming_workers_changes_nothing(rnd, method):
    df, _ = synthetic_crowd(n_items=60, seed=rnd.randint(0, 1000))
    names = sorted(df["worker"].unique())
    new = names[:]
    rnd.shuffle(new)
    mapping = {a: f"x{b}" for a, b in zip(names, new)}
    a = TrustWeightedDS(3, method=method).fit(df)
    b = TrustWeightedDS(3, method=method).fit(df.assign(worker=df["worker"].map(mapping)))
    np.testing.assert_allclose(a.posteriors_.to_numpy(), b.posteriors_.to_numpy(), atol=1e-9)
    la, lb = a.leave_one_out(), b.leave_one_out()
    np.testing.assert_allclose(la.sort_values(["task", "label"])["agreement"].to_numpy(),
                               lb.sort_values(["task", "label"])["agreement"].to_numpy(), atol=1e-9)


def test_leave_one_out_ignores_the_workers_own_vote():
    # one item, two workers disagreeing: each one's agreement comes only from the other
    df = pd.DataFrame({"task": [0, 0] + list(range(1, 41)) * 2,
                       "worker": ["a", "b"] + ["a"] * 40 + ["b"] * 40,
                       "label": [0, 1] + [0, 1] * 20 + [0, 1] * 20})
    loo = TrustWeightedDS(2).fit(df).leave_one_out()
    first = loo[loo["task"] == 0].set_index("worker")
    assert first.loc["a", "agreement"] < 0.5 and first.loc["b", "agreement"] < 0.5


@settings(max_examples=5, deadline=None)
@given(st.floats(0.51, 0.99), st.floats(0.51, 0.99))
def test_hard_targets_train_on_the_inferred_label_not_the_prior(conf_a, conf_b):
    # with one label per item DS posteriors are mostly its prior; how sure they are must not move the model
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(40, 5)).astype(np.float32)
    label = (X[:, 0] > 0.5).astype(int)
    ann = pd.DataFrame({"task": np.arange(40), "worker": "w", "label": label})
    models = []
    for conf in (conf_a, conf_b):
        post = pd.DataFrame(np.where(np.eye(2)[label] == 1, conf, 1 - conf), columns=range(2))
        clf = CrowdClassifier(NetworkTrainer((5,), 2, epochs=3, min_steps=0, device="cpu"), TrustWeightedDS(2))
        clf.fit(X, np.arange(40), ann, posteriors=post, seed=1)
        models.append(clf.predict_proba(X))
    np.testing.assert_allclose(models[0], models[1], atol=1e-6)


@settings(max_examples=5, deadline=None)
@given(st.floats(0.55, 0.99))
def test_weighted_targets_equal_hard_ones_when_every_item_is_equally_sure(conf):
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(40, 5)).astype(np.float32)
    label = (X[:, 0] > 0.5).astype(int)
    ann = pd.DataFrame({"task": np.arange(40), "worker": "w", "label": label})
    post = pd.DataFrame(np.where(np.eye(2)[label] == 1, conf, 1 - conf), columns=range(2))
    out = {}
    for targets in ("hard", "weighted"):
        clf = CrowdClassifier(NetworkTrainer((5,), 2, epochs=3, min_steps=0, device="cpu"), TrustWeightedDS(2),
                              targets)
        clf.fit(X, np.arange(40), ann, posteriors=post, seed=1)
        out[targets] = clf.predict_proba(X)
    np.testing.assert_allclose(out["hard"], out["weighted"], atol=1e-5)


def test_weighted_targets_let_labels_near_chance_count_for_little():
    # half the items carry the true label, sure; the other half the wrong one, at a posterior barely over chance
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(200, 5)).astype(np.float32)
    truth = (X[:, 0] > 0.5).astype(int)
    shown = np.where(np.arange(200) % 2 == 0, truth, 1 - truth)
    sure = np.where(np.arange(200) % 2 == 0, 0.95, 0.52)
    post = pd.DataFrame(np.where(np.eye(2)[shown] == 1, sure[:, None], 1 - sure[:, None]), columns=range(2))
    ann = pd.DataFrame({"task": np.arange(200), "worker": "w", "label": shown})
    acc = {}
    for targets in ("hard", "weighted"):
        clf = CrowdClassifier(NetworkTrainer((5,), 2, epochs=40, device="cpu"), TrustWeightedDS(2), targets)
        clf.trainer.set_input_statistics(X)
        clf.fit(X, np.arange(200), ann, posteriors=post, seed=1)
        acc[targets] = (clf.predict(X) == truth).mean()
    assert acc["weighted"] > 0.9 > acc["hard"] + 0.2


def test_trust_targets_let_a_distrusted_labelers_items_count_for_little():
    # one label per item: an honest labeler (trust 0.95) and a colluder who flips every label it gives (trust
    # 0.55). DS is as sure of the colluder's items as of the honest ones; trust is not
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(200, 5)).astype(np.float32)
    truth = (X[:, 0] > 0.5).astype(int)
    liar = np.arange(200) % 20 < 9  # 45 % of the items
    ann = pd.DataFrame({"task": np.arange(200), "worker": np.where(liar, "colluder", "honest"),
                        "label": np.where(liar, 1 - truth, truth)})
    trust = {"honest": 0.95, "colluder": 0.55}
    acc = {}
    for targets in ("hard", "trust"):
        clf = CrowdClassifier(NetworkTrainer((5,), 2, epochs=40, device="cpu"), TrustWeightedDS(2), targets)
        clf.trainer.set_input_statistics(X)
        clf.fit(X, np.arange(200), ann, trust=trust, posteriors=clf.aggregate(ann), seed=1)
        acc[targets] = (clf.predict(X) == truth).mean()
    assert acc["trust"] > 0.9 > acc["hard"] + 0.1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["a", "b", "c"]), st.integers(0, 2)),
                min_size=1, max_size=20, unique_by=lambda r: r[:2]),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_trusted_certainty_is_a_probability_margin_that_grows_with_trust(rows, t_a, t_b):
    from robust_al.crowd.aggregate import trusted_certainty

    ann = pd.DataFrame(rows, columns=["task", "worker", "label"])
    labels = ann.groupby("task")["label"].first()
    trust = {"a": t_a, "b": t_b, "c": 0.9}
    w = trusted_certainty(ann, labels, trust.get, 3)
    assert ((w >= 0) & (w <= 1)).all() and list(w.index) == list(labels.index)
    higher = trusted_certainty(ann, labels, {**trust, "a": max(t_a, 0.99)}.get, 3)
    lone = ann.groupby("task")["worker"].agg(lambda s: list(s) == ["a"])  # items only "a" answered
    assert (higher[lone[lone].index] >= w[lone[lone].index] - 1e-12).all()
    at_chance = trusted_certainty(ann, labels, lambda _: 1 / 3, 3)
    np.testing.assert_allclose(at_chance, 0.0, atol=1e-9)  # labelers at chance vouch for nothing


def test_classifier_learns_from_crowd_labels_on_cpu():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    truth = (X[:, 0] + X[:, 1] > 0).astype(int)
    rows = [(i, f"w{w}", int(truth[i] if rng.random() < 0.8 else 1 - truth[i])) for i in range(300) for w in range(3)]
    ann = pd.DataFrame(rows, columns=["task", "worker", "label"])
    X01 = (X - X.min()) / (X.max() - X.min())
    clf = CrowdClassifier(NetworkTrainer((5,), 2, epochs=30, device="auto"), TrustWeightedDS(2))
    clf.trainer.set_input_statistics(X01)
    clf.fit(X01, np.arange(300), ann)
    assert clf.trainer.device.type in ("cpu", "cuda")
    assert (clf.predict(X01) == truth).mean() > 0.9
    assert clf.embed(X01).shape == (300, 128)
    assert clf.loss_history_[-1] < clf.loss_history_[0]


def test_a_frozen_network_trains_only_its_head_and_as_if_end_to_end():
    # the fixed features are computed once per fit; the model must be the one end-to-end training gives
    import torch

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(120, 3, 16, 16)).astype(np.float32)
    y = (X[:, 0].mean(axis=(1, 2)) > 0.5).astype(int)
    tr = NetworkTrainer((3, 16, 16), 2, network="frozen", epochs=3, min_steps=0, seed=0, device="cpu")
    tr.set_input_statistics(X)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.fit(X, y, seed=1)
    after = tr.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("head."))
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])
    # reference: the same steps through the whole network
    ref = NetworkTrainer((3, 16, 16), 2, network="frozen", epochs=3, min_steps=0, seed=0, device="cpu")
    ref.model.load_state_dict(before)
    opt = torch.optim.Adam([p for p in ref.model.parameters() if p.requires_grad], lr=ref.lr)
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    ref.model.train()
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    for _ in range(3):
        perm = torch.randperm(len(X), generator=gen)
        for s in range(0, len(perm), ref.batch_size):
            b = perm[s:s + ref.batch_size]
            loss = torch.nn.functional.cross_entropy(ref.model(Xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    np.testing.assert_allclose(tr.predict_proba(X), ref.predict_proba(X), atol=1e-5)


def test_frozen_features_are_cached_by_content_and_never_served_stale():
    # a campaign asks for the same pool's frozen features every iteration: the trunk must run once per row,
    # and a network with other weights or other input statistics must never read those rows
    import torch

    from robust_al.crowd.network import FEATURE_CACHE

    FEATURE_CACHE.clear()
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(50, 3, 16, 16)).astype(np.float32)
    tr = NetworkTrainer((3, 16, 16), 2, network="frozen", seed=0, device="cpu")
    tr.set_input_statistics(X)
    seen = []
    tr.model.features.register_forward_hook(lambda m, i, o: seen.append(len(o)))
    tr.model.eval()
    with torch.no_grad():
        direct = tr.model.features(tr.model.standardize(torch.as_tensor(X))).numpy()
        proba = torch.softmax(tr.model(torch.as_tensor(X)), 1).numpy()
    seen.clear()
    np.testing.assert_allclose(tr.embed(X[:20]), direct[:20], atol=1e-6)
    np.testing.assert_allclose(tr.predict_proba(X), proba, atol=1e-6)
    np.testing.assert_allclose(tr.embed(X[::-1]), direct[::-1], atol=1e-6)
    assert seen == [128, 128]  # each row through the trunk once (20 rows, then the other 30; padded passes)
    # a second network with the same weights (the poison check builds its own) reads the cache
    twin = NetworkTrainer((3, 16, 16), 2, network="frozen", seed=0, device="cpu")
    twin.set_input_statistics(X)
    twin.model.features.register_forward_hook(lambda m, i, o: seen.append(len(o)))
    np.testing.assert_allclose(twin.embed(X), direct, atol=1e-6)
    assert seen == [128, 128]
    # other statistics (or weights) are another namespace: computed afresh, and right
    tr.set_input_statistics(X * 0.5)
    with torch.no_grad():
        shifted = tr.model.features(tr.model.standardize(torch.as_tensor(X))).numpy()
    assert not np.allclose(shifted, direct)
    np.testing.assert_allclose(tr.embed(X), shifted, atol=1e-6)
    other = NetworkTrainer((3, 16, 16), 2, network="frozen", seed=1, device="cpu")
    other.set_input_statistics(X)
    with torch.no_grad():
        theirs = other.model.features(other.model.standardize(torch.as_tensor(X))).numpy()
    np.testing.assert_allclose(other.embed(X), theirs, atol=1e-6)


def test_a_rows_frozen_features_do_not_depend_on_the_rows_it_was_computed_with():
    # a resumed campaign fills the cache in another order than the uninterrupted one: the same bits either way
    from robust_al.crowd.network import FEATURE_CACHE

    X = np.random.default_rng(3).uniform(size=(40, 3, 16, 16)).astype(np.float32)
    tr = NetworkTrainer((3, 16, 16), 2, network="frozen", seed=0, device="cpu")
    tr.set_input_statistics(X)
    FEATURE_CACHE.clear()
    together = tr.embed(X)
    FEATURE_CACHE.clear()
    alone = np.concatenate([tr.embed(X[i:i + 1]) for i in range(5)] + [tr.embed(X[5:])])
    np.testing.assert_array_equal(alone, together)
