"""Security defaults: no repository code runs and no pickle is unpickled unless the user
asks for it, and no token or secret ends up in logs, configs, cards or metrics.

The "malicious" files here are real: a pickle whose unpickling creates a marker file and a
``configuration_*.py`` whose import creates one. Each test first proves the payload works
when loaded the unsafe way, then that nlp_transfer never triggers it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import recipe_kwargs
from nlp_transfer import Recipe, load, train
from nlp_transfer.cli import main as cli
from nlp_transfer.config import ModelConfig, RecipeConfig
from nlp_transfer.errors import ModelError

SECRETS = {"HF_TOKEN": "hf_SecretTokenValue0123456789abcdefXYZ",
           "HUGGING_FACE_HUB_TOKEN": "hf_OtherSecretValue9876543210zyxwvuQ",
           "WANDB_API_KEY": "wandbsecret0123456789abcdef0123456789abcd"}


class _Payload:
    """Unpickling this creates ``marker`` (stands for arbitrary code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (shutil.copyfile, (__file__, self.marker))


def malicious_pickle(path: Path, marker: Path) -> Path:
    torch.save({"encoder.weight": _Payload(marker)}, path)
    return path


def custom_code_config(folder: Path, marker: Path) -> None:
    """Turn ``folder``'s config.json into one that needs repository code which creates ``marker``."""
    conf = json.loads((folder / "config.json").read_text())
    conf.update(model_type="evil_bert", auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                                   "AutoModel": "configuration_evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(conf))
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('code ran')\n"
        "from transformers import BertConfig, BertModel\n\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evil_bert'\n\n"
        "class EvilModel(BertModel):\n    config_class = EvilConfig\n")


@pytest.fixture(scope="module")
def trained(tiny_model: Path, toy_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Frozen, full (native head) and full with a pooled head (encoder in encoder/) output folders."""
    base = tmp_path_factory.mktemp("trained")
    out = {}
    for name in ("frozen", "full", "full_pooled"):
        kw = recipe_kwargs(tiny_model, toy_csv, base / name, name.split("_")[0], train={"epochs": 1},
                           output={"cache_dir": str(base / "cache")})
        if name == "full":  # the native task model: weights and config.json at the top
            kw["model"] = {**kw["model"], "pooling": "auto"}
        out[name] = train(Recipe(**kw)).output_dir
    return out


def copy_output(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- remote code

def test_trust_remote_code_is_off_by_default() -> None:
    assert ModelConfig().trust_remote_code is False
    assert RecipeConfig().model.trust_remote_code is False


def test_training_never_runs_repository_code_without_the_flag(tiny_model, toy_csv, tmp_path):
    model = tmp_path / "evil_model"
    shutil.copytree(tiny_model, model)
    marker = tmp_path / "CODE_RAN"
    custom_code_config(model, marker)
    with pytest.raises(ModelError) as e:
        train(Recipe(**recipe_kwargs(model, toy_csv, tmp_path / "out")))
    assert "needs custom code" in str(e.value) and "model.trust_remote_code=true" in str(e.value)
    assert not marker.exists()
    # the payload is live: with the explicit opt-in transformers imports it
    from transformers import AutoConfig
    AutoConfig.from_pretrained(str(model), trust_remote_code=True)
    assert marker.exists()


def test_predict_ignores_a_folder_that_switches_remote_code_on(trained, tmp_path, capsys):
    """A folder's own nlp_transfer.json cannot turn trust_remote_code on; only the user can."""
    out = copy_output(trained["full"], tmp_path / "downloaded")
    marker = tmp_path / "CODE_RAN"
    custom_code_config(out, marker)
    meta = json.loads((out / "nlp_transfer.json").read_text())
    (out / "nlp_transfer.json").write_text(json.dumps({**meta, "trust_remote_code": True}))
    assert cli(["predict", str(out), "--text", "goal match"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs custom code" in err and "--trust-remote-code" in err
    assert not marker.exists()
    # and with the folder claiming False, the custom config.json is still refused by transformers
    (out / "nlp_transfer.json").write_text(json.dumps({**meta, "trust_remote_code": False}))
    with pytest.raises(ModelError, match="needs custom code"):
        load(out)
    assert not marker.exists()


# --------------------------------------------------------------------------- pickles

def test_pickle_weights_need_an_explicit_opt_in(trained, tmp_path):
    out = copy_output(trained["full"], tmp_path / "pickled")
    torch.save(load_file(str(out / "model.safetensors")), out / "pytorch_model.bin")
    (out / "model.safetensors").unlink()
    with pytest.raises(ModelError) as e:
        load(out)
    assert "found pickle-based files ['pytorch_model.bin']" in str(e.value)
    assert "allow_pickle=True" in str(e.value)
    texts = ["goal match team", "bank stock market", "chip software data"]
    assert load(out, allow_pickle=True)(texts) == load(trained["full"])(texts)


@pytest.mark.parametrize("strategy", ["frozen", "full"])
def test_predict_never_unpickles_a_malicious_file(strategy, trained, tmp_path, capsys):
    # the payload is live: unpickling it the unsafe way creates the marker
    proof = tmp_path / "PROOF"
    torch.load(malicious_pickle(tmp_path / "probe.bin", proof), weights_only=False)
    assert proof.exists()

    out = copy_output(trained[strategy], tmp_path / "from_someone_else")
    marker = tmp_path / "UNPICKLED"
    malicious_pickle(out / "pytorch_model.bin", marker)
    assert cli(["predict", str(out), "--text", "goal match"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "found pickle-based files ['pytorch_model.bin']" in err and "Fix:" in err
    assert cli(["evaluate", str(out), "--data", str(tmp_path / "any.csv")]) == 2
    assert "pickle-based files" in capsys.readouterr().err
    with pytest.raises(ModelError, match="pickle-based files"):
        load(out)
    assert not marker.exists()


def test_pickle_weights_in_the_encoder_subfolder_need_the_opt_in_too(trained, tmp_path):
    out = copy_output(trained["full_pooled"], tmp_path / "pickled")
    torch.save(load_file(str(out / "encoder" / "model.safetensors")), out / "encoder" / "pytorch_model.bin")
    (out / "encoder" / "model.safetensors").unlink()
    with pytest.raises(ModelError) as e:
        load(out)
    assert "found pickle-based files ['encoder/pytorch_model.bin']" in str(e.value)
    texts = ["goal match team", "bank stock market"]
    assert load(out, allow_pickle=True)(texts) == load(trained["full_pooled"])(texts)


def test_malicious_weights_file_is_not_executed_even_with_allow_pickle(trained, tmp_path):
    """With the opt-in, transformers still reads pickles with torch.load(weights_only=True),
    which refuses to call arbitrary functions."""
    out = copy_output(trained["full"], tmp_path / "evil_full")
    (out / "model.safetensors").unlink()
    marker = tmp_path / "UNPICKLED"
    malicious_pickle(out / "pytorch_model.bin", marker)
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; the point is the marker
        load(out, allow_pickle=True)
    assert not marker.exists()


def test_training_never_unpickles_a_pickle_only_model(tiny_model, toy_csv, tmp_path):
    model = tmp_path / "pickle_model"
    shutil.copytree(tiny_model, model)
    (model / "model.safetensors").unlink()
    marker = tmp_path / "UNPICKLED"
    malicious_pickle(model / "pytorch_model.bin", marker)
    with pytest.raises(ModelError, match="expected model.safetensors"):
        train(Recipe(**recipe_kwargs(model, toy_csv, tmp_path / "out")))
    assert not marker.exists()


# --------------------------------------------------------------------------- secrets

def test_no_secret_in_logs_configs_cards_or_metrics(tiny_model, toy_csv, tmp_path, monkeypatch, capfd):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    out, cache = tmp_path / "out", tmp_path / "cache"
    kw = recipe_kwargs(tiny_model, toy_csv, out, "frozen", train={"epochs": 2},
                       output={"report_to": ["tensorboard"], "cache_dir": str(cache), "progress_bars": True})
    args = [f"{s}.{k}={v if isinstance(v, str) else json.dumps(v)}" for s, sec in kw.items() for k, v in sec.items()]
    assert cli(["train", *args]) == 0
    from nlp_transfer.publish.card import write_model_card
    write_model_card(out)
    captured = capfd.readouterr()
    files = [p for root in (out, cache) for p in root.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"metrics.json", "recipe.yaml", "nlp_transfer.json", "README.md"} <= names
    assert any(p.name.startswith("events.out.tfevents") for p in files), "tensorboard log missing"
    for secret in SECRETS.values():
        assert secret not in captured.out and secret not in captured.err
        for p in files:
            assert secret.encode() not in p.read_bytes(), f"{secret[:6]}... found in {p}"
