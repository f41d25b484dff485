"""``strategy: auto``: choose frozen, LoRA or full fine-tuning from measured signals.

The usual transfer-learning rules of thumb -- *small dataset: extract features;
large dataset: fine-tune; in between: a hybrid; pretrained features useless on
the new data: try another model* -- are encoded here as explicit, measurable
thresholds on:

* the number of labelled training examples, overall and in the rarest class;
* the cross-validated linear-probe score of the frozen features (how much of
  the task the pretrained representation already solves), read against chance;
* the model size against the compute available (device, accelerator memory);
* an optional wall-clock budget against an estimated full-fine-tuning epoch.

:func:`decide_strategy` is a pure function of a :class:`Signals` record: no
model, no data, no I/O, so every rule is unit-tested on constructed signals.
It first picks the strategy the *data* asks for, then steps down
(full -> lora -> frozen) while the *compute* rules exclude it. Every step adds
a reason with the numbers behind it; :func:`explain` prints them and
:meth:`Decision.to_dict` is what goes into ``metrics.json`` and the model card.

The default thresholds below are starting points taken from the rules of
thumb; they are meant to be checked against ``nlp-transfer compare`` runs and
can be overridden per call (``decide_strategy(signals, thresholds={...})``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from numbers import Integral
from typing import Any

from nlp_transfer.errors import ConfigError

__all__ = [
    "STRATEGIES",
    "DEFAULT_THRESHOLDS",
    "THRESHOLD_DOCS",
    "Signals",
    "Decision",
    "decide_strategy",
    "explain",
]

#: From least to most adaptation; the compute rules step down this list.
STRATEGIES: tuple[str, ...] = ("frozen", "lora", "full")
#: Where a strategy the compute rules exclude falls back to (contrastive tunes every encoder weight,
#: as full does, on few examples: without it, frozen features are the few-shot choice).
FALLBACK: dict[str, str] = {"full": "lora", "lora": "frozen", "contrastive": "frozen"}
DEVICES: tuple[str, ...] = ("cpu", "cuda", "mps")

# --------------------------------------------------------------------------- thresholds
# Data size. The classic "small dataset -> feature extraction" rule held while fine-tuning ran a
# fixed number of epochs (a few updates on a few hundred examples). Under the step budget
# (train.min_steps=200) it no longer does for classification: LoRA beat frozen features at every
# measured size, 50 to 800 examples on SST-2 and 50 to 200 on BBC (README "Step budgets",
# docs/results/step_budget/), by 1-8 pt, at minutes instead of seconds. So a small *classification*
# set is adapted with LoRA, ahead of the high-probe rule (BBC n=200, probe 0.96: lora 0.962 vs frozen
# 0.941); regression keeps frozen features (not measured under the budget).
#: Fewer labelled training examples than this -> lora under the step budget (regression: frozen).
FEW_LABELS_TOTAL = 1_000
#: Fewer examples than this in the rarest class (of a larger set) -> frozen.
FEW_LABELS_PER_CLASS = 50
#: At least this many labelled examples (and compute that allows it) -> full
#: fine-tuning ("large dataset -> fine-tune"): enough data to move every weight.
LARGE_DATA = 10_000

# Few-shot. At most this many examples in the rarest class (and every class pairable): contrastive
# pairs tune the encoder before the head (SetFit's method). Measured with benchmarks/fewshot.py on
# MiniLM (README "Few-shot"): at k=8 per class, contrastive beats frozen by 6 pt on emotion.
#: Rarest class at or below this -> contrastive (when the labels allow pairs).
FEW_SHOT_PER_CLASS = 32
#: ... and at most this many examples: the pair phase costs pair_rounds x 2 x n_train pairs.
FEW_SHOT_MAX_TRAIN = 400

# Linear probe of the frozen features (cross-validated metric in 0..1), read
# against chance through the normalised skill (probe - chance) / (1 - chance),
# i.e. the fraction of the gap between chance and perfect already closed.
#: A probe at or above this (with PROBE_HIGH_SKILL) means the pretrained
#: representation already solves the task: frozen, fine-tuning can add little.
PROBE_HIGH = 0.90
#: ... and it must also close at least this fraction of the chance-to-perfect
#: gap, so a 0.93 probe on a 92 %-majority-class task does not count as "high".
PROBE_HIGH_SKILL = 0.75
#: Normalised skill below this: the features barely beat chance; warn that
#: another pretrained model is likely a better start ("poor pretrained
#: performance on the new data -> another model").
NEAR_CHANCE_SKILL = 0.20

# Compute. Parameter counts are what a 2-16 core CPU can fine-tune in an
# afternoon; memory follows the usual fp32 AdamW accounting.
#: On CPU, models larger than this are not fully fine-tuned (all-MiniLM-L6 has
#: 22.7M, BERT-base 110M parameters).
CPU_FULL_MAX_PARAMS = 30_000_000
#: On CPU, models larger than this are not adapted with LoRA either (the
#: backward pass still runs through every layer): frozen features only.
CPU_LORA_MAX_PARAMS = 150_000_000
#: Bytes per parameter for full fine-tuning: fp32 weights 4 + gradients 4 +
#: AdamW first and second moments 8.
BYTES_PER_PARAM_FULL = 16
#: Bytes per parameter for LoRA: frozen fp32 weights only (adapter states are
#: negligible).
BYTES_PER_PARAM_LORA = 4
#: Multiplier on the above for activations, workspace and fragmentation.
MEMORY_OVERHEAD = 1.5

# Time budget (applied only when both the budget and an estimate of one full
# fine-tuning epoch are known).
#: Epochs a fine-tuning run needs to be worth starting.
MIN_EPOCHS = 3
#: Cost of a LoRA epoch relative to a full one (backward still crosses every
#: layer; only weight gradients and optimizer updates are saved).
LORA_EPOCH_FRACTION = 0.7
#: Cost of the frozen strategy relative to one full epoch: a single forward
#: pass to cache features (~1/3 of forward+backward); the head is negligible.
FROZEN_COST_FRACTION = 0.35

DEFAULT_THRESHOLDS: dict[str, float] = {
    "few_labels_total": FEW_LABELS_TOTAL,
    "few_labels_per_class": FEW_LABELS_PER_CLASS,
    "few_shot_per_class": FEW_SHOT_PER_CLASS,
    "few_shot_max_train": FEW_SHOT_MAX_TRAIN,
    "large_data": LARGE_DATA,
    "probe_high": PROBE_HIGH,
    "probe_high_skill": PROBE_HIGH_SKILL,
    "near_chance_skill": NEAR_CHANCE_SKILL,
    "cpu_full_max_params": CPU_FULL_MAX_PARAMS,
    "cpu_lora_max_params": CPU_LORA_MAX_PARAMS,
    "bytes_per_param_full": BYTES_PER_PARAM_FULL,
    "bytes_per_param_lora": BYTES_PER_PARAM_LORA,
    "memory_overhead": MEMORY_OVERHEAD,
    "min_epochs": MIN_EPOCHS,
    "lora_epoch_fraction": LORA_EPOCH_FRACTION,
    "frozen_cost_fraction": FROZEN_COST_FRACTION,
}

#: One line per threshold, for ``explain``, the model card and the README.
THRESHOLD_DOCS: dict[str, str] = {
    "few_labels_total": "n_train below this -> lora with the step budget (regression: frozen)",
    "few_labels_per_class": "examples in the rarest class below this -> frozen",
    "few_shot_per_class": "rarest class at or below this (labels pairable) -> contrastive (SetFit-style pairs)",
    "few_shot_max_train": "contrastive only up to this many examples (the pair phase grows with n_train)",
    "large_data": "n_train at or above this -> full fine-tuning, if compute allows",
    "probe_high": "frozen-feature linear probe at or above this (and probe_high_skill) -> frozen",
    "probe_high_skill": "minimum (probe - chance) / (1 - chance) for the probe to count as high",
    "near_chance_skill": "(probe - chance) / (1 - chance) below this -> warn: try another model",
    "cpu_full_max_params": "on CPU, no full fine-tuning of models with more parameters",
    "cpu_lora_max_params": "on CPU, no LoRA either for models with more parameters",
    "bytes_per_param_full": "memory per parameter for full fine-tuning (fp32 weights, grads, AdamW)",
    "bytes_per_param_lora": "memory per parameter for LoRA (frozen fp32 weights)",
    "memory_overhead": "multiplier for activations and workspace on top of per-parameter memory",
    "min_epochs": "epochs a fine-tuning run must fit in the time budget",
    "lora_epoch_fraction": "LoRA epoch time as a fraction of a full fine-tuning epoch",
    "frozen_cost_fraction": "frozen run time (one feature pass) as a fraction of a full epoch",
}


# --------------------------------------------------------------------------- records

@dataclass
class Signals:
    """Everything ``strategy: auto`` looks at; ``None`` means "not measured".

    Attributes:
        n_train: labelled training examples.
        n_classes: number of classes (``None`` for regression / unknown).
        min_per_class: examples in the rarest class (``None`` if unknown).
        probe_score: cross-validated linear-probe metric of the frozen features,
            0..1 (accuracy; Spearman or R^2 clipped at 0 for regression).
        probe_chance: the metric of a trivial predictor (majority-class
            accuracy); ``None`` -> ``1 / n_classes`` (assumes balance), or 0.
        model_params: parameters of the pretrained model.
        device: ``"cpu"``, ``"cuda"`` (``"cuda:N"`` accepted) or ``"mps"``.
        gpu_memory_gb: accelerator memory in GB (``None`` if unknown / CPU).
        time_budget_s: wall-clock budget for training in seconds.
        est_full_epoch_s: estimated seconds for one full-fine-tuning epoch.
        pairable: single-label classes with at least 2 examples each (contrastive pairs possible).
        run_epochs: epochs a fine-tuning run of this recipe trains, the step budget
            (``train.min_steps``) included: on 50 examples 200 steps are 100 epochs, not
            ``min_epochs``. ``None``: ``min_epochs``.
        contrastive_epochs: the contrastive pair phase in full-epoch equivalents (every pair
            step is a forward and backward pass over 2 x pair_batch_size sentences).
            ``None``: contrastive has no time rule.
    """

    n_train: int
    n_classes: int | None
    min_per_class: int | None
    probe_score: float | None
    probe_chance: float | None
    model_params: int
    device: str
    gpu_memory_gb: float | None = None
    time_budget_s: float | None = None
    est_full_epoch_s: float | None = None
    pairable: bool = False
    run_epochs: float | None = None
    contrastive_epochs: float | None = None


@dataclass
class Decision:
    """Outcome of :func:`decide_strategy`.

    Attributes:
        strategy: ``"frozen"``, ``"lora"`` or ``"full"``.
        reasons: why, one sentence per rule that fired, with its numbers.
        thresholds: the thresholds in force (defaults plus overrides).
        warnings: advice that does not change the strategy (e.g. try another model).
        preferred: what the data alone asked for, before the compute rules.
        excluded: strategies ruled out by compute, with the reason.
        signals: the input signals (normalised), for the record.
    """

    strategy: str
    reasons: list[str]
    thresholds: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    preferred: str | None = None
    excluded: dict[str, str] = field(default_factory=dict)
    signals: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for ``metrics.json`` and the model card)."""
        return asdict(self)


