"""Adversary detection from the agreement structure: spammers (cross-covariance, tutorial Alg. 1) and
colluding blocs (agreement-matrix block structure, MMSR second opinion), on seeded synthetic crowds and on
a real Zheng crowd with injected adversaries."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust_al.data.loaders import default_datasets_dir
from robust_al.trust.detect import colluding_blocs, mmsr_skills, pair_statistics, spammer_scores


def crowd(T=1500, M=40, C=4, per_item=(3, 5), acc=(0.55, 0.95), spam_frac=0.0, bloc_frac=0.0,
          attack_frac=0.5, seed=0):
    """Honest one-coin workers (accuracy uniform in ``acc``, errors uniform over the wrong classes), plus
    uniform-random spammers and/or a colluding bloc that gives one shared wrong label (drawn per item) on
    a random ``attack_frac`` of the items and answers honestly elsewhere.  Each item gets 3-5 labels from
    distinct random workers.  kind: 0 honest, 1 spammer, 2 colluder."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(C, size=T)
    accs = rng.uniform(*acc, size=M)
    kind = np.zeros(M, int)
    perm = rng.permutation(M)
    ns, nb = int(round(spam_frac * M)), int(round(bloc_frac * M))
    kind[perm[:ns]] = 1
    kind[perm[ns:ns + nb]] = 2
    attacked = rng.random(T) < attack_frac
    target = (truth + rng.integers(1, C, size=T)) % C
    k = rng.integers(per_item[0], per_item[1] + 1, size=T)
    t = np.repeat(np.arange(T), k)
    w = np.concatenate([rng.choice(M, size=kk, replace=False) for kk in k])
    right = rng.random(len(t)) < accs[w]
    y = np.where(right, truth[t], (truth[t] + rng.integers(1, C, size=len(t))) % C)
    y = np.where(kind[w] == 1, rng.integers(C, size=len(t)), y)
    y = np.where((kind[w] == 2) & attacked[t], target[t], y)
    return t, w, y, truth, kind


# ---------------------------------------------------------------------------------------------------------
# pair statistics
# ---------------------------------------------------------------------------------------------------------
def test_pair_covariance_is_the_unbiased_trace_cross_covariance():
    t = np.array([0, 0, 1, 1, 2, 2, 3, 3, 3])
    w = np.array([0, 1, 0, 1, 0, 1, 0, 1, 2])
    y = np.array([0, 0, 1, 1, 2, 0, 1, 2, 1])
    ps = pair_statistics(t, w, y, 3)
    row = np.flatnonzero((ps.m == 0) & (ps.mp == 1))[0]
    X, Z = np.eye(3)[[0, 1, 2, 1]], np.eye(3)[[0, 1, 0, 2]]
    want = ((X - X.mean(0)) * (Z - Z.mean(0))).sum() / 3
    assert ps.n[row] == 4 and ps.agree[row] == 2
    assert ps.c[row] == pytest.approx(want)
    # symmetric, and a pair sharing one item carries no covariance
    back = np.flatnonzero((ps.m == 1) & (ps.mp == 0))[0]
    assert ps.c[back] == pytest.approx(want)
    one = np.flatnonzero((ps.m == 0) & (ps.mp == 2))[0]
    assert ps.n[one] == 1 and np.isnan(ps.c[one]) and ps.w[one] == 0


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="n_classes"):
        spammer_scores([0, 0], [0, 1], [0, 2], 2)
    with pytest.raises(ValueError, match="one entry per answer"):
        spammer_scores([0, 0], [0], [0, 1], 2)
    with pytest.raises(ValueError, match="skills"):
        t, w, y, *_ = crowd(T=200, M=10, seed=0)
        colluding_blocs(t, w, y, 4, skills=np.zeros(3))


