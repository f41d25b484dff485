"""The shipped ``accelerate_configs/*.yaml`` parse with accelerate's own loader and say what
their comments promise.

Each config goes through the same code path as ``accelerate launch --config_file ...``:
``load_config_from_file`` (unknown keys fail there), then the launcher's
``_validate_launch_command`` (config -> launch arguments) and the environment the launcher
hands to the training processes (``prepare_multi_gpu_env`` / ``prepare_deepspeed_cmd_env``).
Nothing is launched and no GPU is needed.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file  # noqa: E402
from accelerate.commands.launch import _validate_launch_command, launch_command_parser  # noqa: E402
from accelerate.utils import DistributedType  # noqa: E402
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "accelerate_configs"
EXPECTED = ["cpu", "single_gpu", "multi_gpu", "fsdp", "deepspeed_zero2", "multi_node"]
RECIPE = "recipes/bbc_news.py"


def _path(name: str) -> Path:
    return CONFIG_DIR / f"{name}.yaml"


def _launch_args(name: str, *cli: str):
    """What ``accelerate launch --config_file <name>.yaml *cli recipe`` would run with."""
    args = launch_command_parser().parse_args(["--config_file", str(_path(name)), *cli, RECIPE])
    return _validate_launch_command(args)


def _header(name: str) -> str:
    """The leading comment block of a config file."""
    lines = []
    for line in _path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def test_expected_configs_exist() -> None:
    present = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert set(EXPECTED) <= present, f"missing: {set(EXPECTED) - present}"


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_config_loads_and_documents_its_launch_command(name: str) -> None:
    config = load_config_from_file(str(_path(name)))  # raises on unknown keys
    assert isinstance(config, ClusterConfig)
    header = _header(name)
    assert re.search(r"^# When:", header, re.M), f"{name}.yaml must start with a '# When:' comment"
    command = f"accelerate launch --config_file accelerate_configs/{name}.yaml"
    assert command in header and RECIPE in header, f"{name}.yaml header lacks the launch command"


def test_cpu() -> None:
    config = load_config_from_file(str(_path("cpu")))
    assert config.distributed_type == DistributedType.NO
    assert config.use_cpu is True and config.num_processes == 1
    assert config.mixed_precision == "no"
    args, _, _ = _launch_args("cpu")
    assert args.cpu or args.use_cpu
    assert not (args.multi_gpu or args.use_fsdp or args.use_deepspeed)


def test_single_gpu() -> None:
    config = load_config_from_file(str(_path("single_gpu")))
    assert config.distributed_type == DistributedType.NO
    assert config.use_cpu is False and config.num_processes == 1
    assert config.mixed_precision == "bf16"
    args, _, _ = _launch_args("single_gpu")
    assert not (args.multi_gpu or args.use_fsdp or args.use_deepspeed)
    assert args.mixed_precision == "bf16"


def test_multi_gpu_is_ddp_on_two_gpus_bf16() -> None:
    config = load_config_from_file(str(_path("multi_gpu")))
    assert config.distributed_type == DistributedType.MULTI_GPU
    assert config.num_processes == 2 and config.num_machines == 1
    assert config.mixed_precision == "bf16"
    args, _, _ = _launch_args("multi_gpu")
    assert args.multi_gpu and args.num_processes == 2
    env = prepare_multi_gpu_env(args)
    assert args.nproc_per_node == "2"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_multi_gpu_process_count_can_be_overridden_on_the_command_line() -> None:
    args, _, _ = _launch_args("multi_gpu", "--num_processes", "4")
    assert args.num_processes == 4


def test_fsdp_v1_keeps_original_params_and_wraps_bert_layers() -> None:
    config = load_config_from_file(str(_path("fsdp")))
    assert config.distributed_type == DistributedType.FSDP
    assert config.num_processes == 2 and config.mixed_precision == "bf16"
    fsdp = config.fsdp_config
    assert fsdp["fsdp_version"] == 1
    assert fsdp["fsdp_use_orig_params"] is True
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "BertLayer"
    # cpu_ram_efficient_loading is only valid together with sync_module_states (FSDP v1)
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is fsdp["fsdp_sync_module_states"] is True
    # the env the FullyShardedDataParallelPlugin is built from in every process
    args, _, _ = _launch_args("fsdp")
    assert args.use_fsdp
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    assert env["FSDP_VERSION"] == "1"
    assert env["FSDP_USE_ORIG_PARAMS"] == "true"
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "BertLayer"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    # the comment explaining why use_orig_params matters is part of the contract
    assert "LoRA" in _path("fsdp").read_text()


def test_fsdp2_variant_uses_version_2_without_obsolete_v1_keys() -> None:
    if not _path("fsdp2").exists():
        pytest.skip("accelerate_configs/fsdp2.yaml not found")
    fsdp = load_config_from_file(str(_path("fsdp2"))).fsdp_config
    assert fsdp["fsdp_version"] == 2
    assert fsdp["fsdp_reshard_after_forward"] is True  # FSDP2 takes a bool
    for obsolete in ("fsdp_use_orig_params", "fsdp_backward_prefetch", "fsdp_forward_prefetch",
                     "fsdp_sync_module_states"):
        assert obsolete not in fsdp, f"{obsolete} is an FSDP v1 option"
    args, _, _ = _launch_args("fsdp2")
    env = prepare_multi_gpu_env(args)
    assert env["FSDP_VERSION"] == "2" and env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "BertLayer"


def test_deepspeed_zero2() -> None:
    config = load_config_from_file(str(_path("deepspeed_zero2")))
    assert config.distributed_type == DistributedType.DEEPSPEED
    assert config.num_processes == 2 and config.mixed_precision == "bf16"
    assert config.deepspeed_config["zero_stage"] == 2
    assert config.deepspeed_config["offload_optimizer_device"] == "none"
    args, defaults, mp_from_config = _launch_args("deepspeed_zero2")
    assert args.use_deepspeed and args.zero_stage == 2
    # what launch_command() sets before building the deepspeed environment
    args.deepspeed_fields_from_accelerate_config = ",".join(
        list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else []))
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_multi_node_two_machines_of_eight_gpus_with_documented_placeholders() -> None:
    config = load_config_from_file(str(_path("multi_node")))
    assert config.distributed_type == DistributedType.MULTI_GPU
    assert config.num_machines == 2 and config.num_processes == 16
    assert config.machine_rank == 0 and config.mixed_precision == "bf16"
    assert config.main_process_ip and config.main_process_port
    text = _path("multi_node").read_text()
    for key in ("machine_rank", "main_process_ip", "main_process_port"):
        assert re.search(rf"^# PLACEHOLDER {key}:", text, re.M), f"{key} placeholder comment missing"
        assert f"--{key}" in text, f"comment must say how to override {key} per node"


def test_multi_node_rank_and_address_come_from_the_command_line() -> None:
    args, _, _ = _launch_args("multi_node", "--machine_rank", "1", "--main_process_ip", "192.168.7.1",
                              "--main_process_port", "29555")
    assert args.machine_rank == 1 and args.num_machines == 2
    prepare_multi_gpu_env(args)  # computes the torchrun arguments; launches nothing
    assert args.nproc_per_node == "8" and args.nnodes == "2" and args.node_rank == 1
    endpoint = getattr(args, "rdzv_endpoint", None) or f"{args.master_addr}:{args.master_port}"
    assert endpoint == "192.168.7.1:29555"
