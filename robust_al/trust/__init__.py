"""Trust per labeler: a calibrated accuracy with its interval, routing, and the campaign's ledger."""
from robust_al.trust.assess import CrowdAssessment, assess_crowd
from robust_al.trust.ledger import TrustLedger, independent_labelers, reliability
from robust_al.trust.model import routing_threshold, safe_route, worker_accuracy

__all__ = ["CrowdAssessment", "TrustLedger", "assess_crowd", "independent_labelers", "reliability",
           "routing_threshold", "safe_route", "worker_accuracy"]
