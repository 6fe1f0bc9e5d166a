"""Learning from crowd labels: truth inference and the classifier trained on it."""
from robust_al.crowd.aggregate import MODEL_WORKER, TrustWeightedDS
from robust_al.crowd.classifier import CrowdClassifier
from robust_al.crowd.network import NetworkTrainer, build_network, pick_device

__all__ = ["MODEL_WORKER", "TrustWeightedDS", "CrowdClassifier", "NetworkTrainer", "build_network", "pick_device"]