# ---------------------------------------------------------------------------------------------------------
# (a) spammers
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_spammers_flagged_and_no_honest(seed):
    t, w, y, _, kind = crowd(spam_frac=0.2, seed=seed)
    df = spammer_scores(t, w, y, 4)
    assert list(df.index) == list(range(40))
    flag = df["spammer"].to_numpy()
    assert flag[kind == 1].mean() >= 0.85
    assert not flag[kind == 0].any()
    # the rows of V: spammers near 0, honest near the high head
    assert df["norm_rel"][kind == 1].max() < 0.35 < df["norm_rel"][kind == 0].min()


def test_a_spammer_with_too_little_overlap_is_not_flagged():
    t, w, y, _, kind = crowd(spam_frac=0.2, seed=0)
    spam = np.flatnonzero(kind == 1)[0]
    rows = np.flatnonzero(w == spam)
    keep = np.ones(len(t), bool)
    keep[rows[4:]] = False                    # it keeps 4 answers: < 20 effective co-labels
    df = spammer_scores(t[keep], w[keep], y[keep], 4)
    assert df.loc[spam, "overlap"] < 20 and df.loc[spam, "cluster"] == -1
    assert not df.loc[spam, "spammer"]
    assert df["spammer"][kind == 1].sum() >= 6


def test_constant_answers_flag_only_when_the_items_vary():
    """Always answering class 0 ignores the item (a spammer) - unless all the items were class 0."""
    t, w, y, truth, _kind = crowd(seed=3)
    M = w.max() + 1
    zeros = np.flatnonzero(truth == 0)[:150]
    mixed = np.arange(150)
    t2 = np.concatenate([t, zeros, mixed])
    w2 = np.concatenate([w, np.full(150, M), np.full(150, M + 1)])
    y2 = np.concatenate([y, np.zeros(300, int)])
    df = spammer_scores(t2, w2, y2, 4)
    assert df.loc[M + 1, "spammer"]           # constant on mixed items: spammer
    assert not df.loc[M, "spammer"]           # constant on class-0 items only: no evidence
    assert not df["spammer"][:M].any()


def test_a_label_flipper_is_informative_not_a_spammer():
    t, w, y, truth, _ = crowd(seed=4)
    flip = w == 0
    y = y.copy()
    y[flip] = (truth[t[flip]] + 1) % 4        # always wrong, systematically
    df = spammer_scores(t, w, y, 4)
    assert not df["spammer"].any() and df.loc[0, "p_value"] < 1e-6


# ---------------------------------------------------------------------------------------------------------
# (b) colluding bloc
# ---------------------------------------------------------------------------------------------------------
def test_colluding_bloc_flagged_with_crowdkit_mmsr():
    t, w, y, _, kind = crowd(bloc_frac=0.3, seed=0)
    df = colluding_blocs(t, w, y, 4)          # skills from crowd-kit's MMSR (40 workers)
    col = df["colluder"].to_numpy()
    assert df.attrs["detected"] and df.attrs["rho"] < 0.4
    assert col[kind == 2].all() and not col[kind == 0].any()
    assert set(df.loc[col, "bloc"]) == {0} and (df.loc[~col, "bloc"] == -1).all()


@pytest.mark.parametrize("seed,C", [(1, 4), (2, 2)])
def test_colluding_bloc_flagged(seed, C):
    acc = (0.65, 0.95) if C == 2 else (0.55, 0.95)
    t, w, y, _, kind = crowd(bloc_frac=0.3, C=C, acc=acc, seed=seed)
    df = colluding_blocs(t, w, y, C, skills=mmsr_skills(t, w, y, C, method="port"), n_boot=100)
    col = df["colluder"].to_numpy()
    assert col[kind == 2].mean() >= 0.9 and not col[kind == 0].any()
    assert df.attrs["side_mmsr"] == df.attrs["side_unanimity"]


