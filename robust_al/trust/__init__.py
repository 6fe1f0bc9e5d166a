"""Trust per labeler: a calibrated accuracy with its interval, routing, adversary detection from the crowd's
agreement structure (spammers, colluding blocs), and the campaign's ledger."""
from robust_al.trust.assess import CrowdAssessment, assess_crowd
from robust_al.trust.detect import colluding_blocs, mmsr_skills, spammer_scores
from robust_al.trust.ledger import TrustLedger, independent_labelers
from robust_al.trust.model import routing_threshold, safe_route, worker_accuracy

__all__ = ["CrowdAssessment", "TrustLedger", "assess_crowd", "colluding_blocs", "independent_labelers",
           "mmsr_skills", "routing_threshold", "safe_route", "spammer_scores", "worker_accuracy"]
