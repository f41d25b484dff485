"""Preflight: known-bad launcher / recipe combinations are caught before training, with
one line saying what was expected, what was found and how to fix it.

The launch plan is read two ways and both are tested: from an accelerate config file
(``nlp-transfer preflight --accelerate-config ...``) and from the environment that
``accelerate launch`` hands to each process (built here with accelerate's own launcher
functions, so the variable names are the real ones). GPUs are simulated by patching
``preflight.gpu_count``; nothing is launched.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

pytest.importorskip("accelerate")

from accelerate.commands.launch import _validate_launch_command, launch_command_parser  # noqa: E402
from accelerate.utils.launch import (prepare_deepspeed_cmd_env, prepare_multi_gpu_env,  # noqa: E402
                                     prepare_simple_launcher_cmd_env)

from conftest import recipe_kwargs  # noqa: E402
from nlp_transfer.training import preflight as pf  # noqa: E402
from nlp_transfer.cli import main as cli  # noqa: E402
from nlp_transfer.config import RecipeConfig  # noqa: E402
from nlp_transfer.errors import ConfigError, EnvironmentSetupError  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "accelerate_configs"
LAUNCH_VARS = ("ACCELERATE_USE_CPU", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_MIXED_PRECISION",
               "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_DEEPSPEED_CONFIG_FILE", "FSDP_VERSION",
               "FSDP_USE_ORIG_PARAMS", "FSDP_AUTO_WRAP_POLICY", "FSDP_TRANSFORMER_CLS_TO_WRAP", "FSDP_MIN_NUM_PARAMS",
               "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NLP_TRANSFER_SKIP_PREFLIGHT")


@pytest.fixture(autouse=True)
def _clean_launch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from a plain single-process environment, whatever launched pytest."""
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """gpus(n): pretend n CUDA devices are visible (and DeepSpeed is installed)."""
    def set_gpus(n: int, deepspeed: bool = True) -> None:
        monkeypatch.setattr(pf, "gpu_count", lambda: n)
        monkeypatch.setattr(pf, "deepspeed_installed", lambda: deepspeed)
    set_gpus(0, deepspeed=False)
    return set_gpus


def recipe(tiny_model: Path, tmp_path: Path, strategy_name: str = "full", **sections: dict) -> RecipeConfig:
    return RecipeConfig(**recipe_kwargs(tiny_model, tmp_path / "data.csv", tmp_path / "out", strategy_name,
                                        **sections))


def variant(tmp_path: Path, name: str, **changes: object) -> Path:
    """A copy of accelerate_configs/<name>.yaml with some keys changed (None removes a key):
    fsdp_* keys go to fsdp_config, DeepSpeed keys to deepspeed_config, others to the top level."""
    conf = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    for key, value in changes.items():
        if key.startswith("fsdp_"):
            target = conf["fsdp_config"]
        elif key in ("zero_stage", "deepspeed_config_file", "offload_optimizer_device"):
            target = conf["deepspeed_config"]
        else:
            target = conf
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    out = tmp_path / f"{name}-variant.yaml"
    out.write_text(yaml.safe_dump(conf))
    return out


