"""Deep k-NN with trusted votes (after Peri et al. 2020, "Deep k-NN Defense against Clean-label Data Poisoning
Attacks").

Peri et al. flag a training point x_i with label y_i when y_i is not the plurality label of its k nearest training
points in the penultimate feature space:

    flag(i)  <=>  y_i != argmax_c |{ j in N_k(phi(x_i)) : y_j = c }|           (Peri et al., Alg. 1)

with N_k taken over the whole training set. A single-target clean-label attack puts its poisons (all labeled as
the base class) into one tight clump around the target's features, so for any k under about twice the number of
poisons the clump out-votes the target class's neighbours and nothing is flagged (measured on the Q3 campaigns:
recall 0.05 at k = 10-50). Here the votes come only from *reference* items the attacker cannot place or label:
the secured holdout S (trusted labels, never shown to a labeler) and, optionally, items accepted in earlier
iterations; the items being judged never vote for each other. Then

    share_i = |{ j in N_k^R(phi(x_i)) : y_j = y_i }| / k
    flag(i)  <=>  share_i < min_share  and  y_i != argmax_c |{ j in N_k^R(phi(x_i)) : y_j = c }|

N_k^R: the k nearest reference items by cosine similarity. ``min_share`` keeps a hard honest item near the
boundary (some of whose neighbours share its label) in training; a poison sits among the target class's items,
where almost none do. The neighbours are found by one (n x |R|) product: R is S plus what was labeled, thousands
of rows, and a batch is hundreds, so an exact search costs milliseconds (faiss would add an index to build and
keep in step with R for no gain at this size).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrustedKNN:
    """Flag items whose label few of their k nearest trusted reference items share (see the module docstring).

    ``k``: neighbours that vote; ``min_share``: the least share of them with the item's own label that keeps it.
    """

    k: int = 20
    min_share: float = 0.05

    def shares(self, Z: np.ndarray, y: np.ndarray, Z_ref: np.ndarray, y_ref: np.ndarray, n_classes: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Per row of Z: the share of its k nearest reference rows that carry its label y, and their
        plurality label (ties to the smallest class id)."""
        Z, Z_ref = _unit(Z), _unit(Z_ref)
        y, y_ref = np.asarray(y, dtype=np.int64), np.asarray(y_ref, dtype=np.int64)
        if len(Z) == 0 or len(Z_ref) == 0:
            return np.ones(len(Z)), y.copy()
        k = min(self.k, len(Z_ref))
        sim = Z @ Z_ref.T
        nb = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        votes = y_ref[nb]
        counts = np.stack([(votes == c).sum(1) for c in range(n_classes)], axis=1)
        share = counts[np.arange(len(y)), y] / k
        return share, counts.argmax(1)

    def flag(self, Z: np.ndarray, y: np.ndarray, Z_ref: np.ndarray, y_ref: np.ndarray, n_classes: int
             ) -> tuple[np.ndarray, np.ndarray]:
        """(mask of flagged rows of Z, their shares)."""
        share, plural = self.shares(Z, y, Z_ref, y_ref, n_classes)
        return (share < self.min_share) & (plural != np.asarray(y)), share


def _unit(Z: np.ndarray) -> np.ndarray:
    Z = np.asarray(Z, dtype=np.float32)
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


@dataclass
class SameLabelClump:
    """Flag items at the core of an unusually tight clump of items with the same label.

    Feature-collision poisons crafted for one target are pulled towards one point, so they sit far closer to each
    other than honest items of a class do; the clump shows even where the feature space is too weak for trusted
    votes to speak (random features: poisons' trusted share 0.36 vs honest 0.68, a poor separation). With
    t_i = the cosine similarity of item i to its m-th nearest other labeled item with the same label,

        flag(i)  <=>  t_i > median(t) + z (q_0.9(t) - median(t))

    over the labeled items (median and decile move little while poisons are a few per cent of them). Measured on
    a CIFAR-2 random-feature Q3 campaign (1,368 labeled, 34 poisons): z = 1.5 flagged 26 poisons and 2 honest
    items. Bullseye Polytope poisons do not clump (their mean, not each, is pulled to the target).
    :meth:`clump_of` extends a flag to the rest of its clump."""

    m: int = 5
    z: float = 1.5

    def neighbours(self, Z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(t, nn): t_i for every row (-1 where fewer than m other rows share its label) and nn[i], the rows of
        its m nearest other rows with its label (-1 there)."""
        Zu = _unit(Z)
        y = np.asarray(y, dtype=np.int64)
        t = np.full(len(Zu), -1.0)
        nn = np.full((len(Zu), self.m), -1, dtype=np.int64)
        for c in np.unique(y):
            rows = np.flatnonzero(y == c)
            if len(rows) <= self.m:
                continue
            for s in range(0, len(rows), 2048):  # rows x class size at a time, not class size squared
                part = rows[s:s + 2048]
                sim = Zu[part] @ Zu[rows].T
                sim[np.arange(len(part)), np.arange(s, s + len(part))] = -np.inf  # not itself
                near = np.argpartition(-sim, self.m - 1, axis=1)[:, :self.m]
                nn[part] = rows[near]
                t[part] = np.take_along_axis(sim, near, axis=1).min(1)  # the m-th nearest's similarity
        return t, nn

    def above(self, t: np.ndarray) -> np.ndarray:
        """The rows whose tightness t is over the threshold (none while fewer than 10 rows have a t)."""
        known = t[t > -1]
        if len(known) < 10:
            return np.zeros(len(t), dtype=bool)
        med = float(np.median(known))
        return t > med + self.z * (float(np.quantile(known, 0.9)) - med)

    def flag(self, Z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of flagged rows, t)."""
        t = self.neighbours(Z, y)[0]
        return self.above(t), t

    def clump_of(self, nn: np.ndarray, seeds: np.ndarray, above: np.ndarray) -> np.ndarray:
        """Rows reachable from the ``seeds`` rows through rows of ``above`` (both masks), one step being to one of
        a row's m nearest other rows with its label (``nn`` of :meth:`neighbours`): the whole clump a flagged
        item belongs to. Poisons that arrive a few per batch (random sampling) are not tight while they are fewer
        than m, and pass; once the clump is found, its earlier members are found with it."""
        out = np.asarray(seeds, dtype=bool).copy()
        frontier = np.flatnonzero(out)
        while len(frontier):
            cand = np.unique(nn[frontier])
            cand = cand[cand >= 0]
            cand = cand[above[cand] & ~out[cand]]
            out[cand] = True
            frontier = cand
        return out
