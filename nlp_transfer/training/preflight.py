"""Preflight: catch known-bad launcher / config combinations before any work starts.

``check(cfg)`` runs at the start of ``recipe.train`` (before the ``Accelerator`` exists)
and reads the launch plan from the environment ``accelerate launch`` / ``torchrun`` set
up. ``nlp-transfer preflight --accelerate-config accelerate_configs/fsdp.yaml --config
recipe.yaml key=value`` runs the same checks from an accelerate config file, so a job
can be checked on a login node before it waits in a queue.

Each problem is one line: what, what was expected, what was found, and how to fix it.

What is checked (first failure wins):

* metric names (``eval.metrics``, ``eval.metric_for_best``) exist;
* a GPU config (``MULTI_GPU``/FSDP/DeepSpeed without ``use_cpu``, or fp16/bf16 from the
  launcher) on a machine without GPUs, more GPU processes than GPUs, fp16 on CPU;
* ``train.batch_size`` and ``eval.batch_size`` divisible by the process count (the
  recipe splits each global batch across processes);
* DeepSpeed: ZeRO-3 (parameters partitioned: the adapter / best weights the recipe
  saves would be empty shards), DeepSpeed not installed;
* FSDP v1 with a strategy that freezes parameters (``Strategy.freezes_parameters``: lora,
  frozen, partial) but without ``use_orig_params``; wrap classes absent from the model; a frozen transformer layer
  in the same FSDP unit as trainable parameters (its gradient memory is allocated
  and reduce-scattered every step: partial/hybrid then costs as much as full).

Set ``NLP_TRANSFER_SKIP_PREFLIGHT=1`` to skip the checks (when a check is wrong for your
setup; please report it).

Environment read (accelerate 1.15 names): ``ACCELERATE_USE_CPU``, ``ACCELERATE_USE_FSDP``,
``FSDP_VERSION``, ``FSDP_USE_ORIG_PARAMS``, ``FSDP_AUTO_WRAP_POLICY``,
``FSDP_TRANSFORMER_CLS_TO_WRAP``, ``FSDP_MIN_NUM_PARAMS``, ``ACCELERATE_USE_DEEPSPEED``,
``ACCELERATE_DEEPSPEED_ZERO_STAGE``, ``ACCELERATE_DEEPSPEED_CONFIG_FILE``,
``ACCELERATE_MIXED_PRECISION``, ``WORLD_SIZE`` / ``LOCAL_WORLD_SIZE`` (torchrun).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nlp_transfer.errors import ConfigError, EnvironmentSetupError, NLPTransferError
from nlp_transfer.registry import STRATEGIES

GPU_MIXED_PRECISION = ("fp16", "bf16")
GPU_DISTRIBUTED = ("MULTI_GPU", "FSDP", "DEEPSPEED")
FSDP_DOC = "accelerate_configs/fsdp.yaml"


def gpu_count() -> int:
    """CUDA devices visible to this process (patched in tests)."""
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def deepspeed_installed() -> bool:
    """Whether the deepspeed package can be imported (patched in tests)."""
    return importlib.util.find_spec("deepspeed") is not None


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    v = str(value).strip().lower()
    if v in ("y", "yes", "t", "true", "on", "1"):
        return True
    if v in ("n", "no", "f", "false", "off", "0"):
        return False
    return default


def _zero_stage_from_json(path: str) -> int | None:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError("DeepSpeed config file", expected="an existing JSON file", found=f"'{path}' does not exist",
                          fix="fix deepspeed_config_file in the accelerate config (ACCELERATE_DEEPSPEED_CONFIG_FILE)")
    try:
        stage = json.loads(p.read_text()).get("zero_optimization", {}).get("stage")
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"DeepSpeed config file {p}", expected="a JSON object", found=f"{type(e).__name__}: {e}",
                          fix="fix the JSON (see the DeepSpeed config docs)") from None
    return int(stage) if isinstance(stage, (int, float)) or (isinstance(stage, str) and stage.isdigit()) else None


@dataclass
class LaunchPlan:
    """How training is about to run: what accelerate will do, in a few fields."""
    #: "environment" or the accelerate config file it was read from.
    source: str = "environment"
    #: accelerate's DistributedType value: NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED.
    distributed_type: str = "NO"
    #: Total processes (all machines).
    num_processes: int = 1
    num_machines: int = 1
    use_cpu: bool = False
    mixed_precision: str = "no"
    #: The plan asks for GPUs explicitly (GPU distributed type, or launcher fp16/bf16 without cpu).
    gpu_requested: bool = False
    fsdp_version: int = 1
    fsdp_use_orig_params: bool = True
    fsdp_auto_wrap_policy: str = "NO_WRAP"
    fsdp_wrap_classes: list[str] = field(default_factory=list)
    fsdp_min_num_params: int = 0
    zero_stage: int | None = None
    deepspeed_config_file: str | None = None
    #: This node's rank among the machines (torchrun GROUP_RANK / accelerate machine_rank).
    machine_rank: int = 0
    #: This process's global and per-node rank (RANK / LOCAL_RANK); 0 when read from a config file.
    rank: int = 0
    local_rank: int = 0
    #: Where every node meets (MASTER_ADDR:MASTER_PORT / main_process_ip:main_process_port).
    main_process_ip: str | None = None
    main_process_port: int | None = None
    rdzv_backend: str | None = None

    @property
    def processes_per_machine(self) -> int:
        return max(1, self.num_processes // max(1, self.num_machines))

    def ranks_of_machine(self, machine_rank: int | None = None) -> list[int]:
        """The global ranks one node runs (torchrun and accelerate number them node by node)."""
        m = self.machine_rank if machine_rank is None else machine_rank
        per = self.processes_per_machine
        return list(range(m * per, (m + 1) * per))

    def launch_plan(self, global_batch: int) -> dict[str, Any]:
        """What a launch of this plan runs, without running it: processes, ranks per node, the
        per-process share of the global batch, and where the nodes meet."""
        per = self.processes_per_machine
        return {"machines": self.num_machines, "processes": self.num_processes, "processes_per_machine": per,
                "ranks": {m: self.ranks_of_machine(m) for m in range(self.num_machines)},
                "global_batch": global_batch, "per_process_batch": global_batch // max(1, self.num_processes),
                "rendezvous": (f"{self.main_process_ip}:{self.main_process_port}"
                               if self.main_process_ip and self.main_process_port else None),
                "rdzv_backend": self.rdzv_backend}

    def describe(self) -> str:
        parts = [f"{self.distributed_type}", f"{self.num_processes} process(es)"]
        if self.num_machines > 1:
            parts.append(f"{self.num_machines} machines")
        parts.append(f"mixed_precision={self.mixed_precision}")
        if self.use_cpu:
            parts.append("cpu")
        if self.distributed_type == "FSDP":
            parts.append(f"fsdp v{self.fsdp_version} use_orig_params={self.fsdp_use_orig_params} "
                         f"wrap={self.fsdp_auto_wrap_policy}"
                         + (f"({','.join(self.fsdp_wrap_classes)})" if self.fsdp_wrap_classes else ""))
        if self.distributed_type == "DEEPSPEED":
            parts.append(f"ZeRO-{self.zero_stage}")
        if self.num_machines > 1:
            parts.append(f"this node: machine_rank {self.machine_rank}, ranks {self.ranks_of_machine()}, "
                         f"meeting at {self.main_process_ip}:{self.main_process_port}")
        return f"{', '.join(parts)} (from {self.source})"

    # ---- constructors -------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "LaunchPlan":
        """The plan ``accelerate launch`` / ``torchrun`` handed to this process."""
        env = os.environ if environ is None else environ
        use_cpu = _flag(env.get("ACCELERATE_USE_CPU"))
        world = int(env.get("WORLD_SIZE") or 1)
        local = int(env.get("LOCAL_WORLD_SIZE") or world)
        mp = (env.get("ACCELERATE_MIXED_PRECISION") or "no").strip().lower()
        port = env.get("MASTER_PORT")
        plan = cls(source="environment", num_processes=world, num_machines=max(1, world // max(1, local)),
                   use_cpu=use_cpu, mixed_precision=mp, machine_rank=int(env.get("GROUP_RANK") or 0),
                   rank=int(env.get("RANK") or 0), local_rank=int(env.get("LOCAL_RANK") or 0),
                   main_process_ip=env.get("MASTER_ADDR"), main_process_port=int(port) if port else None,
                   rdzv_backend=env.get("TORCHELASTIC_RDZV_BACKEND") or env.get("PET_RDZV_BACKEND"))
        if _flag(env.get("ACCELERATE_USE_DEEPSPEED")):
            plan.distributed_type = "DEEPSPEED"
            ds_file = env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
            if ds_file and ds_file.lower() != "none":
                plan.deepspeed_config_file = ds_file
                plan.zero_stage = _zero_stage_from_json(ds_file)
            else:
                plan.zero_stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") or 2)
        elif _flag(env.get("ACCELERATE_USE_FSDP")):
            plan.distributed_type = "FSDP"
            plan.fsdp_version = int(env.get("FSDP_VERSION") or 1)
            # FullyShardedDataParallelPlugin's default when the variable is absent is False.
            plan.fsdp_use_orig_params = _flag(env.get("FSDP_USE_ORIG_PARAMS"), default=False)
            plan.fsdp_auto_wrap_policy = (env.get("FSDP_AUTO_WRAP_POLICY") or "NO_WRAP").upper()
            plan.fsdp_wrap_classes = [c.strip() for c in (env.get("FSDP_TRANSFORMER_CLS_TO_WRAP") or "").split(",")
                                      if c.strip()]
            plan.fsdp_min_num_params = int(env.get("FSDP_MIN_NUM_PARAMS") or 0)
        elif world > 1:
            # A launcher asking for fp16/bf16 without --cpu meant GPUs (multi_gpu.yaml); plain
            # torchrun on a CPU machine is gloo DDP (MULTI_CPU).
            wants_gpu = not use_cpu and (gpu_count() > 0 or mp in GPU_MIXED_PRECISION)
            plan.distributed_type = "MULTI_GPU" if wants_gpu else "MULTI_CPU"
        plan.gpu_requested = not use_cpu and (plan.distributed_type in ("FSDP", "DEEPSPEED")
                                              or mp in GPU_MIXED_PRECISION)
        return plan

    @classmethod
    def from_accelerate_config(cls, path: str | Path) -> "LaunchPlan":
        """The plan ``accelerate launch --config_file path`` would produce."""
        from accelerate.commands.config.config_args import load_config_from_file

        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError("accelerate config", expected="an existing accelerate config YAML",
                              found=f"'{path}' does not exist",
                              fix="pass one of accelerate_configs/*.yaml or run `accelerate config`")
        try:
            conf = load_config_from_file(str(p))
        except Exception as e:  # noqa: BLE001 - yaml, enum and unknown-key errors all mean "bad file"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"accelerate config {p}", expected="a valid accelerate config (see accelerate_configs/*.yaml)",
                              found=f"{type(e).__name__}: {first[:240]}",
                              fix="fix or remove the key named, or regenerate the file with `accelerate config`") from None
        dist = getattr(conf.distributed_type, "value", str(conf.distributed_type))
        use_cpu = bool(getattr(conf, "use_cpu", False))
        n = int(getattr(conf, "num_processes", 1) or 1)
        if n < 0:  # -1: one per visible GPU
            n = max(1, gpu_count())
        mp = str(getattr(conf, "mixed_precision", None) or "no").lower()
        port = getattr(conf, "main_process_port", None)
        plan = cls(source=str(path), distributed_type=str(dist), num_processes=n,
                   num_machines=int(getattr(conf, "num_machines", 1) or 1), use_cpu=use_cpu, mixed_precision=mp,
                   machine_rank=int(getattr(conf, "machine_rank", 0) or 0),
                   main_process_ip=getattr(conf, "main_process_ip", None) or None,
                   main_process_port=int(port) if port else None,
                   rdzv_backend=getattr(conf, "rdzv_backend", None) or None)
        fsdp = dict(getattr(conf, "fsdp_config", None) or {})
        if plan.distributed_type == "FSDP":
            plan.fsdp_version = int(fsdp.get("fsdp_version", 1))
            # `accelerate launch` defaults --fsdp_use_orig_params to true when the key is absent.
            plan.fsdp_use_orig_params = _flag(str(fsdp.get("fsdp_use_orig_params", "true")), default=True)
            plan.fsdp_auto_wrap_policy = str(fsdp.get("fsdp_auto_wrap_policy") or "NO_WRAP").upper()
            cls_names = fsdp.get("fsdp_transformer_layer_cls_to_wrap") or ""
            if isinstance(cls_names, (list, tuple)):
                cls_names = ",".join(str(c) for c in cls_names)
            plan.fsdp_wrap_classes = [c.strip() for c in str(cls_names).split(",") if c.strip()]
            plan.fsdp_min_num_params = int(fsdp.get("fsdp_min_num_params", int(1e8)))
        ds = dict(getattr(conf, "deepspeed_config", None) or {})
        if plan.distributed_type == "DEEPSPEED":
            ds_file = ds.get("deepspeed_config_file")
            if ds_file and str(ds_file).lower() != "none":
                plan.deepspeed_config_file = str(ds_file)
                plan.zero_stage = _zero_stage_from_json(str(ds_file))
            else:
                plan.zero_stage = int(ds.get("zero_stage", 2))
        plan.gpu_requested = not use_cpu and (plan.distributed_type in GPU_DISTRIBUTED
                                              or mp in GPU_MIXED_PRECISION)
        return plan


# --------------------------------------------------------------------------- FSDP units

@dataclass
class FsdpUnit:
    """The parameters one FSDP (v1) unit would flatten together."""
    name: str
    trainable: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    #: Transformer layers whose parameters all land in this unit and are all frozen.
    frozen_layers: list[str] = field(default_factory=list)

    @property
    def mixed(self) -> bool:
        return bool(self.trainable and self.frozen)


def fsdp_units(model: Any, policy: str, wrap_classes: list[str] | None = None,
               min_num_params: int = 0) -> list[FsdpUnit]:
    """Simulate FSDP v1 auto-wrapping (post-order, children first, like torch's
    ``_recursive_wrap``) and return the units with their parameter names.

    ``policy``: ``TRANSFORMER_BASED_WRAP`` (modules whose class name is in
    ``wrap_classes``), ``SIZE_BASED_WRAP`` (modules whose not-yet-wrapped parameters
    number at least ``min_num_params``; ModuleList/ModuleDict never) or ``NO_WRAP``."""
    from torch import nn

    classes = set(wrap_classes or [])
    policy = (policy or "NO_WRAP").upper()
    seen: set[int] = set()
    units: list[FsdpUnit] = []
    owner: dict[int, str] = {}

    def should_wrap(module: nn.Module, numel: int) -> bool:
        if policy == "TRANSFORMER_BASED_WRAP":
            return type(module).__name__ in classes
        if policy == "SIZE_BASED_WRAP":
            return numel >= min_num_params and not isinstance(module, (nn.ModuleList, nn.ModuleDict))
        return False

    def visit(module: nn.Module, prefix: str, root: bool) -> list[tuple[str, Any]]:
        remaining: list[tuple[str, Any]] = []
        for pname, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                remaining.append((f"{prefix}{pname}", p))
        for cname, child in module.named_children():
            remaining += visit(child, f"{prefix}{cname}.", False)
        if root or should_wrap(module, sum(p.numel() for _, p in remaining)):
            unit = FsdpUnit(prefix.rstrip(".") or "(root)")
            for n, p in remaining:
                (unit.trainable if p.requires_grad else unit.frozen).append(n)
                owner[id(p)] = unit.name
            units.append(unit)
            return []
        return remaining

    visit(model, "", True)
    # Which whole transformer layers (and frozen copies of them, e.g. PEFT's original_module)
    # are frozen and owned by a single unit.
    layer_cls = _layer_class(model)
    by_name = {u.name: u for u in units}
    if layer_cls is not None:
        for name, mod in model.named_modules():
            if type(mod).__name__ != layer_cls:
                continue
            params = list(mod.parameters())
            owners = {owner.get(id(p)) for p in params}
            if params and len(owners) == 1 and not any(p.requires_grad for p in params):
                by_name[owners.pop()].frozen_layers.append(name)
    return units


def _layer_class(model: Any) -> str | None:
    """Class name of the encoder's transformer blocks (the largest ModuleList's items)."""
    from nlp_transfer.strategies import find_layers
    try:
        _, layers = find_layers(model)
    except NLPTransferError:
        return None
    return type(layers[0]).__name__ if len(layers) else None


def _skeleton(cfg: Any) -> Any | None:
    """The model training will build, on the meta device (no weights read), with the
    strategy's trainability applied. None when it cannot be built here (training will
    then report the model problem itself)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from nlp_transfer.model import HEADS, TransferModel, get_task, resolve_model
    from nlp_transfer.strategies import get_strategy
    try:
        path = resolve_model(cfg.model.name)
        mconf = AutoConfig.from_pretrained(path, revision=cfg.model.revision,
                                           trust_remote_code=cfg.model.trust_remote_code)
        spec = get_task(cfg.task)
        with torch.device("meta"):
            encoder = AutoModel.from_config(mconf, trust_remote_code=cfg.model.trust_remote_code)
            head = HEADS[spec.head](mconf.hidden_size, spec.num_outputs(2), 0.0)
        model = TransferModel(encoder, head, "mean", cfg.task)
        if not getattr(STRATEGIES.get(cfg.strategy.name), "concrete", False):  # auto: resolved later
            return None
        return get_strategy(cfg.strategy).apply(model)
    except Exception:  # noqa: BLE001 - model problems are reported by training with their own message
        return None