def launcher_env(config: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment ``accelerate launch --config_file config`` gives each process
    (accelerate's own launcher functions), plus what torchrun adds (WORLD_SIZE ...)."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(
            list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else []))
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    else:
        _, env = prepare_simple_launcher_cmd_env(args)
    n, machines = int(args.num_processes or 1), int(args.num_machines or 1)
    if n > 1:
        env.update(WORLD_SIZE=str(n), LOCAL_WORLD_SIZE=str(n // machines))
    return env


# --------------------------------------------------------------------------- reading the plan

@pytest.mark.parametrize("name", ["cpu", "single_gpu", "multi_gpu", "fsdp", "fsdp2", "deepspeed_zero2", "multi_node"])
def test_environment_and_config_file_give_the_same_plan(name, gpus, monkeypatch):
    gpus(8)
    from_file = pf.LaunchPlan.from_accelerate_config(CONFIG_DIR / f"{name}.yaml")
    from_env = pf.LaunchPlan.from_env(launcher_env(CONFIG_DIR / f"{name}.yaml", monkeypatch))
    fields = ("distributed_type", "num_processes", "num_machines", "use_cpu", "mixed_precision", "gpu_requested",
              "zero_stage")
    assert {f: getattr(from_env, f) for f in fields} == {f: getattr(from_file, f) for f in fields}
    if from_file.distributed_type == "FSDP":
        fsdp = ("fsdp_version", "fsdp_auto_wrap_policy", "fsdp_wrap_classes")
        assert {f: getattr(from_env, f) for f in fsdp} == {f: getattr(from_file, f) for f in fsdp}
        if from_file.fsdp_version == 1:
            assert from_env.fsdp_use_orig_params is from_file.fsdp_use_orig_params is True
    expected_type = {"cpu": "NO", "single_gpu": "NO", "multi_gpu": "MULTI_GPU", "fsdp": "FSDP", "fsdp2": "FSDP",
                     "deepspeed_zero2": "DEEPSPEED", "multi_node": "MULTI_GPU"}[name]
    assert from_file.distributed_type == expected_type
    assert from_file.gpu_requested is (name != "cpu")


def test_plain_torchrun_on_cpu_is_multi_cpu_and_fine(tiny_model, tmp_path, gpus):
    """`torchrun --nproc_per_node 2` without accelerate variables: gloo DDP on CPU, allowed."""
    gpus(0)
    plan = pf.LaunchPlan.from_env({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})
    assert plan.distributed_type == "MULTI_CPU" and plan.num_processes == 2 and not plan.gpu_requested
    assert pf.problems(recipe(tiny_model, tmp_path, "lora"), plan) == []


# --------------------------------------------------------------------------- the shipped configs are fine

@pytest.mark.parametrize("name,strategy", [
    ("cpu", "lora"), ("single_gpu", "full"), ("multi_gpu", "full"), ("multi_gpu", "lora"), ("fsdp", "lora"),
    ("fsdp", "partial"), ("fsdp", "frozen"), ("fsdp", "full"), ("fsdp2", "partial"), ("fsdp2", "lora"),
    ("deepspeed_zero2", "lora"), ("deepspeed_zero2", "full")])
def test_shipped_configs_pass_on_a_machine_with_two_gpus(name, strategy, tiny_model, tmp_path, gpus):
    gpus(2)
    cfg = recipe(tiny_model, tmp_path, strategy, strategy={"name": strategy, "unfreeze_top_k": 1}
                 if strategy == "partial" else {"name": strategy})
    assert pf.problems(cfg, pf.LaunchPlan.from_accelerate_config(CONFIG_DIR / f"{name}.yaml")) == []


# --------------------------------------------------------------------------- FSDP

@pytest.mark.parametrize("strategy", ["lora", "frozen", "partial"])
def test_fsdp_with_frozen_parameters_needs_use_orig_params(strategy, tiny_model, tmp_path, gpus):
    gpus(2)
    plan = pf.LaunchPlan.from_accelerate_config(variant(tmp_path, "fsdp", fsdp_use_orig_params=False))
    with pytest.raises(EnvironmentSetupError) as e:
        pf.check(recipe(tiny_model, tmp_path, strategy), plan)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"expected fsdp_use_orig_params: true with strategy={strategy}, which freezes parameters (" in msg
    assert "found fsdp_use_orig_params false" in msg and "Fix: set fsdp_use_orig_params: true" in msg


def test_fsdp_without_use_orig_params_is_fine_when_nothing_is_frozen(tiny_model, tmp_path, gpus):
    gpus(2)
    plan = pf.LaunchPlan.from_accelerate_config(variant(tmp_path, "fsdp", fsdp_use_orig_params=False))
    model = pf._skeleton(recipe(tiny_model, tmp_path, "full"))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    if frozen:  # e.g. the full strategy leaves BERT's unused pooler frozen: use_orig_params is needed then
        with pytest.raises(EnvironmentSetupError, match=f"e.g. {frozen[0]}"):
            pf.check(recipe(tiny_model, tmp_path, "full"), plan)
    for p in model.parameters():
        p.requires_grad = True
    assert pf.problems(recipe(tiny_model, tmp_path, "full"), plan, model=model) == []


def test_fsdp_from_environment_without_use_orig_params(tiny_model, tmp_path, gpus):
    """FullyShardedDataParallelPlugin defaults use_orig_params to False when FSDP_USE_ORIG_PARAMS is unset."""
    gpus(2)
    env = {"ACCELERATE_USE_FSDP": "true", "ACCELERATE_MIXED_PRECISION": "bf16", "FSDP_AUTO_WRAP_POLICY":
           "TRANSFORMER_BASED_WRAP", "FSDP_TRANSFORMER_CLS_TO_WRAP": "BertLayer", "WORLD_SIZE": "2"}
    plan = pf.LaunchPlan.from_env(env)
    assert plan.distributed_type == "FSDP" and plan.fsdp_use_orig_params is False
    with pytest.raises(EnvironmentSetupError, match="FSDP_USE_ORIG_PARAMS=true"):
        pf.check(recipe(tiny_model, tmp_path, "lora"), plan)
    plan = pf.LaunchPlan.from_env({**env, "FSDP_USE_ORIG_PARAMS": "true"})
    assert pf.problems(recipe(tiny_model, tmp_path, "lora"), plan) == []


@pytest.mark.parametrize("strategy,layer", [
    ("partial", "encoder.encoder.layer.0"),
    ("hybrid", "base_model.model.encoder.encoder.layer.1.original_module"),
    ("frozen", "encoder.encoder.layer.0")])
@pytest.mark.parametrize("policy", ["NO_WRAP", "SIZE_BASED_WRAP"])
def test_frozen_layer_and_trainable_params_in_one_fsdp_unit(strategy, layer, policy, tiny_model, tmp_path, gpus):
    """Partial / hybrid / frozen with a wrap policy that leaves frozen layers in the root unit."""
    gpus(2)
    name = "lora" if strategy == "hybrid" else strategy
    cfg = recipe(tiny_model, tmp_path, name, strategy={"name": name, "unfreeze_top_k": 1}
                 if strategy != "frozen" else {"name": name})
    conf = variant(tmp_path, "fsdp", fsdp_auto_wrap_policy=policy, fsdp_transformer_layer_cls_to_wrap=None,
                   fsdp_min_num_params=10**9)
    with pytest.raises(EnvironmentSetupError) as e:
        pf.check(cfg, pf.LaunchPlan.from_accelerate_config(conf))
    msg = str(e.value)
    assert f"FSDP unit '(root)' ({policy})" in msg and "\n" not in msg
    assert "expected frozen transformer layers in their own FSDP units" in msg
    assert f"found frozen layer(s) {layer}" in msg
    assert "Fix: set fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP and fsdp_transformer_layer_cls_to_wrap: BertLayer" in msg
    # the same wrapping under FSDP2 (per-parameter sharding) is fine
    conf2 = variant(tmp_path, "fsdp2", fsdp_auto_wrap_policy=policy, fsdp_transformer_layer_cls_to_wrap=None)
    assert pf.problems(cfg, pf.LaunchPlan.from_accelerate_config(conf2)) == []


def test_fsdp_wrap_class_absent_from_the_model(tiny_model, tmp_path, gpus):
    gpus(2)
    conf = variant(tmp_path, "fsdp", fsdp_transformer_layer_cls_to_wrap="RobertaLayer")
    with pytest.raises(EnvironmentSetupError) as e:
        pf.check(recipe(tiny_model, tmp_path, "lora"), pf.LaunchPlan.from_accelerate_config(conf))
    assert "found ['RobertaLayer'] not in the model (its layers are BertLayer)" in str(e.value)
    assert "Fix: set fsdp_transformer_layer_cls_to_wrap: BertLayer" in str(e.value)


@pytest.mark.parametrize("strategy", ["full", "frozen", "partial", "lora", "hybrid"])
def test_fsdp_unit_simulation_agrees_with_torch(strategy, tiny_model, tmp_path):
    """The units we simulate are the ones torch's own frozen-parameter validation sees as mixed."""
    wrap_utils = pytest.importorskip("torch.distributed.fsdp._wrap_utils")
    if not hasattr(wrap_utils, "_validate_frozen_params"):
        pytest.skip("torch no longer has _validate_frozen_params")
    name = "lora" if strategy == "hybrid" else strategy
    cfg = recipe(tiny_model, tmp_path, name, strategy={"name": name, "unfreeze_top_k": 1}
                 if strategy in ("partial", "hybrid") else {"name": name})
    model = pf._skeleton(cfg)
    assert model is not None
    units = pf.fsdp_units(model, "TRANSFORMER_BASED_WRAP", ["BertLayer"])
    ours = {u.name for u in units if u.mixed}
    to_wrap = {m for m in model.modules() if type(m).__name__ == "BertLayer"} | {model}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrap_utils._validate_frozen_params(model, to_wrap, set(), use_orig_params=True)
    theirs = {str(w.message).split(" has both parameters")[0] or "(root)" for w in caught
              if "has both parameters" in str(w.message)}
    assert ours == theirs
    frozen = any(not p.requires_grad for p in model.parameters())
    assert bool(ours) is frozen and (frozen or strategy == "full")
    # every parameter is in exactly one unit
    listed = [n for u in units for n in u.trainable + u.frozen]
    assert sorted(listed) == sorted(n for n, _ in model.named_parameters())


# --------------------------------------------------------------------------- DeepSpeed

def test_deepspeed_zero3_with_lora_adapter_saving(tiny_model, tmp_path, gpus):
    gpus(2)
    conf = variant(tmp_path, "deepspeed_zero2", zero_stage=3)
    with pytest.raises(EnvironmentSetupError) as e:
        pf.check(recipe(tiny_model, tmp_path, "lora"), pf.LaunchPlan.from_accelerate_config(conf))
    msg = str(e.value)
    assert "expected ZeRO stage 0-2 with strategy=lora" in msg
    assert "found ZeRO-3, which partitions parameters: the LoRA adapter would be saved as empty shards" in msg
    assert "Fix: use accelerate_configs/deepspeed_zero2.yaml" in msg


def test_deepspeed_zero3_from_environment_and_json_config(tiny_model, tmp_path, gpus):
    gpus(2)
    cfg = recipe(tiny_model, tmp_path, "lora")
    env = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_MIXED_PRECISION": "bf16", "WORLD_SIZE": "2"}
    with pytest.raises(EnvironmentSetupError, match="found ZeRO-3"):
        pf.check(cfg, pf.LaunchPlan.from_env({**env, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}))
    ds_json = tmp_path / "ds.json"
    ds_json.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_batch_size": "auto"}))
    plan = pf.LaunchPlan.from_env({**env, "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ds_json),
                                   "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"})  # the JSON file wins, as in accelerate
    assert plan.zero_stage == 3 and plan.deepspeed_config_file == str(ds_json)
    with pytest.raises(EnvironmentSetupError, match="found ZeRO-3"):
        pf.check(cfg, plan)
    assert pf.problems(cfg, pf.LaunchPlan.from_env({**env, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"})) == []


def test_deepspeed_not_installed(tiny_model, tmp_path, gpus):
    gpus(2, deepspeed=False)
    with pytest.raises(EnvironmentSetupError, match=r"expected the deepspeed package, found it is not installed\. "
                                                    r"Fix: pip install deepspeed"):
        pf.check(recipe(tiny_model, tmp_path, "full"),
                 pf.LaunchPlan.from_accelerate_config(CONFIG_DIR / "deepspeed_zero2.yaml"))


# --------------------------------------------------------------------------- the machine

@pytest.mark.parametrize("name", ["single_gpu", "multi_gpu", "fsdp", "deepspeed_zero2", "multi_node"])
def test_gpu_config_on_a_machine_without_gpus(name, tiny_model, tmp_path, gpus):
    gpus(0)
    with pytest.raises(EnvironmentSetupError) as e:
        pf.check(recipe(tiny_model, tmp_path, "full"), pf.LaunchPlan.from_accelerate_config(CONFIG_DIR / f"{name}.yaml"))
    msg = str(e.value)
    assert msg.startswith(f"accelerate config {CONFIG_DIR / name}.yaml: expected a machine with CUDA GPUs")
    assert "no GPU is visible" in msg and "Fix: run on a GPU node, or use accelerate_configs/cpu.yaml" in msg


def test_gpu_launch_environment_on_a_machine_without_gpus(tiny_model, tmp_path, gpus, monkeypatch):
    gpus(0)
    env = launcher_env(CONFIG_DIR / "multi_gpu.yaml", monkeypatch)
    with pytest.raises(EnvironmentSetupError, match="found MULTI_GPU on 2 process"):
        pf.check(recipe(tiny_model, tmp_path, "full"), pf.LaunchPlan.from_env(env))
    env = launcher_env(CONFIG_DIR / "cpu.yaml", monkeypatch)
    assert pf.problems(recipe(tiny_model, tmp_path, "full"), pf.LaunchPlan.from_env(env)) == []


def test_more_gpu_processes_than_gpus(tiny_model, tmp_path, gpus):
    gpus(1)
    with pytest.raises(EnvironmentSetupError) as e:
        pf.check(recipe(tiny_model, tmp_path, "full"), pf.LaunchPlan.from_accelerate_config(CONFIG_DIR / "multi_gpu.yaml"))
    assert "found 2 processes per machine on 1 GPU(s). Fix: pass --num_processes 1" in str(e.value)


def test_fp16_without_a_gpu(tiny_model, tmp_path, gpus):
    gpus(0)
    cfg = recipe(tiny_model, tmp_path, "full", train={"mixed_precision": "fp16"})
    with pytest.raises(EnvironmentSetupError, match=r"expected a CUDA GPU for fp16, found fp16 \(from "
                                                    r"train.mixed_precision\) on a machine without GPUs"):
        pf.check(cfg, pf.LaunchPlan.from_env({}))
    gpus(1)
    assert pf.problems(cfg, pf.LaunchPlan.from_env({})) == []


# --------------------------------------------------------------------------- batches and metrics

def test_batch_size_not_divisible_by_the_process_count(tiny_model, tmp_path, gpus):
    conf = tmp_path / "cpu3.yaml"
    conf.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\nuse_cpu: true\n"
                    "num_processes: 3\nmixed_precision: 'no'\n")
    cfg = recipe(tiny_model, tmp_path, "full", eval={"batch_size": 128})  # train.batch_size 16
    found = pf.problems(cfg, pf.LaunchPlan.from_accelerate_config(conf))
    assert [str(e) for e in found] == [
        "train.batch_size: expected a multiple of the 3 processes (each global batch is split across them), "
        "found 16. Fix: pass train.batch_size=15 or 18, or launch 16-divisible processes",
        "eval.batch_size: expected a multiple of the 3 processes (each global batch is split across them), "
        "found 128. Fix: pass eval.batch_size=126 or 129, or launch 128-divisible processes"]
    assert all(isinstance(e, ConfigError) for e in found)
    ok = recipe(tiny_model, tmp_path, "full", train={"batch_size": 18}, eval={"batch_size": 30})
    assert pf.problems(ok, pf.LaunchPlan.from_env({"WORLD_SIZE": "3"})) == []
    with pytest.raises(ConfigError, match="train.batch_size"):
        pf.check(cfg, pf.LaunchPlan.from_env({"WORLD_SIZE": "3"}))
    # eval.batch_size left unset: 32 rows per process, divisible on any process count
    assert pf.problems(recipe(tiny_model, tmp_path, "full", train={"batch_size": 18}),
                       pf.LaunchPlan.from_env({"WORLD_SIZE": "3"})) == []


def test_unknown_metric_names(tiny_model, tmp_path, gpus):
    plan = pf.LaunchPlan.from_env({})
    with pytest.raises(ConfigError, match=r"metric 'acuracy': expected one of \['accuracy'.*Fix: use 'accuracy'"):
        pf.check(recipe(tiny_model, tmp_path, eval={"metrics": ["acuracy"]}), plan)
    with pytest.raises(ConfigError, match=r"eval.metric_for_best: expected 'loss' or one of the metrics .* "
                                          r"found 'acurracy' \(did you mean 'accuracy'\?\)"):
        pf.check(recipe(tiny_model, tmp_path, eval={"metric_for_best": "acurracy"}), plan)
    # aliases and case are accepted and normalised in the config
    cfg = recipe(tiny_model, tmp_path, eval={"metrics": ["ACC", "f1"], "metric_for_best": "mcc"})
    assert cfg.eval.metrics == ["accuracy", "f1"] and cfg.eval.metric_for_best == "matthews_correlation"
    assert pf.problems(cfg, plan) == []


# --------------------------------------------------------------------------- CLI and the recipe

def test_cli_preflight(tiny_model, tmp_path, gpus, capsys):
    gpus(0)
    assert cli(["preflight", "--accelerate-config", str(CONFIG_DIR / "cpu.yaml"), f"model.name={tiny_model}",
                "strategy=lora"]) == 0
    assert capsys.readouterr().out.startswith("preflight ok: strategy=lora, NO, 1 process(es)")
    gpus(2)
    conf = variant(tmp_path, "fsdp", fsdp_use_orig_params=False)
    assert cli(["preflight", "--accelerate-config", str(conf), f"model.name={tiny_model}", "strategy=lora"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: FSDP in the accelerate config")
    assert cli(["preflight", "--accelerate-config", str(tmp_path / "missing.yaml")]) == 2
    assert "found '" in capsys.readouterr().err


def test_skip_switch(tiny_model, tmp_path, gpus, monkeypatch):
    gpus(0)
    cfg = recipe(tiny_model, tmp_path, "full", train={"mixed_precision": "fp16"})
    monkeypatch.setenv("NLP_TRANSFER_SKIP_PREFLIGHT", "1")
    assert pf.check(cfg, pf.LaunchPlan.from_env({})).distributed_type == "NO"


def test_train_runs_preflight_before_writing_anything(tiny_model, toy_csv, tmp_path, gpus, monkeypatch):
    """recipe.train calls preflight.check(cfg) first: a bad launch fails before the output
    folder, the data or the model are touched."""
    from nlp_transfer import Recipe, train
    gpus(2)
    for k, v in {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                 "ACCELERATE_MIXED_PRECISION": "no", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "out"
    with pytest.raises(EnvironmentSetupError, match="ZeRO-3"):
        train(Recipe(**recipe_kwargs(tiny_model, toy_csv, out, "lora")))
    assert not out.exists()


_REAL_FSDP = r'''
import json, os, sys, warnings
import torch, torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
dist.init_process_group("gloo", rank=0, world_size=1)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from transformers.models.bert.modeling_bert import BertLayer
from nlp_transfer.config import StrategyConfig
from nlp_transfer.model import build_model
from nlp_transfer.strategies import get_strategy
results = {}
for strategy in ("full", "frozen", "partial", "lora"):
    for orig in (False, True):
        model, _, _ = build_model(sys.argv[1], "sequence_classification", 3, "mean", strategy=strategy)
        extra = {"unfreeze_top_k": 1} if strategy == "partial" else {}
        trained = get_strategy(StrategyConfig(name=strategy, **extra)).apply(model)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                FSDP(trained, auto_wrap_policy=ModuleWrapPolicy({BertLayer}), use_orig_params=orig,
                     device_id=torch.device("cpu"))
            results[f"{strategy}-{orig}"] = "ok"
        except ValueError as e:
            results[f"{strategy}-{orig}"] = str(e).splitlines()[0]
dist.destroy_process_group()
print(json.dumps(results))
'''


def test_real_fsdp_fails_exactly_where_preflight_says(tiny_model, tmp_path, gpus):
    """Wrap the real model with torch FSDP v1 (gloo, one CPU process, in a subprocess):
    the strategy / use_orig_params combinations FSDP rejects are the ones preflight rejects."""
    import socket
    import subprocess
    import sys
    fsdp = pytest.importorskip("torch.distributed.fsdp")
    if not hasattr(fsdp, "FullyShardedDataParallel"):
        pytest.skip("torch FSDP v1 not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "real_fsdp.py"
    script.write_text(_REAL_FSDP)
    proc = subprocess.run([sys.executable, str(script), str(tiny_model), str(port)], capture_output=True, text=True,
                          timeout=240, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    real = json.loads(proc.stdout.strip().splitlines()[-1])
    gpus(2)
    for key, outcome in real.items():
        strategy, orig = key.split("-")
        cfg = recipe(tiny_model, tmp_path, strategy, strategy={"name": strategy, "unfreeze_top_k": 1}
                     if strategy == "partial" else {"name": strategy})
        plan = pf.LaunchPlan.from_accelerate_config(variant(tmp_path, "fsdp", fsdp_use_orig_params=orig == "True"))
        found = pf.problems(cfg, plan)
        if outcome == "ok":
            assert found == [], f"{key}: FSDP wraps it, preflight said {found}"
        else:
            assert "requires_grad" in outcome
            assert len(found) == 1 and "fsdp_use_orig_params: true" in str(found[0]), f"{key}: FSDP said {outcome}"
    assert real["lora-False"] != "ok" and real["lora-True"] == "ok"


# --------------------------------------------------------------------------- 2 nodes x 2 processes, not launched

def test_launch_plan_for_two_nodes_of_two_processes(tiny_model, tmp_path, gpus, monkeypatch, capsys):
    """multi_node.yaml cut to 2 machines x 2 GPUs: the plan read from the file and the plan the
    launcher hands to rank 3 (node 1, its second process) agree on processes, ranks per node,
    the per-process share of the global batch and the rendezvous address; nothing is launched."""
    gpus(2)
    conf = variant(tmp_path, "multi_node", num_processes=4)
    cfg = recipe(tiny_model, tmp_path, "lora", train={"batch_size": 32})
    from_file = pf.LaunchPlan.from_accelerate_config(conf)
    assert pf.problems(cfg, from_file) == []
    plan = from_file.launch_plan(32)
    assert plan["ranks"] == {0: [0, 1], 1: [2, 3]} and plan["per_process_batch"] == 8
    assert plan["rendezvous"] == "10.0.0.1:29500" and plan["rdzv_backend"] == "static"
    # node 1 as launched: accelerate's launcher computes the torchrun arguments, torchrun adds the ranks
    args = launch_command_parser().parse_args(["--config_file", str(conf), "--machine_rank", "1",
                                               "--main_process_ip", "10.9.8.7", "train.py"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "2", 1)
    assert args.rdzv_endpoint == "10.9.8.7:29500" and args.rdzv_backend == "static"
    addr, port = args.rdzv_endpoint.split(":")
    env.update(WORLD_SIZE="4", LOCAL_WORLD_SIZE="2", RANK="3", LOCAL_RANK="1", GROUP_RANK=str(args.node_rank),
               MASTER_ADDR=addr, MASTER_PORT=port)
    here = pf.LaunchPlan.from_env(env)
    assert (here.num_processes, here.num_machines, here.machine_rank, here.rank, here.local_rank) == (4, 2, 1, 3, 1)
    assert here.ranks_of_machine() == [2, 3] and here.rank in here.ranks_of_machine()
    assert (here.main_process_ip, here.main_process_port) == ("10.9.8.7", 29500)
    assert pf.problems(cfg, here) == []
    # the CLI prints the same plan for a node
    assert cli(["preflight", "--accelerate-config", str(conf), "--machine_rank", "1", f"model.name={tiny_model}",
                "strategy=lora", "train.batch_size=32"]) == 0
    out = capsys.readouterr().out
    assert "machine_rank 1, ranks [2, 3], meeting at 10.0.0.1:29500" in out
    assert "launch plan: 2 machine(s) x 2 process(es); ranks per machine {0: [0, 1], 1: [2, 3]}; global batch 32 = " \
           "8 per process; rendezvous 10.0.0.1:29500 (static)" in out


def test_multi_node_plans_that_cannot_meet(tiny_model, tmp_path, gpus):
    gpus(2)
    cfg = recipe(tiny_model, tmp_path, "lora", train={"batch_size": 30}, eval={"batch_size": 30})
    uneven = pf.LaunchPlan.from_accelerate_config(variant(tmp_path, "multi_node", num_processes=3))
    assert any(str(e).startswith("num_processes in the accelerate config") and "a multiple of the 2 machines" in str(e)
               for e in pf.problems(cfg, uneven))
    nowhere = pf.LaunchPlan.from_env({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"})
    errs = [str(e) for e in pf.problems(cfg, nowhere)]
    assert any(e.startswith("rendezvous in the launch environment: expected main_process_ip and main_process_port")
               and "--master_addr" in e for e in errs)
    lost = pf.LaunchPlan.from_accelerate_config(variant(tmp_path, "multi_node", num_processes=4, machine_rank=2))
    assert any(str(e).startswith("machine_rank in the accelerate config") for e in pf.problems(cfg, lost))
