"""Names of the crowd learners, importable without torch (the config validates ``model.learner`` with them;
``robust_al.crowd.learners.LEARNERS`` maps each to its class)."""

LEARNER_NAMES = ("mv", "ds", "crowdlayer-mw", "crowdlayer-vw", "crowdlayer-vwb", "aggnet", "alfc", "malc",
                 "alfc-clpm", "malc-clpm")
