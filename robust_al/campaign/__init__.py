"""The campaign loop of the robust-active-learning paper (section III, Fig. 2).

Each iteration: embed and cluster the unlabeled pool in the current model's feature space, pick per-cluster
queries farthest from what is labeled, send them to the crowd, infer labels with trust-weighted Dawid-Skene,
train the next model on them and on adversarial examples made at no labeling cost, check it against the
secured holdout S; if S accuracy drops, roll back, re-examine the batch with h independent labelers and cut
the trust of contradicted labelers; move trust with agreement; craft adversarial examples of the new items
(their minimal perturbation is their vulnerability); stop when robust enough, accurate enough, or out of
budget. Everything is written to the run's SQLite store as it happens; a killed campaign resumes where it
stopped without asking any annotator again.

The loop is :class:`Campaign` (``loop``); each stage is a module of its own: ``selection`` (what is asked, of
whom), ``labels`` (inference, trust evidence, training, augmentation), ``filtering`` (the poison filter, between
labeling and training), ``secured`` (S, re-examination, audit, quarantine), ``hooks`` (poison injection),
``stopping`` (stop criteria), ``items`` (statuses and budget) and ``build`` (assembly, create / resume).
``docs/architecture.md`` draws how they call each other.
"""
from robust_al.campaign.build import check_startable, versions
from robust_al.campaign.items import DISCARDED, FILTERED, HOLDOUT, LABELED, QUARANTINED, RETIRED, stage_key
from robust_al.campaign.loop import VOLATILE_METRICS, Campaign, IterationResult, format_metrics, peak_rss_mib

__all__ = [
           "DISCARDED",
           "FILTERED",
           "HOLDOUT",
           "LABELED",
           "QUARANTINED",
           "RETIRED",
           "VOLATILE_METRICS",
           "Campaign",
           "IterationResult",
           "check_startable",
           "format_metrics",
           "peak_rss_mib",
           "stage_key",
           "versions",
]
