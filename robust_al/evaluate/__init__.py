"""Evaluation of crowd learners: adversarial robustness (white- and black-box) and confusion-matrix recovery."""
from robust_al.evaluate.robustness import (
    ALL_ATTACKS,
    ATTACKS,
    CW_PARAMS,
    EPS_GRID,
    adversarial_examples,
    art_classifier,
    black_box_accuracy,
    confusion_recovery_error,
    project_linf,
    robustness_table,
    train_substitute,
    true_confusions,
    white_box_accuracy,
)

__all__ = [
    "ALL_ATTACKS", "ATTACKS", "CW_PARAMS", "EPS_GRID", "adversarial_examples", "art_classifier",
    "black_box_accuracy", "confusion_recovery_error", "project_linf", "robustness_table", "train_substitute",
    "true_confusions", "white_box_accuracy",
]