# --------------------------------------------------------------------------- helpers

def _fmt_int(x: float) -> str:
    return f"{int(x):,}"


def _fmt_params(x: float) -> str:
    return f"{x / 1e6:.1f}M"


def _validate(s: Signals) -> Signals:
    """Check ranges and normalise the device name; raise ConfigError on nonsense."""
    def bad(name: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"auto strategy signal {name}", expected=expected, found=repr(value),
                           fix=f"pass a measured {name} or None if it is unknown")

    if not isinstance(s.n_train, Integral) or s.n_train < 1:
        raise bad("n_train", "a positive integer", s.n_train)
    if s.n_classes is not None and (not isinstance(s.n_classes, Integral) or s.n_classes < 2):
        raise bad("n_classes", "an integer >= 2 or None", s.n_classes)
    if s.min_per_class is not None and not (0 <= s.min_per_class <= s.n_train):
        raise bad("min_per_class", f"0..n_train ({s.n_train}) or None", s.min_per_class)
    for name in ("probe_score", "probe_chance"):
        value = getattr(s, name)
        if value is not None and not (0.0 <= float(value) <= 1.0):
            raise bad(name, "a value in [0, 1] or None", value)
    if not isinstance(s.model_params, Integral) or s.model_params < 1:
        raise bad("model_params", "a positive integer", s.model_params)
    device = str(s.device).split(":")[0].lower()
    if device not in DEVICES:
        raise ConfigError("auto strategy signal device", expected=" | ".join(DEVICES),
                          found=repr(s.device), fix="pass the device training will run on")
    for name in ("gpu_memory_gb", "time_budget_s", "est_full_epoch_s", "run_epochs", "contrastive_epochs"):
        value = getattr(s, name)
        if value is not None and not float(value) > 0:
            raise bad(name, "a positive number or None", value)
    clean = asdict(s)
    for name in ("n_train", "n_classes", "min_per_class", "model_params"):
        if clean[name] is not None:
            clean[name] = int(clean[name])
    for name in ("probe_score", "probe_chance", "gpu_memory_gb", "time_budget_s",
                 "est_full_epoch_s", "run_epochs", "contrastive_epochs"):
        if clean[name] is not None:
            clean[name] = float(clean[name])
    clean["device"] = device
    clean["pairable"] = bool(s.pairable)
    return Signals(**clean)


