"""Evaluation of crowd learners: adversarial robustness (white- and black-box) and confusion-matrix recovery."""
from robust_al.evaluate.robustness import (ATTACKS, CW_PARAMS, EPS_GRID, adversarial_examples, art_classifier,
                                           black_box_accuracy, confusion_recovery_error, robustness_table,
                                           train_substitute, true_confusions, white_box_accuracy)

__all__ = [
    "ATTACKS", "CW_PARAMS", "EPS_GRID", "adversarial_examples", "art_classifier", "black_box_accuracy",
    "confusion_recovery_error", "robustness_table", "train_substitute", "true_confusions", "white_box_accuracy",
]
