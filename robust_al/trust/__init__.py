"""Trust scores per labeler and the number of independent relabelers (eq. 3); adversary detection from the
crowd's agreement structure (spammers, colluding blocs)."""
from robust_al.trust.detect import colluding_blocs, mmsr_skills, spammer_scores
from robust_al.trust.ledger import TrustLedger, independent_labelers

__all__ = ["TrustLedger", "independent_labelers", "spammer_scores", "colluding_blocs", "mmsr_skills"]
