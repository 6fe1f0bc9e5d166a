"""Artificial training data at no labeling cost (section III-D)."""
from robust_al.augment.adversarial import ATTACKS, Augmented, Augmenter

__all__ = ["ATTACKS", "Augmented", "Augmenter"]