def _thresholds(overrides: dict[str, float] | None) -> dict[str, float]:
    th = dict(DEFAULT_THRESHOLDS)
    for key, value in (overrides or {}).items():
        if key not in th:
            raise ConfigError(f"auto threshold {key!r}", expected=", ".join(sorted(th)),
                              found=repr(key), fix="use one of the documented threshold names")
        th[key] = value
    return th


# --------------------------------------------------------------------------- rules

def decide_strategy(signals: Signals, thresholds: dict[str, float] | None = None) -> Decision:
    """Choose ``contrastive``, ``frozen``, ``lora`` or ``full`` from measured signals.

    Data rules (first match wins), giving the *preferred* strategy:

    0. pairable labels, rarest class ``<= few_shot_per_class`` and ``n_train <= few_shot_max_train``
       -> contrastive (SetFit-style pairs, then the head).
    1. ``n_train < few_labels_total`` -> lora, trained for at least ``train.min_steps`` steps
       (classification; regression -> frozen), whatever the probe says.
    2. rarest class ``< few_labels_per_class`` -> frozen.
    3. probe ``>= probe_high`` and skill ``>= probe_high_skill`` -> frozen
       (the representation already fits; fine-tuning has little headroom).
    4. ``n_train >= large_data`` -> full.
    5. otherwise -> lora (moderate data, headroom left: the hybrid).

    Independently, skill ``< near_chance_skill`` adds a warning to try another
    pretrained model (``nlp-transfer rank-models``).

    Compute rules exclude strategies; the preferred one steps down
    full -> lora -> frozen (contrastive -> frozen) until it is allowed (frozen always is):

    * CPU: full if ``model_params > cpu_full_max_params``; lora if
      ``> cpu_lora_max_params``.
    * Accelerator with known memory: a strategy whose estimated need
      (``params * bytes_per_param_* * memory_overhead``) exceeds it.
    * Time budget with an epoch estimate: full if the run's epochs (``min_epochs``, or
      ``run_epochs`` under the step budget when more) do not fit, lora if as many LoRA epochs
      (``lora_epoch_fraction``) do not, contrastive if its pair phase
      (``contrastive_epochs``) does not.

    Args:
        signals: the measured signals.
        thresholds: overrides of :data:`DEFAULT_THRESHOLDS` (unknown names raise).

    Returns:
        The :class:`Decision`, with a reason carrying the numbers for every rule
        that fired.
    """
    s = _validate(signals)
    th = _thresholds(thresholds)
    reasons: list[str] = []
    warnings: list[str] = []

    # ---- probe reading
    chance: float | None = s.probe_chance
    chance_note = ""
    if s.probe_score is not None and chance is None:
        chance = 1.0 / s.n_classes if s.n_classes else 0.0
        chance_note = (f", chance assumed {chance:.3f} = 1/{s.n_classes} classes" if s.n_classes
                       else ", chance assumed 0")
    skill: float | None = None
    if s.probe_score is not None and chance is not None:
        skill = (s.probe_score - chance) / (1.0 - chance) if chance < 1.0 else 0.0

    # ---- data rules -> preferred strategy
    preferred = data_rule(s, th, skill, chance_note, reasons)

    if skill is not None and skill < th["near_chance_skill"]:
        msg = (f"frozen features are near chance: probe={s.probe_score:.3f} vs chance="
               f"{chance:.3f} (skill={skill:.3f} < near_chance_skill="
               f"{th['near_chance_skill']:.2f}); the pretrained representation does not fit "
               "this task, consider another model (nlp-transfer rank-models)")
        warnings.append(msg)
        reasons.append(msg)

    # ---- compute rules -> excluded strategies
    excluded = compute_exclusions(s, th, reasons, warnings)

    if preferred != "contrastive":  # only reported when it was the data's choice
        excluded.pop("contrastive", None)
    strategy = preferred
    while strategy in excluded:
        lower = FALLBACK[strategy]
        reasons.append(f"{strategy} excluded: {excluded[strategy]}; falling back to {lower}")
        strategy = lower

    return Decision(strategy=strategy, reasons=reasons, thresholds=th, warnings=warnings,
                    preferred=preferred, excluded=excluded, signals=asdict(s))


