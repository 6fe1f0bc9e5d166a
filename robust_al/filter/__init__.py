"""The poison filter, a stage of the loop between labeling and training: labeled items whose place in the model's
feature space contradicts their label, judged only by evidence the attacker does not control, are kept out of
training (their answers stay stored; they are not sent to be labelled again: people confirm a clean-label
poison, which looks like its base image)."""
from robust_al.filter.knn import SameLabelClump, TrustedKNN

__all__ = ["SameLabelClump", "TrustedKNN"]
