"""Annotators: simulated crowds, replayed real crowds, behind one interface."""
from robust_al.annotators.base import Annotator, Answer
from robust_al.annotators.crowd import Crowd, CrowdProtocol, HoldoutLeak
from robust_al.annotators.replay import ReplayedAnnotator, replayed_crowd
from robust_al.annotators.simulated import (BenignAnnotator, ColludingAnnotator, MaliciousAnnotator,
                                            SimulatedAnnotator, SpammerAnnotator, truth_map)

__all__ = [
                                            "Annotator",
                                            "Answer",
                                            "BenignAnnotator",
                                            "ColludingAnnotator",
                                            "Crowd",
                                            "CrowdProtocol",
                                            "HoldoutLeak",
                                            "MaliciousAnnotator",
                                            "ReplayedAnnotator",
                                            "SimulatedAnnotator",
                                            "SpammerAnnotator",
                                            "replayed_crowd",
                                            "truth_map",
]