def compute_exclusions(s: Signals, th: dict[str, float], reasons: list[str],
                       warnings: list[str]) -> dict[str, str]:
    """The compute rules of :func:`decide_strategy`: the strategies the device, memory and time
    budget exclude, each with its reason (numbers included); notes go to ``reasons``/``warnings``."""
    excluded: dict[str, str] = {}
    p = s.model_params
    if s.device == "cpu":
        if p > th["cpu_full_max_params"]:
            for strat in ("full", "contrastive"):  # both update every encoder weight
                excluded[strat] = (f"on CPU, model_params={_fmt_params(p)} > cpu_full_max_params="
                                   f"{_fmt_params(th['cpu_full_max_params'])}")
        if p > th["cpu_lora_max_params"]:
            excluded["lora"] = (f"on CPU, model_params={_fmt_params(p)} > cpu_lora_max_params="
                                f"{_fmt_params(th['cpu_lora_max_params'])}")
    elif s.gpu_memory_gb is None:
        reasons.append(f"device={s.device} with unknown memory: memory rules not applied")
    else:
        for strat, key in (("full", "bytes_per_param_full"), ("contrastive", "bytes_per_param_full"),
                           ("lora", "bytes_per_param_lora")):
            need = p * th[key] * th["memory_overhead"] / 1e9
            if need > s.gpu_memory_gb:
                excluded[strat] = (
                    f"{strat} needs ~{need:.1f} GB ({_fmt_params(p)} params x {th[key]:g} B x "
                    f"{th['memory_overhead']:g}) > gpu_memory_gb={s.gpu_memory_gb:.1f}")
    if s.time_budget_s is not None and s.est_full_epoch_s is not None:
        e, b = s.est_full_epoch_s, s.time_budget_s
        n_ep = max(th["min_epochs"], s.run_epochs or 0)
        budget_note = " (the step budget train.min_steps)" if n_ep > th["min_epochs"] else ""
        full_t = n_ep * e
        lora_t = n_ep * th["lora_epoch_fraction"] * e
        if full_t > b:
            excluded.setdefault("full", (
                f"{n_ep:g} full epochs{budget_note} x {e:.0f} s = {full_t:.0f} s > time_budget_s={b:.0f}"))
        if lora_t > b:
            excluded.setdefault("lora", (
                f"{n_ep:g} LoRA epochs{budget_note} x {th['lora_epoch_fraction']:g} x {e:.0f} s = "
                f"{lora_t:.0f} s > time_budget_s={b:.0f}"))
        if s.contrastive_epochs is not None and s.contrastive_epochs * e > b:
            excluded.setdefault("contrastive", (
                f"the pair phase, {s.contrastive_epochs:g} full-epoch equivalents x {e:.0f} s = "
                f"{s.contrastive_epochs * e:.0f} s > time_budget_s={b:.0f}"))
        frozen_t = th["frozen_cost_fraction"] * e
        if frozen_t > b:
            warnings.append(
                f"even the frozen feature pass (~{frozen_t:.0f} s = {th['frozen_cost_fraction']:g}"
                f" x {e:.0f} s) exceeds time_budget_s={b:.0f}; subsample the data or raise "
                "the budget")
    elif s.time_budget_s is not None:
        reasons.append(f"time_budget_s={s.time_budget_s:.0f} given but no epoch-time estimate; "
                       "the budget was not used")
    return excluded