# --------------------------------------------------------------------------- the checks

def _metric_problem(cfg: Any) -> NLPTransferError | None:
    from nlp_transfer.metrics import ALIASES, AVAILABLE, canonical_metric, load_metric
    from nlp_transfer.model import TASKS
    spec = TASKS.get(cfg.task)
    names = list(cfg.eval.metrics or (spec.default_metrics if spec else []))
    for name in names:
        if canonical_metric(name) is None:
            try:
                load_metric(name)  # a Hub metric or a local script: needs to load
            except NLPTransferError as e:
                return e
    best = cfg.eval.metric_for_best
    multi_key = any(canonical_metric(n) in ("seqeval", "multilabel") or canonical_metric(n) is None for n in names)
    if best and best != "loss" and canonical_metric(best) is None and not multi_key:
        import difflib
        options = sorted(set(AVAILABLE) | set(ALIASES) | {"loss"})
        guess = difflib.get_close_matches(str(best).lower(), options, n=1)
        return ConfigError("eval.metric_for_best", expected=f"'loss' or one of the metrics {names}",
                           found=repr(best) + (f" (did you mean '{guess[0]}'?)" if guess else ""),
                           fix="pass eval.metric_for_best=<one of eval.metrics> or add it to eval.metrics")
    return None


def problems(cfg: Any, plan: LaunchPlan | None = None, model: Any = None) -> list[NLPTransferError]:
    """Every problem found (each a one-line error), in the order they are reported."""
    plan = plan or LaunchPlan.from_env()
    found: list[NLPTransferError] = []
    where = f"accelerate config {plan.source}" if plan.source != "environment" else "launch environment"
    gpus = gpu_count()

    metric = _metric_problem(cfg)
    if metric is not None:
        found.append(metric)

    # ---- the machine ---------------------------------------------------------------
    if plan.gpu_requested and gpus == 0:
        what = (f"{plan.distributed_type} on {plan.num_processes} process(es)" if plan.distributed_type != "NO"
                else f"a single-GPU setup (mixed_precision={plan.mixed_precision})")
        found.append(EnvironmentSetupError(
            f"{where}", expected="a machine with CUDA GPUs for a GPU config",
            found=f"{what} but no GPU is visible (torch.cuda.is_available() is False)",
            fix="run on a GPU node, or use accelerate_configs/cpu.yaml (accelerate launch --cpu, mixed_precision no)"))
    elif plan.gpu_requested and plan.processes_per_machine > gpus:
        found.append(EnvironmentSetupError(
            f"{where}", expected=f"at most {gpus} GPU process(es) per machine (one per GPU)",
            found=f"{plan.processes_per_machine} processes per machine on {gpus} GPU(s)",
            fix=f"pass --num_processes {gpus * plan.num_machines} to accelerate launch, or run on more GPUs"))
    mp = cfg.train.mixed_precision if cfg.train.mixed_precision != "auto" else plan.mixed_precision
    if mp == "fp16" and gpus == 0 and not (plan.gpu_requested and gpus == 0):
        found.append(EnvironmentSetupError(
            "mixed precision", expected="a CUDA GPU for fp16",
            found=f"fp16 (from {'train.mixed_precision' if cfg.train.mixed_precision != 'auto' else where}) "
                  "on a machine without GPUs",
            fix="pass train.mixed_precision=no (or bf16 on CPU), or run on a GPU"))

    found += _machine_problems(plan, where)

    # ---- batches -------------------------------------------------------------------
    n = plan.num_processes
    if n > 1:
        for key, value in (("train.batch_size", cfg.train.batch_size), ("eval.batch_size", cfg.eval.batch_size)):
            if value and value % n:  # eval.batch_size=None: a per-process default, always divisible
                lower = (value // n) * n or n
                found.append(ConfigError(
                    key, expected=f"a multiple of the {n} processes (each global batch is split across them)",
                    found=str(value), fix=f"pass {key}={lower} or {lower + n}, or launch {value}-divisible processes"))

    # ---- DeepSpeed -------------------------------------------------------------------
    if plan.distributed_type == "DEEPSPEED":
        if plan.zero_stage == 3:
            saved = getattr(STRATEGIES.get(cfg.strategy.name), "saved_weights", "the best weights and the model")
            found.append(EnvironmentSetupError(
                f"DeepSpeed in the {where}", expected=f"ZeRO stage 0-2 with strategy={cfg.strategy.name}",
                found=f"ZeRO-3, which partitions parameters: {saved} would be saved as empty shards",
                fix="use accelerate_configs/deepspeed_zero2.yaml (zero_stage: 2), or FSDP with accelerate_configs/fsdp.yaml"))
        if not deepspeed_installed():
            found.append(EnvironmentSetupError(
                f"DeepSpeed in the {where}", expected="the deepspeed package", found="it is not installed",
                fix="pip install deepspeed, or use accelerate_configs/multi_gpu.yaml / fsdp.yaml"))

    # ---- FSDP ------------------------------------------------------------------------
    if plan.distributed_type == "FSDP":
        model = model if model is not None else _skeleton(cfg)
        s = cfg.strategy.name
        if plan.fsdp_version == 1 and not plan.fsdp_use_orig_params:
            frozen = [n for n, p in model.named_parameters() if not p.requires_grad] if model is not None else None
            if frozen or (frozen is None and getattr(STRATEGIES.get(s), "freezes_parameters", True)):
                example = f" ({len(frozen)} frozen tensors, e.g. {frozen[0]})" if frozen else ""
                found.append(EnvironmentSetupError(
                    f"FSDP in the {where}",
                    expected=f"fsdp_use_orig_params: true with strategy={s}, which freezes parameters{example}",
                    found="fsdp_use_orig_params false: FSDP v1 cannot flatten frozen and trainable parameters together",
                    fix=f"set fsdp_use_orig_params: true (FSDP_USE_ORIG_PARAMS=true) as in {FSDP_DOC}, "
                        "or use fsdp2.yaml"))
                return found
        if model is not None:
            found += _fsdp_model_problems(plan, model, where)
    return found


def _machine_problems(plan: LaunchPlan, where: str) -> list[NLPTransferError]:
    """A multi-node plan whose nodes cannot meet or split the processes evenly."""
    found: list[NLPTransferError] = []
    if plan.num_machines > 1:
        if plan.num_processes % plan.num_machines:
            found.append(ConfigError(
                f"num_processes in the {where}", expected=f"a multiple of the {plan.num_machines} machines "
                                                          "(the same number of processes on every node)",
                found=str(plan.num_processes),
                fix=f"set num_processes to {plan.processes_per_machine * plan.num_machines} (total over all machines)"))
        if not plan.main_process_ip or not plan.main_process_port:
            found.append(ConfigError(
                f"rendezvous in the {where}", expected="main_process_ip and main_process_port of the rank-0 node",
                found=f"ip {plan.main_process_ip!r}, port {plan.main_process_port!r}",
                fix="pass --main_process_ip ADDR --main_process_port PORT (torchrun: --master_addr/--master_port)"))
        if not 0 <= plan.machine_rank < plan.num_machines:
            found.append(ConfigError(
                f"machine_rank in the {where}", expected=f"0 .. {plan.num_machines - 1}",
                found=str(plan.machine_rank), fix="pass --machine_rank N (N = this node's index, 0 on the main node)"))
    return found


def _fsdp_model_problems(plan: LaunchPlan, model: Any, where: str) -> list[NLPTransferError]:
    out: list[NLPTransferError] = []
    present = {type(m).__name__ for m in model.modules()}
    layer_cls = _layer_class(model)
    if plan.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP" and plan.fsdp_wrap_classes:
        missing = [c for c in plan.fsdp_wrap_classes if c not in present]
        if missing:
            out.append(EnvironmentSetupError(
                f"FSDP in the {where}", expected="fsdp_transformer_layer_cls_to_wrap naming the model's layer class",
                found=f"{missing} not in the model (its layers are {layer_cls})",
                fix=f"set fsdp_transformer_layer_cls_to_wrap: {layer_cls} (FSDP_TRANSFORMER_CLS_TO_WRAP={layer_cls})"))
            return out
    if plan.fsdp_version != 1:
        return out  # FSDP2 shards per parameter: mixed requires_grad is fine
    for unit in fsdp_units(model, plan.fsdp_auto_wrap_policy, plan.fsdp_wrap_classes, plan.fsdp_min_num_params):
        if unit.trainable and unit.frozen_layers:
            layers = unit.frozen_layers
            shown = ", ".join(layers[:3]) + (f" (+{len(layers) - 3} more)" if len(layers) > 3 else "")
            out.append(EnvironmentSetupError(
                f"FSDP unit '{unit.name}' ({plan.fsdp_auto_wrap_policy})",
                expected="frozen transformer layers in their own FSDP units",
                found=f"frozen layer(s) {shown} in one unit with {len(unit.trainable)} trainable parameter tensor(s) "
                      "(FSDP v1 would allocate and reduce-scatter gradients for the frozen weights)",
                fix=f"set fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP and fsdp_transformer_layer_cls_to_wrap: "
                    f"{layer_cls} as in {FSDP_DOC}, or use FSDP2 (accelerate_configs/fsdp2.yaml)"))
            break
    return out


def check(cfg: Any, plan: LaunchPlan | None = None, model: Any = None) -> LaunchPlan:
    """Raise the first problem found (one-line NLPTransferError); return the plan if none.

    Call before creating the ``Accelerator``: ``preflight.check(cfg)``."""
    plan = plan or LaunchPlan.from_env()
    if _flag(os.environ.get("NLP_TRANSFER_SKIP_PREFLIGHT")):
        return plan
    found = problems(cfg, plan, model)
    if found:
        raise found[0]
    return plan


# --------------------------------------------------------------------------- CLI

def _cmd_preflight(args: argparse.Namespace) -> int:
    from nlp_transfer.config import load_config
    cfg = load_config(args.config, args.overrides)
    plan = LaunchPlan.from_accelerate_config(args.accelerate_config) if args.accelerate_config \
        else LaunchPlan.from_env()
    for name in ("machine_rank", "main_process_ip", "main_process_port"):  # as accelerate launch overrides them
        if getattr(args, name, None) is not None:
            setattr(plan, name, getattr(args, name))
    if _flag(os.environ.get("NLP_TRANSFER_SKIP_PREFLIGHT")):
        print(f"preflight skipped (NLP_TRANSFER_SKIP_PREFLIGHT): {plan.describe()}")
        return 0
    found = problems(cfg, plan)
    if found:
        raise found[0]
    print(f"preflight ok: strategy={cfg.strategy.name}, {plan.describe()}")
    if plan.num_processes > 1:
        lp = plan.launch_plan(cfg.train.batch_size)
        print(f"launch plan: {lp['machines']} machine(s) x {lp['processes_per_machine']} process(es); ranks per "
              f"machine {lp['ranks']}; global batch {lp['global_batch']} = {lp['per_process_batch']} per process"
              + (f"; rendezvous {lp['rendezvous']} ({lp['rdzv_backend'] or 'static'})" if lp["rendezvous"] else ""))
    return 0


def add_subcommand(sub: "argparse._SubParsersAction") -> None:  # noqa: F821
    p = sub.add_parser("preflight", help="check a recipe against an accelerate config (or this environment) "
                                         "before launching")
    p.add_argument("--accelerate-config", help="accelerate config YAML (e.g. accelerate_configs/fsdp.yaml); "
                                               "default: the current environment")
    p.add_argument("--config", help="recipe YAML preset (e.g. recipes/configs/bbc_news.yaml)")
    p.add_argument("--machine_rank", "--machine-rank", type=int, help="this node's rank (as for accelerate launch)")
    p.add_argument("--main_process_ip", "--main-process-ip", help="address of the rank-0 node")
    p.add_argument("--main_process_port", "--main-process-port", type=int, help="port on the rank-0 node")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as for train")
    p.set_defaults(func=_cmd_preflight)


__all__ = ["LaunchPlan", "FsdpUnit", "fsdp_units", "problems", "check", "gpu_count", "deepspeed_installed",
           "add_subcommand"]
