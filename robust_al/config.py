"""Campaign configuration: YAML validated by pydantic; errors name the bad key and value."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    name: Literal["digits", "generic", "labelme", "cifar2", "cifar10n", "imagefolder", "table", "text",
                  "labelstudio"] = Field(
        "digits", description="labelstudio: the tasks of the Label Studio project annotators.labelstudio.project_id "
        "are the pool (options: image_size, key_field; trusted_labels: a CSV task,label of trusted labels for the "
        "secured holdout, kept outside Label Studio; ground_truth_annotations: true takes the project's ground-truth "
        "annotations as trusted labels too, though every member can read them; truth_field is refused: every "
        "member can read task data)")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the loader")


class HoldoutConfig(_Strict):
    size: int = Field(100, ge=2, description="items in the secured set S")
    refresh_every: int | None = Field(None, ge=1, description="q: draw a new S every q iterations; null = never")


class LabelerConfig(_Strict):
    kind: Literal["benign", "malicious", "spammer", "colluding"]
    count: int = Field(1, ge=0)
    pr: float = Field(0.05, ge=0.0, le=1.0)
    target: int | None = None  # malicious: the class c_t it mislabels...
    to: int | None = None      # ...always as c'_t
    rate: float = Field(0.3, ge=0.0, le=1.0)  # colluding: share of items the group lies about
    group: str = "g0"
    name: str | None = None    # id prefix (default: the kind)

    @model_validator(mode="after")
    def _malicious_needs_classes(self) -> LabelerConfig:
        if self.kind == "malicious" and (self.target is None or self.to is None):
            raise ValueError("a malicious labeler needs 'target' (c_t) and 'to' (c'_t)")
        return self


class LabelStudioConfig(_Strict):
    url: str = Field(description="the Label Studio server, e.g. http://127.0.0.1:8080")
    token_env: str = Field("LABEL_STUDIO_TOKEN", description="environment variable holding the API token")
    token_file: str | None = Field(None, description="or a file holding it (never put a token in a config)")
    title: str = "robust-al campaign"
    wait_seconds: float = Field(3600.0, gt=0, description="how long one batch may wait for its answers")
    poll_seconds: float = Field(2.0, gt=0, description="polling interval (webhooks usually answer first)")
    webhook: bool = True
    media: Literal["data-url", "local-files", "url-template"] = Field(
        "data-url", description="how a task's image reaches the browser: embedded bytes (any server; images up to "
        "256 kB), the server's local-files serving (needs files_root), or media_url")
    media_url: str | None = Field(None, description="media = url-template: e.g. https://host/images/{key}")
    files_root: str | None = Field(None, description="media = local-files: the --files-root the server was "
                                      "started with (a strict ancestor of the pool's image folder)")
    show_predictions: bool = Field(False, description="show the model's guess as a pre-annotation (a visible "
                                   "guess biases labelers who should answer independently)")
    project_id: int | None = Field(None, ge=1, description="attach to this existing project: its tasks are the "
                                      "pool (data.name: labelstudio), its annotations labels already collected")
    status_seconds: float = Field(10.0, gt=0, description="print a 'waiting: n/N answers' line at most this often")
    show_keys: bool = Field(False, description="show each item's key (e.g. its file name) to labelers; off: an "
                            "opaque stable id, since a key like airplane/0001.jpg names the answer")

    @model_validator(mode="after")
    def _media_settings(self) -> LabelStudioConfig:
        if self.media == "url-template" and (not self.media_url or "{key}" not in self.media_url):
            raise ValueError("media = 'url-template' needs media_url holding {key}, e.g. https://host/img/{key}")
        if self.media == "url-template" and not self.show_keys:  # every member reads task data, URLs included
            raise ValueError("media = 'url-template' puts each item's key (e.g. airplane/0001.jpg, which names its "
                             "class) in an image URL every labeler can read: set show_keys: true to accept that, or "
                             "use media: data-url or local-files (opaque links)")
        if self.media == "local-files" and not self.files_root:
            raise ValueError("media = 'local-files' needs files_root: the --files-root the server was started with")
        return self


class AnnotatorsConfig(_Strict):
    kind: Literal["simulated", "replay", "labelstudio"] = "simulated"
    labelstudio: LabelStudioConfig | None = None
    k: int = Field(1, ge=1, description="labelers asked per query")
    overlap: float = Field(0.0, ge=0, le=1, description="share of each query batch that one more labeler answers "
                           "(beyond k), so that labelers' answers meet: with k = 1 on uncertain queries nothing "
                           "else tells a colluding bloc from honest labelers (docs: concepts/trust.md, overlap)")
    lookahead: int = Field(0, ge=0, le=1, description="1: a batch for iteration i+1, chosen with F_{i-1}, is queued "
                           "while F_i trains and is checked, so people in Label Studio never wait for the model, "
                           "and settled with F_i (what was answered is kept); it costs labels to a target "
                           "(measured: docs/results/performance.md#bench-lookahead). 0: the paper's synchronous "
                           "loop")
    labelers: list[LabelerConfig] = Field(default_factory=lambda: [LabelerConfig(kind="benign", count=11)])
    inject: list[LabelerConfig] = Field(default_factory=list, description="simulated workers added to a replayed crowd")
    inject_items: int | Literal["median", "all"] = Field(
        "median", description="items each injected worker can be asked about: 'median' = as many as the median "
        "replayed worker recorded (a fixed random subset, like a real worker's), an integer, or 'all' (a "
        "simulated worker who can answer everything takes an outsized share of the budget)")

    @model_validator(mode="after")
    def _labelstudio_needs_its_section(self) -> AnnotatorsConfig:
        if self.kind == "labelstudio" and self.labelstudio is None:
            raise ValueError("annotators.kind = 'labelstudio' needs an 'annotators.labelstudio' section with a url")
        return self


class QueryConfig(_Strict):
    strategy: Literal["maxmin", "random", "entropy", "margin", "coreset"] = "maxmin"
    initial: int = Field(50, ge=1, description="m: items labeled at random before the first model")
    batch: int = Field(50, ge=1, description="items queried per iteration (shared as N_c across clusters)")
    clustering: Literal["kmeans", "kmedoids", "agglomerative"] = "kmeans"
    n_clusters: int | None = Field(None, ge=1, description="null = chosen by silhouette")
    max_clusters: int = Field(10, ge=2)
    typicality: float = Field(1.0, ge=0, description="maxmin: weigh the distance to the labeled set by "
                              "(typicality within the cluster)^beta; 0 = the paper's pure max-min, which picks "
                              "outliers first at small budgets (docs: concepts/query.md)")
    uncertainty: float = Field(1.0, ge=0, description="maxmin: weigh it also by (1 - the model's top-2 margin)"
                               "^gamma, far *and* uncertain items first; 0 = distance and typicality only "
                               "(docs: concepts/query.md, results/query.md)")
    refresh_every: int = Field(1, ge=1, description="re-embed the pool in the model's feature space every r iterations")
    chunk_size: int = Field(65536, ge=1)


AdversarialAttack = Literal["deepfool", "cw", "pgd", "bim"]


class AugmentConfig(_Strict):
    attacks: list[AdversarialAttack] = Field(default_factory=lambda: list[AdversarialAttack](["deepfool"]))
    eps: float = Field(0.5, gt=0, description="L2 radius for pgd/bim")
    noise_scale: float = Field(0.05, ge=0)
    noise_copies: int = Field(1, ge=0)
    enabled: bool = True


class ModelConfig(_Strict):
    network: Literal["auto", "mlp", "cnn", "frozen", "pretrained"] = Field(
        "auto", description="frozen = fixed random-feature extractor + trained head; pretrained = the frozen "
        "trunk of model.backbone + trained head (the paper's transfer setting)")
    backbone: dict[str, str] | None = Field(
        None, description="model.network 'pretrained': {arch: a torchvision architecture, weights: a local "
        "state_dict file}, e.g. the one pipelines/pretrain_backbone.py writes; nothing is downloaded")
    hidden: list[int] = Field(default_factory=lambda: [128])
    dropout: float = Field(0.2, ge=0, lt=1)
    epochs: int = Field(30, ge=1)
    min_steps: int = Field(300, ge=0, description="at least this many gradient steps per training")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    device: str = "auto"
    cpu_threads: int = Field(1, ge=0, description="torch CPU threads while a campaign runs. 1 (default) keeps a "
                             "run bit-reproducible, so a resumed campaign equals the uninterrupted one: with "
                             "more threads on a loaded machine a fit can come out different from the same inputs "
                             "(robust_al.reproducible). 0 = torch's default (all cores): faster for large "
                             "networks on a CPU, at the cost of that reproducibility")
    warm_start: bool = True
    learner: str = Field("two-stage", description="'two-stage' (trust-weighted DS, then the network) or a crowd "
                         "learner: mv, ds, crowdlayer-mw/-vw/-vwb, aggnet, alfc, malc, alfc-clpm, malc-clpm")
    standardize: bool = Field(True, description="standardize inputs with the pool's mean/std inside the network "
                              "(an eps on [0,1] inputs is then eps/std_j along feature j); false = identity")
    learner_options: dict[str, Any] = Field(default_factory=dict, description="e.g. {eps: 0.03, alpha: 0.5}")
    trust_prior: float = Field(0.0, ge=0, description="labels' worth of the trust-seeded confusion prior")
    targets: Literal["hard", "soft", "weighted", "trust"] = Field(
        "trust", description="two-stage: what the network trains on. trust (default): the inferred labels, each "
        "weighted by how sure its labelers' trust makes it (one-coin, a_w = trust; "
        "robust_al.crowd.aggregate.trusted_certainty): with one label per item, Dawid-Skene is as sure of a "
        "colluder's item as of an honest one's. hard: the inferred labels, weight 1. soft: the DS posteriors "
        "(with one label per item they are little more than DS's prior). weighted: the "
        "inferred labels weighted by the posterior's margin over chance (needs overlap to tell labelers apart)")

    @model_validator(mode="after")
    def _backbone(self) -> ModelConfig:
        if self.backbone is not None:
            extra = set(self.backbone) - {"arch", "weights"}
            if extra or "weights" not in self.backbone:
                raise ValueError(f"model.backbone: expected keys arch (default resnet18) and weights (a local "
                                 f"state_dict file), got {sorted(self.backbone)}")
        if self.network == "pretrained" and self.backbone is None:
            raise ValueError("model.network 'pretrained' needs model.backbone: {arch: resnet18, weights: FILE}")
        return self

    @field_validator("learner")
    @classmethod
    def _known_learner(cls, v: str) -> str:
        from robust_al.crowd.names import LEARNER_NAMES  # not the learners themselves: no torch to validate

        if v != "two-stage" and v not in LEARNER_NAMES:
            raise ValueError(f"expected 'two-stage' or one of {sorted(LEARNER_NAMES)}")
        return v


class AggregationConfig(_Strict):
    method: Literal["ds", "mv"] = "ds"
    model_as_worker: bool = Field(False, description="enter F_{i-1}'s prediction at query time as one more worker "
                                  "(off by default: with one label per item the model outvotes the humans on the "
                                  "hard items the query picks; docs: concepts/query.md)")
    untrusted_weight: float = Field(0.0, ge=0, le=1, description="weight of labels by labelers under trust.threshold")


class TrustConfig(_Strict):
    initial: float = Field(0.9, ge=0, le=1, description="a labeler's presumed accuracy while fewer than 3 "
                           "labelers have 10 labels; after that the crowd's median is")
    prior_strength: float = Field(4.0, gt=0, description="labels' worth of the Beta prior on a labeler's accuracy")
    threshold: float | None = Field(None, ge=0, le=1, description="fixed routing threshold tau; null: "
                                       "relative, tau = 1/C + relative * (crowd's typical accuracy - 1/C)")
    relative: float = Field(0.5, ge=0, le=1, description="where tau sits between chance and the typical labeler")
    level: float = Field(0.9, gt=0, lt=1, description="credible level of the accuracy interval routing reads")
    routing: bool = Field(True, description="route out labelers whose interval lies under tau (or whom a "
                          "class or a detector condemns); never more than half, never below k")
    detect: bool = Field(True, description="flag spammers and colluding blocs from the labelers' agreement "
                         "structure (5+ labelers sharing items) and route them out unless their accuracy is "
                         "confidently above tau")
    epsilon: float = Field(0.02, ge=0, description="drop in secured accuracy that triggers re-examination")
    model_evidence: bool = Field(True, description="score labelers against the model's out-of-sample prediction "
                                 "even when it does not vote on labels (aggregation.model_as_worker off)")
    cross_fit_folds: int = Field(5, ge=0, description="score labelers also against a cross-fitted witness: a "
                                 "logistic regression that never saw the item's label (K-fold over the labeled "
                                 "items; robust_al.trust.witness); 0 = off")
    significance: float | None = Field(0.05, gt=0, lt=1, description="...and only if the drop is significant "
                                          "(one-sided exact McNemar test on S at this level); null = any drop")
    reexamine: Literal["suspicious", "all"] = Field(
        "suspicious", description="items of a failing batch that h labelers relabel: those whose label F_{i-1} "
        "disagreed with out of sample (the rest stand), or all of them as in the paper (h x batch labels, spent "
        "on every false alarm too)")
    p_h: float = Field(0.9995, gt=0, lt=1, description="P_h of eq. 3")
    penalty: float = Field(0.05, ge=0, le=1,
                           description="a at chance-level model confidence (one label's worth, not a verdict)")
    high_confidence: float = Field(0.9, gt=0, le=1, description="model confidence that flags a labeler for a check")
    audit_size: int = Field(10, ge=0, description="past items of a flagged labeler re-examined at once")


class PoisonConfig(_Strict):
    """Q3 of the robust-active-learning evaluation: targeted clean-label poisons (feature collision or Bullseye
    Polytope) crafted against the model of iteration ``at_iteration - 1`` and injected into the unlabeled pool."""
    enabled: bool = False
    attack: Literal["feature-collision", "bullseye-polytope", "gradient-matching"] = Field(
        "feature-collision", description="feature collision (Shafahi et al. 2018: each poison's features onto the "
        "target's, plus a watermark), Bullseye Polytope (Aghakhani et al. 2021: the poisons' mean feature onto "
        "the target's, each within epsilon of its base) or gradient matching (Geiping et al. 2021, ART's "
        "Witches' Brew: the poisons' training gradient aligned with the target's adversarial one, within epsilon; "
        "max_iter epochs, one restart)")
    epsilon: float = Field(8 / 255, gt=0, le=1, description="bullseye-polytope, gradient-matching: L-inf bound on "
                           "each poison's change from its base image (8/255 as in Bullseye's paper; Witches' Brew "
                           "uses 16/255)")
    bp_learning_rate: float = Field(0.04, gt=0, description="bullseye-polytope: Adam's step (its paper's and ART's)")
    at_iteration: int = Field(1, ge=1, description="poisons enter the pool before this iteration's query")
    bound_collision: bool = Field(False, description="feature-collision: keep each poison within epsilon of its base "
                                  "too (watermark included), as the benchmark of Schwarzschild et al. 2021 bounds "
                                  "every attack; Shafahi et al. and ART do not")
    target_class: int | None = Field(1, ge=0, description="class of the target (a test instance it should "
                                     "misclassify); null: drawn from the campaign's seed, as the benchmark of "
                                     "Schwarzschild et al. 2021 draws it per trial")
    base_class: int | None = Field(0, ge=0, description="class the poisons look like and are honestly labeled as; "
                                   "null: drawn from the campaign's seed, never the target class")
    n_base: int = Field(50, ge=1, description="base instances per target (the first free pool items of base_class)")
    watermarks: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3], description="opacities tried in order")
    learning_rate: float = Field(1.0, gt=0, description="ART's default (500*255) with similarity 256 barely moves")
    similarity_coeff: float = Field(0.5, gt=0)
    max_iter: int = Field(120, ge=1, description="steps of feature collision and Bullseye Polytope; epochs of "
                          "gradient matching (ART's default 250)")
    max_targets: int = Field(3, ge=1, description="targets tried before giving up")
    targets: Literal["random", "vulnerable"] = Field(
        "random", description="which target instances the attacker tries: 'random' (Shafahi et al.: random test "
        "items of target_class the current model gets right), or 'vulnerable': of those, the ones a clean "
        "baseline (all training items, true labels) is least sure of, among those it gives at least "
        "target_margin")
    target_margin: float = Field(0.65, gt=0, lt=1, description="'vulnerable' targets: the clean baseline's "
                                 "least probability of target_class, so the poisons, not the boundary, flip them")
    verify: bool = Field(True, description="keep only poisons that succeed against a baseline trained on all "
                         "training items plus the poisons")


FilterRule = Literal["trusted-knn", "clump"]


class PoisonFilterConfig(_Strict):
    """The poison filter, between labeling and training (robust_al.filter), in F_{i-1}'s feature space:
    ``trusted-knn`` removes a newly labeled item whose label none of its ``k`` nearest trusted items carries;
    ``clump`` removes labeled items at the core of an unusually tight same-label clump, and the earlier-accepted
    members of a clump found in a batch."""
    enabled: bool = Field(False, description="off until its cost on clean campaigns is measured small (docs)")
    rules: list[FilterRule] = Field(default_factory=lambda: list[FilterRule](["clump"]),
                                    description="an item any rule flags is removed; trusted-knn is not in the "
                                    "default: in the first Q3 campaigns through the CIFAR-8-pretrained trunk it "
                                    "removed 9 and 43 honest items and no poison (docs/results/evaluation.md)")
    k: int = Field(20, ge=1, description="trusted-knn: trusted neighbours that vote")
    min_share: float = Field(0.05, gt=0, le=1, description="trusted-knn: an item is kept when at least this share of "
                             "them, or their plurality, carries its label (0.05 with k = 20: removed only when none "
                             "does; k = 10 at 0.2 removed 10-17 % of honest items on clean digits campaigns)")
    votes_from: Literal["secured", "secured+earlier"] = Field(
        "secured+earlier", description="trusted-knn: who votes: the secured holdout S only, or S and the items "
        "accepted in earlier iterations (never the batch being judged)")
    clump_m: int = Field(5, ge=1, description="clump: tightness = similarity to the m-th nearest same-label item")
    clump_z: float = Field(1.5, gt=0, description="clump: flagged above median + z (decile 9 - median) of it")


class StopConfig(_Strict):
    budget: int = Field(600, ge=1, description="labels (annotations) the campaign may buy")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="accuracy on S that ends the campaign")
    tau: float | None = Field(None, gt=0, description="stop when every adversarial perturbation exceeds tau")
    max_iterations: int = Field(100, ge=1)


class CampaignConfig(_Strict):
    name: str = "campaign"
    seed: int = 0
    run_dir: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)
    annotators: AnnotatorsConfig = Field(default_factory=AnnotatorsConfig)
    query: QueryConfig = Field(default_factory=QueryConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    poison: PoisonConfig = Field(default_factory=PoisonConfig)
    poison_filter: PoisonFilterConfig = Field(default_factory=PoisonFilterConfig)

    @model_validator(mode="after")
    def _labelstudio_data_source(self) -> CampaignConfig:
        ls = self.annotators.labelstudio if self.annotators.kind == "labelstudio" else None
        attached = ls is not None and ls.project_id is not None
        if self.data.name == "labelstudio" and not attached:
            raise ValueError("data.name = 'labelstudio' takes its pool from an existing project: set "
                             "annotators.kind = 'labelstudio' and annotators.labelstudio.project_id")
        if attached and ls is not None and self.data.name != "labelstudio":  # (attached: ls is not None)
            raise ValueError(f"annotators.labelstudio.project_id = {ls.project_id}: the project's tasks are the pool, "
                             f"so data.name must be 'labelstudio' (not {self.data.name!r})")
        return self

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}-seed{self.seed}")


class ConfigError(ValueError):
    """A config that does not validate; the message names each bad key, its value and what was expected."""


def _set_path(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is not a section")
    d[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict | None = None) -> CampaignConfig:
    """Read a YAML config (or a dict), apply ``key.sub=value`` overrides, validate."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
    if data:
        raw.update(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set query.batch=20")
        key, value = item.split("=", 1)
        _set_path(raw, key.strip(), yaml.safe_load(value))
    try:
        return CampaignConfig.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = ".".join(str(x) for x in err["loc"])
            got = err.get("input")
            lines.append(f"  {key or '(top level)'} = {got!r}: {err['msg']}")
        where = f" in {path}" if path else ""
        if len(lines) == 1:  # one bad key: one line (docs/reference/outputs.md)
            raise ConfigError(f"invalid config{where}: {lines[0].strip()}") from None
        raise ConfigError(f"invalid config{where}:\n" + "\n".join(lines)) from None