def test_a_bloc_near_half_the_crowd_fools_mmsr_and_the_veto_holds():
    """40% colluders: MMSR rates the bloc above the honest workers; by default nobody honest is flagged,
    and the unanimity check alone finds the bloc."""
    t, w, y, _, kind = crowd(bloc_frac=0.4, attack_frac=0.3, seed=0)
    sk = mmsr_skills(t, w, y, 4, method="port")
    df = colluding_blocs(t, w, y, 4, skills=sk)
    assert df.attrs["detected"] and df.attrs["side_mmsr"] != df.attrs["side_unanimity"]
    assert not df["colluder"].any()
    mmsr = colluding_blocs(t, w, y, 4, skills=sk, side="mmsr")["colluder"].to_numpy()
    assert mmsr[kind == 0].mean() >= 0.9 and not mmsr[kind == 2].any()   # MMSR alone flags the honest side
    alone = colluding_blocs(t, w, y, 4, skills=sk, side="unanimity")["colluder"].to_numpy()
    assert alone[kind == 2].mean() >= 0.9 and not alone[kind == 0].any()
    with pytest.raises(ValueError, match="side"):
        colluding_blocs(t, w, y, 4, skills=sk, side="vote")


def test_spammers_are_not_a_bloc():
    t, w, y, _, kind = crowd(spam_frac=0.2, seed=5)
    df = colluding_blocs(t, w, y, 4, skills=mmsr_skills(t, w, y, 4, method="port"), n_boot=100)
    assert not df["colluder"].any()
    assert (df["group"][kind == 1] == -1).all()   # rows ~ 0: left out of the split


# ---------------------------------------------------------------------------------------------------------
# (c) clean crowd
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,C", [(0, 4), (1, 4), (2, 3)])
def test_clean_sparse_crowd_flags_nobody(seed, C):
    t, w, y, _, _ = crowd(C=C, seed=seed)
    sp = spammer_scores(t, w, y, C)
    assert not sp["spammer"].any()
    cb = colluding_blocs(t, w, y, C, skills=mmsr_skills(t, w, y, C, method="port"), n_boot=100)
    assert not cb["colluder"].any() and not cb.attrs["detected"]
    # the in-sample split looks like structure; the cross-fitted rho does not
    assert cb.attrs["rho"] > 0.8


# ---------------------------------------------------------------------------------------------------------
# MMSR
# ---------------------------------------------------------------------------------------------------------
def test_mmsr_port_matches_crowdkit():
    t, w, y, _, kind = crowd(T=400, M=20, spam_frac=0.2, seed=6)
    ck = mmsr_skills(t, w, y, 4, method="crowdkit")
    port = mmsr_skills(t, w, y, 4, method="port")
    # the same trimmed-mean iteration; only the sign step differs (here: one spammer's sign)
    same = np.sign(ck) == np.sign(port)
    assert same.mean() >= 0.9
    np.testing.assert_allclose(ck[same], port[same], atol=1e-6)
    for s in (ck, port):
        assert s[kind == 1].max() < s[kind == 0].min()


# ---------------------------------------------------------------------------------------------------------
# invariance
# ---------------------------------------------------------------------------------------------------------
_SMALL = crowd(T=500, M=20, spam_frac=0.2, seed=7)
_SMALL_FLAGS = spammer_scores(*_SMALL[:3], 4)["spammer"].to_numpy()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2 ** 32 - 1))
def test_relabeling_workers_tasks_and_rows_keeps_the_flags(seed):
    t, w, y, _, kind = _SMALL
    assert _SMALL_FLAGS[kind == 1].sum() >= 3 and not _SMALL_FLAGS[kind == 0].any()
    rng = np.random.default_rng(seed)
    wperm = rng.permutation(20)                           # worker m -> wperm[m]
    tperm = rng.permutation(500)
    rows = rng.permutation(len(t))
    df = spammer_scores(tperm[t][rows], wperm[w][rows], y[rows], 4)
    np.testing.assert_array_equal(df["spammer"].to_numpy()[wperm], _SMALL_FLAGS)