def data_rule(s: Signals, th: dict[str, float], skill: float | None, chance_note: str,
              reasons: list[str]) -> str:
    """The strategy the data asks for (rules 0-5 of :func:`decide_strategy`); appends its reason."""
    probe_high = (s.probe_score is not None and skill is not None
                  and s.probe_score >= th["probe_high"] and skill >= th["probe_high_skill"])
    if few_shot(s, th):
        preferred = "contrastive"
        reasons.append(
            f"few-shot: rarest class has {_fmt_int(s.min_per_class)} examples <= few_shot_per_class="
            f"{_fmt_int(th['few_shot_per_class'])} and n_train={_fmt_int(s.n_train)} <= few_shot_max_train="
            f"{_fmt_int(th['few_shot_max_train'])}; contrastive pairs of the labelled examples tune the encoder "
            "before the head (SetFit's method), which beats frozen features at this size (benchmarks/fewshot.py)")
    elif s.n_train < th["few_labels_total"] and s.n_classes is None:
        preferred = "frozen"
        reasons.append(
            f"few labels: n_train={_fmt_int(s.n_train)} < few_labels_total="
            f"{_fmt_int(th['few_labels_total'])} for regression; train a head on frozen features")
    elif s.n_train < th["few_labels_total"]:
        preferred = "lora"
        reasons.append(
            f"few labels: n_train={_fmt_int(s.n_train)} < few_labels_total="
            f"{_fmt_int(th['few_labels_total'])}; LoRA trained for at least train.min_steps optimizer "
            "steps beat frozen features by 1-8 pt at 50-800 examples (README 'Step budgets'), "
            "at minutes instead of seconds")
    elif s.min_per_class is not None and s.min_per_class < th["few_labels_per_class"]:
        preferred = "frozen"
        reasons.append(
            f"few labels per class: rarest class has {_fmt_int(s.min_per_class)} examples < "
            f"few_labels_per_class={_fmt_int(th['few_labels_per_class'])}; frozen features "
            "are the safe choice")
    elif probe_high:
        preferred = "frozen"
        reasons.append(
            f"frozen features already fit: probe={s.probe_score:.3f} >= probe_high="
            f"{th['probe_high']:.2f} and skill={skill:.3f} >= probe_high_skill="
            f"{th['probe_high_skill']:.2f}{chance_note}; at most {1 - s.probe_score:.3f} "
            "left for fine-tuning to gain")
    elif s.n_train >= th["large_data"]:
        preferred = "full"
        reasons.append(
            f"large dataset: n_train={_fmt_int(s.n_train)} >= large_data="
            f"{_fmt_int(th['large_data'])}; enough labels to fine-tune every weight")
    else:
        preferred = "lora"
        probe_txt = ("no probe score measured" if s.probe_score is None else
                     f"probe={s.probe_score:.3f} (skill={skill:.3f}{chance_note}) leaves headroom "
                     f"below probe_high={th['probe_high']:.2f}")
        reasons.append(
            f"moderate dataset: few_labels_total={_fmt_int(th['few_labels_total'])} <= "
            f"n_train={_fmt_int(s.n_train)} < large_data={_fmt_int(th['large_data'])} and "
            f"{probe_txt}; adapt the encoder cheaply with LoRA (hybrid)")

    return preferred


def few_shot(s: Signals, th: dict[str, float]) -> bool:
    """The few-shot rule: pairable labels, a small rarest class and a small training set."""
    return bool(s.pairable and s.min_per_class is not None and s.min_per_class <= th["few_shot_per_class"]
                and s.n_train <= th["few_shot_max_train"])


def explain(decision: Decision) -> str:
    """Human-readable account of a decision (printed by ``train`` under ``strategy: auto``)."""
    head = f"strategy: auto -> {decision.strategy}"
    if decision.preferred and decision.preferred != decision.strategy:
        head += f" (data alone suggested {decision.preferred})"
    lines = [head, "  because:"]
    lines += [f"    - {r}" for r in decision.reasons]
    extra = [w for w in decision.warnings if w not in decision.reasons]
    if extra:
        lines.append("  warnings:")
        lines += [f"    ! {w}" for w in extra]
    changed = {k: v for k, v in decision.thresholds.items() if DEFAULT_THRESHOLDS.get(k) != v}
    if changed:
        lines.append("  thresholds overridden: "
                     + ", ".join(f"{k}={v:g}" for k, v in sorted(changed.items())))
    return "\n".join(lines)
