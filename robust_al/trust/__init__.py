"""Trust scores per labeler and the number of independent relabelers (eq. 3)."""
from robust_al.trust.ledger import TrustLedger, independent_labelers

__all__ = ["TrustLedger", "independent_labelers"]