# ---------------------------------------------------------------------------------------------------------
# (d) a real crowd with injected adversaries
# ---------------------------------------------------------------------------------------------------------
def _zheng(name):
    folder = default_datasets_dir() / f"zheng_vldb17_{name}"
    if not (folder / "answer.csv").exists():
        pytest.skip(f"{folder} not found (real datasets absent)")
    ans = pd.read_csv(folder / "answer.csv")
    tr = pd.read_csv(folder / "truth.csv")
    ans = ans[ans["question"].isin(tr["question"])]
    t, qs = pd.factorize(ans["question"])
    w, _ = pd.factorize(ans["worker"])
    truth = tr.set_index("question").loc[qs, "truth"].to_numpy()
    return t, w, ans["answer"].to_numpy(), truth


def test_real_crowd_with_injected_spammers_and_bloc():
    """Zheng face_sentiment (584 items, 27 workers, 4 classes), 20% of its workers turned into spammers,
    then (separately) into a bloc giving one shared wrong label on half of the items."""
    t, w, y, truth = _zheng("face_sentiment")
    C, M = 4, w.max() + 1
    rng = np.random.default_rng(0)
    clean = spammer_scores(t, w, y, C)
    assert not clean["spammer"].any()
    adv = np.zeros(M, bool)
    adv[rng.choice(M, int(round(0.2 * M)), replace=False)] = True
    y_spam = np.where(adv[w], rng.integers(C, size=len(t)), y)
    flag = spammer_scores(t, w, y_spam, C)["spammer"].to_numpy()
    recall, fpr = flag[adv].mean(), flag[~adv].mean()
    print(f"spammers: recall {recall:.2f}, false-positive rate {fpr:.2f}")
    assert recall >= 0.8 and fpr <= 0.05
    attacked = rng.random(t.max() + 1) < 0.5
    target = (truth + rng.integers(1, C, size=len(truth))) % C
    y_bloc = np.where(adv[w] & attacked[t], target[t], y)
    df = colluding_blocs(t, w, y_bloc, C)
    flag = df["colluder"].to_numpy()
    recall, fpr = flag[adv].mean(), flag[~adv].mean()
    print(f"bloc: recall {recall:.2f}, false-positive rate {fpr:.2f}, rho {df.attrs['rho']:.2f}")
    assert df.attrs["detected"] and recall >= 0.6 and fpr <= 0.05


# ---------------------------------------------------------------------------------------------------------
# the campaign's ledger acts on the flags
# ---------------------------------------------------------------------------------------------------------
def test_the_ledger_routes_out_a_flagged_bloc_and_rebuilds_the_flags_from_the_store(tmp_path):
    from robust_al.crowd.aggregate import TrustWeightedDS
    from robust_al.store import RunStore
    from robust_al.trust import TrustLedger

    t, w, y, _, kind = crowd(bloc_frac=0.3, seed=0)
    ann = pd.DataFrame({"task": t, "worker": [f"w{k:02d}" for k in w], "label": y})
    loo = TrustWeightedDS(4, "ds").fit(ann).leave_one_out()
    workers = sorted(ann["worker"].unique())
    bloc = {f"w{k:02d}" for k in np.flatnonzero(kind == 2)}
    ledger = TrustLedger(workers, RunStore(tmp_path), random_state=0)
    ledger.agreement_update(0, loo, 4)
    assert {x for x, f in ledger.flags.items() if "colluder" in f} == bloc
    assert bloc <= ledger.routed and not any(ledger.allowed(x) for x in bloc)
    assert all(ledger.allowed(x) for x in set(workers) - bloc - ledger.routed)
    blind = TrustLedger(workers, None, detect=False)
    blind.agreement_update(0, loo, 4)
    assert not bloc <= blind.routed  # the interval alone does not catch all of them
    again = TrustLedger(workers, RunStore(tmp_path), random_state=0)  # a resumed campaign routes the same
    assert again.flags == ledger.flags and again.routed == ledger.routed and again.bounds == ledger.bounds
