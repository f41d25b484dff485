"""The bad-input catalogue: every entry goes through the ``nlp-transfer`` CLI (in process)
and must end with

* a non-zero exit code (2 for nlp_transfer's own errors, 1 for operating-system errors),
* exactly one ``error:`` line on stderr saying what was expected, what was found and how
  to fix it (``expected ... found ... Fix: ...``), and no traceback,
* no output folder that looks valid: no ``metrics.json`` / ``nlp_transfer.json``
  anywhere under ``output.dir``.

Each case builds its own bad input from the tiny offline fixtures (tests/toy.py).
"""
from __future__ import annotations

import builtins
import errno
import json
import os
import pathlib
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import recipe_kwargs
from nlp_transfer.training import preflight
from nlp_transfer.cli import main as cli
from toy import TOPICS, make_rows, write_csv

CONFIG_DIR = Path(__file__).resolve().parents[1] / "accelerate_configs"


# --------------------------------------------------------------------------- helpers

def _cli_value(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v)


@dataclass
class Ctx:
    """What a case needs: the tiny model, the toy data and a scratch folder."""
    model: Path
    csv: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def write(self, name: str, content: str | bytes) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return p

    def rows_csv(self, name: str, rows: list[dict], **kw: object) -> Path:
        return write_csv(self.tmp / name, rows, **kw)

    def train(self, *overrides: str, data: Path | str | None = None, model: Path | str | None = None,
              strategy: str = "frozen") -> list[str]:
        """``nlp-transfer train`` with the quick toy settings (conftest.recipe_kwargs), then overrides."""
        kw = recipe_kwargs(model or self.model, data or self.csv, self.out, strategy,
                           train={"epochs": 1}, output={"cache_dir": str(self.tmp / "cache")})
        args = [f"{section}.{k}={_cli_value(v)}" for section, values in kw.items() for k, v in values.items()]
        return ["train", *args, *overrides]

    def model_copy(self, name: str, keep: tuple[str, ...]) -> Path:
        dst = self.tmp / name
        dst.mkdir()
        for f in keep:
            shutil.copy(self.model / f, dst / f)
        return dst


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    #: A fragment the one-line message must contain (besides expected/found/Fix).
    fragment: str
    rc: int = 2
    setup: Callable[[Ctx], None] | None = None
    skip: Callable[[], str | None] | None = None


def _texts(n: int, label_of: Callable[[int], object], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    return [{"text": " ".join(rng.sample(TOPICS[topics[i % 3]], 3)) + f" {i}", "label": label_of(i)} for i in range(n)]


def _pickle_weights(ctx: Ctx) -> Path:
    """A model folder whose weights exist only as a pickle (pytorch_model.bin)."""
    import torch
    from safetensors.torch import load_file
    d = ctx.model_copy("pickled", ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json"))
    torch.save(load_file(str(ctx.model / "model.safetensors")), d / "pytorch_model.bin")
    return d


def _remote_code_model(ctx: Ctx) -> Path:
    d = ctx.model_copy("remote", ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "model.safetensors"))
    conf = json.loads((ctx.model / "config.json").read_text())
    conf.update(model_type="my_custom_bert", auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                                                       "AutoModel": "modeling_custom.CustomModel"})
    (d / "config.json").write_text(json.dumps(conf))
    (d / "configuration_custom.py").write_text(
        f"open({str(ctx.tmp / 'REMOTE_CODE_RAN')!r}, 'w').write('x')\n"
        "from transformers import BertConfig\n\nclass CustomConfig(BertConfig):\n    model_type = 'my_custom_bert'\n")
    return d


def _offline_hub(ctx: Ctx) -> None:
    import huggingface_hub.constants as hub_constants
    ctx.monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


def _no_gpus(ctx: Ctx) -> None:
    ctx.monkeypatch.setattr(preflight, "gpu_count", lambda: 0)


def _two_gpus(ctx: Ctx) -> None:
    ctx.monkeypatch.setattr(preflight, "gpu_count", lambda: 2)


def _disk_full_under_out(ctx: Ctx) -> None:
    """Every write of a file under output.dir fails with ENOSPC (the writability probe
    at the start passes: the disk fills up during the run)."""
    out = str(ctx.out.resolve())

    def full(path: object) -> bool:
        p = os.path.abspath(os.fspath(path))
        return p.startswith(out) and os.path.basename(p) != ".write_test"

    def enospc(path: object) -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

    real_open, real_text, real_bytes = builtins.open, pathlib.Path.write_text, pathlib.Path.write_bytes

    def fake_open(file, mode="r", *a, **k):  # noqa: ANN001, ANN202
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax") and full(file):
            raise enospc(file)
        return real_open(file, mode, *a, **k)

    def fake_text(self, *a, **k):  # noqa: ANN001, ANN202
        if full(self):
            raise enospc(self)
        return real_text(self, *a, **k)

    def fake_bytes(self, *a, **k):  # noqa: ANN001, ANN202
        if full(self):
            raise enospc(self)
        return real_bytes(self, *a, **k)

    ctx.monkeypatch.setattr(builtins, "open", fake_open)
    ctx.monkeypatch.setattr(pathlib.Path, "write_text", fake_text)
    ctx.monkeypatch.setattr(pathlib.Path, "write_bytes", fake_bytes)


def _root() -> str | None:
    return "running as root: permissions are not enforced" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _chmod_readonly(ctx: Ctx) -> None:
    ro = ctx.tmp / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    ctx.monkeypatch.setattr(Ctx, "out", property(lambda self: self.tmp / "readonly" / "out"))


def _accel_config(ctx: Ctx, name: str, text: str) -> Path:
    return ctx.write(name, text)


# --------------------------------------------------------------------------- the catalogue

CASES: list[Case] = [
    # ---- data files ------------------------------------------------------------------
    Case("malformed_csv", lambda c: c.train(data=c.write("bad.csv", "text,label\ngoal match,sport\n"
                                                                      "bank,finance,extra,x\nchip,tech\n")),
         "expected a well-formed CSV file, found ParserError"),
    Case("malformed_csv_quote", lambda c: c.train(data=c.write("quote.csv", 'text,label\n"goal match,sport\n'
                                                                             "bank,finance\n")),
         "EOF inside string"),
    Case("malformed_jsonl", lambda c: c.train(data=c.write("bad.jsonl", '{"text": "a b", "label": "x"}\n'
                                                                         '{"text": "b", "label"\n')),
         "expected a well-formed JSONL file"),
    Case("non_utf8", lambda c: c.train(data=c.write("latin1.csv", "text,label\ncaf\u00e9 goal,sport\nbank,finance\n"
                                                    .encode("latin-1"))),
         "expected text in UTF-8, found undecodable bytes"),
    Case("unsupported_file_type", lambda c: c.train(data=c.write("data.xlsx", b"PK\x03\x04")),
         "found '.xlsx'"),
    Case("header_only", lambda c: c.train(data=c.write("header.csv", "text,label\n")),
         "found an empty dataset"),
    Case("missing_data_path", lambda c: c.train(data="./no/such/data.csv"),
         "found './no/such/data.csv' does not exist"),
    Case("delimiter_ambiguous", lambda c: c.train(data=c.write(
        "amb.txt", "text;label|x\n" + "goal;sport|a\nbank;finance|b\n" * 10)),
         "found one column 'text;label|x' (it splits on ';' or '|'). Fix: pass data.delimiter=';'"),
    Case("delimiter_given_but_header_splits_on_another", lambda c: c.train(
        "data.delimiter=,", data=c.rows_csv("semi.csv", make_rows(30), delimiter=";")),
         "expected a header split by ',', found one column 'text;label'. Fix: pass data.delimiter=';'"),
    Case("json_numbers_as_texts", lambda c: c.train(data=c.write("nums.json", json.dumps(
        [{"text": 42 + i, "label": "ab"[i % 2]} for i in range(20)]))),
         "column 'text' holds int64 values such as 42, 43"),
    Case("jsonl_lists_as_texts", lambda c: c.train(data=c.write("lists.jsonl", "".join(
        json.dumps({"text": ["goal", "match"], "label": "ab"[i % 2]}) + "\n" for i in range(20)))),
         "column 'text' holds lists such as ['goal', 'match']"),
    Case("folder_without_train_file", lambda c: c.train(data=c.write("d/notes.csv", "a,b\n1,2\n").parent),
         "expected a train.<csv|tsv|jsonl|json|parquet> file"),
    # ---- columns and labels ----------------------------------------------------------
    Case("missing_label_column", lambda c: c.train(data=c.rows_csv("topic.csv", [
        {"text": r["text"], "topic": r["label"]} for r in make_rows(30)])),
         "label column 'label' in the train split: expected a column named 'label', found columns ['text', 'topic']"),
    Case("misspelled_text_column", lambda c: c.train("data.text_column=txt"),
         "(did you mean 'text'?)"),
    Case("float_labels", lambda c: c.train(data=c.rows_csv("float.csv", _texts(30, lambda i: i % 3 + 0.5))),
         "expected integer or string class labels, found float values such as [0.5"),
    Case("all_texts_empty", lambda c: c.train(data=c.write("empty.csv", "text,label\n,sport\n   ,finance\n\t,tech\n")),
         "expected non-empty texts, found only empty or whitespace texts"),
    Case("single_class", lambda c: c.train(data=c.rows_csv("one_class.csv", _texts(30, lambda i: "sport"))),
         "expected at least 2 classes, found a single class ['sport']"),
    Case("one_row", lambda c: c.train(data=c.write("one.csv", "text,label\ngoal match,sport\n")),
         "expected at least 2 labelled rows (in practice dozens per class), found 1 row"),
    Case("unseen_held_out_label", lambda c: c.train(data=(
        c.rows_csv("split/train.csv", make_rows(60)),
        c.rows_csv("split/validation.csv", make_rows(9) + [{"text": "rain and sun today", "label": "weather"}]),
    )[0].parent), "label 'weather' in the validation split: expected one of the training labels"),
    Case("regression_non_numeric", lambda c: c.train("task=regression"),
         "regression targets: expected numbers, found could not convert string to float"),
    Case("missing_validation_split", lambda c: c.train("data.validation_split=dev"),
         "expected a split named 'dev'"),
    # ---- model -------------------------------------------------------------------------
    Case("max_length_beyond_model", lambda c: c.train("model.max_length=4096"),
         "expected <= 128 (the model's position limit), found 4096"),
    Case("unknown_hub_model", lambda c: c.train(model="nonexistent-org-xyz/no-such-model"),
         "expected a local folder or a reachable Hub model", setup=_offline_hub),
    Case("missing_model_path", lambda c: c.train(model="./no/such/model"),
         "model path: expected an existing folder or a Hub id"),
    Case("folder_without_config", lambda c: c.train(model=c.model_copy("noconf", ("model.safetensors", "vocab.txt"))),
         "expected a transformers folder with config.json"),
    Case("folder_without_tokenizer", lambda c: c.train(model=c.model_copy("notok", ("config.json", "model.safetensors"))),
         "found files ['config.json', 'model.safetensors']. Fix: save the tokenizer next to the model"),
    Case("pickle_only_weights", lambda c: c.train(model=_pickle_weights(c)),
         "expected model.safetensors"),
    Case("trust_remote_code_needed", lambda c: c.train(model=_remote_code_model(c)),
         "Fix: review the code, then pass model.trust_remote_code=true"),
    Case("lora_targets_absent", lambda c: c.train("strategy.target_modules=[q_proj,v_proj]", strategy="lora"),
         "found ['q_proj', 'v_proj'] not in the model"),
    # ---- config values -------------------------------------------------------------
    Case("lr_zero", lambda c: c.train("train.lr=0"), "train.lr: expected a number > 0, found 0"),
    Case("lr_negative", lambda c: c.train("train.lr=-1e-3"), "train.lr: expected a number > 0, found -0.001"),
    Case("epochs_zero", lambda c: c.train("train.epochs=0"), "train.epochs: expected a number > 0, found 0"),
    Case("batch_size_zero", lambda c: c.train("train.batch_size=0"), "train.batch_size: expected a number > 0"),
    Case("held_out_fraction_out_of_range", lambda c: c.train("data.held_out_fraction=1.5"),
         "expected a float in (0, 1), found 1.5"),
    Case("unknown_strategy", lambda c: c.train("strategy=lorra"), "found 'lorra' (did you mean 'lora'?)"),
    Case("unknown_config_key", lambda c: c.train("train.lrate=1e-3"),  # (learning_rate: Trainer's alias of lr)
         "unknown config key 'train.lrate'"),
    Case("override_without_equals", lambda c: c.train("train.lr"), "override: expected key=value"),
    Case("missing_config_file", lambda c: ["train", "--config", str(c.tmp / "nope.yaml")],
         "config file: expected an existing YAML file"),
    Case("unknown_metric", lambda c: c.train("eval.metrics=[acuracy]"), "metric 'acuracy'"),
    Case("malformed_yaml_preset", lambda c: ["train", "--config", str(c.write(
        "broken.yaml", "model:\n  name: minilm\ntrain:\n  lr: 3e-5\n   epochs: 3\n"))],
         "broken.yaml: expected valid YAML, found a syntax error at line 5, column 10"),
    Case("yaml_preset_with_tabs", lambda c: ["train", "--config", str(c.write("tabs.yaml", "train:\n\tlr: 1\n"))],
         "at line 2, column 1"),
    Case("broken_override_list", lambda c: c.train("eval.metrics=[accuracy,,f1]"),
         "override 'eval.metrics': expected a YAML value"),
    Case("boolean_not_a_boolean", lambda c: c.train("data.dedup=maybe"),
         "data.dedup: expected true or false (also yes/no, 1/0), found 'maybe'"),
    Case("boolean_number", lambda c: c.train("output.overwrite=2"), "output.overwrite: expected true or false"),
    Case("empty_list_item", lambda c: c.train("eval.metrics=accuracy,,"),
         "eval.metrics: expected a list without empty items, found an empty item at position 2 of 3"),
    Case("empty_list_item_first", lambda c: c.train("strategy.target_modules=,query", strategy="lora"),
         "strategy.target_modules: expected a list without empty items, found an empty item at position 1"),
    Case("delimiter_two_characters", lambda c: c.train("data.delimiter=;;"), "data.delimiter: expected one character"),
    Case("unknown_metric_for_best", lambda c: c.train("eval.metric_for_best=acurracy"), "'acurracy'"),
    # ---- output folder and disk ----------------------------------------------------------
    Case("output_dir_under_a_file", lambda c: c.train(f"output.dir={c.write('a_file', 'x')}/sub"),
         "expected a writable folder, found"),
    Case("output_dir_read_only", lambda c: c.train(f"output.dir={c.out}"), "expected a writable folder",
         setup=_chmod_readonly, skip=_root),
    Case("output_dir_exists", lambda c: (c.write("out/notes.txt", "mine"), c.train())[1],
         "Fix: pass output.overwrite=true"),
    Case("disk_full_during_training", lambda c: c.train(), "expected free disk space, found OSError [Errno 28]",
         rc=1, setup=_disk_full_under_out),
    # ---- launcher (preflight) ----------------------------------------------------------
    Case("bad_accelerate_config", lambda c: ["preflight", "--accelerate-config", str(_accel_config(
        c, "bad_accel.yaml", "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_procs: 2\n")),
        f"model.name={c.model}"], "had unknown keys (['num_procs'])"),
    Case("accelerate_config_not_yaml_mapping", lambda c: ["preflight", "--accelerate-config", str(_accel_config(
        c, "list.yaml", "- 1\n- 2\n"))], "expected a valid accelerate config"),
    Case("multi_gpu_config_without_gpus", lambda c: ["preflight", "--accelerate-config",
                                                     str(CONFIG_DIR / "multi_gpu.yaml"), f"model.name={c.model}"],
         "no GPU is visible", setup=_no_gpus),
    Case("fsdp_lora_without_use_orig_params", lambda c: ["preflight", "--accelerate-config", str(_accel_config(
        c, "fsdp_no_orig.yaml", (CONFIG_DIR / "fsdp.yaml").read_text().replace(
            "fsdp_use_orig_params: true", "fsdp_use_orig_params: false"))), f"model.name={c.model}", "strategy=lora"],
        "expected fsdp_use_orig_params: true with strategy=lora", setup=_two_gpus),
    Case("batch_not_divisible_by_processes", lambda c: ["preflight", "--accelerate-config", str(_accel_config(
        c, "cpu3.yaml", "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\nuse_cpu: true\n"
                        "num_processes: 3\nmixed_precision: 'no'\n")), f"model.name={c.model}", "train.batch_size=16"],
        "train.batch_size: expected a multiple of the 3 processes"),
    Case("fp16_without_gpu", lambda c: ["preflight", f"model.name={c.model}", "train.mixed_precision=fp16"],
         "expected a CUDA GPU for fp16", setup=_no_gpus),
    # ---- predict -----------------------------------------------------------------------
    Case("predict_on_a_non_output_folder", lambda c: ["predict", str(c.model), "--text", "goal"],
         "expected an nlp_transfer output folder (with nlp_transfer.json)"),
]


@pytest.fixture
def ctx(tiny_model: Path, toy_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ctx:
    for var in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_MIXED_PRECISION", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return Ctx(tiny_model, toy_csv, tmp_path, monkeypatch)


def test_catalogue_has_enough_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, capsys: pytest.CaptureFixture) -> None:
    if case.skip and case.skip():
        pytest.skip(case.skip())
    if case.setup:
        case.setup(ctx)
    argv = case.argv(ctx)
    capsys.readouterr()
    rc = cli(argv)
    ctx.monkeypatch.undo()  # restore patched writes before inspecting the folder
    err = capsys.readouterr().err
    assert rc == case.rc, f"exit code {rc}, stderr:\n{err}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one error line on stderr, got:\n{err}"
    msg = lines[0]
    for part in ("expected", "found", "Fix:"):
        assert part in msg, f"'{part}' missing from: {msg}"
    assert case.fragment in msg, f"'{case.fragment}' not in: {msg}"
    out = ctx.tmp / "out"
    if out.is_dir():
        valid = [p for p in out.rglob("*") if p.name in ("metrics.json", "nlp_transfer.json")]
        assert not valid, f"a failed run left {valid}"


def test_refused_repository_code_never_ran(ctx: Ctx) -> None:
    """The trust_remote_code refusal happens before any repository code is imported."""
    assert cli(ctx.train(model=_remote_code_model(ctx))) == 2
    assert not (ctx.tmp / "REMOTE_CODE_RAN").exists()


def test_empty_texts_are_dropped_and_counted(ctx: Ctx) -> None:
    """Some empty / whitespace-only texts: training succeeds and metrics.json says how many were dropped."""
    rows = make_rows(90)
    for i in (3, 17, 40, 41, 77):
        rows[i]["text"] = "" if i % 2 else "   \t "
    data = ctx.rows_csv("some_empty.csv", rows)
    assert cli(ctx.train(data=data)) == 0
    m = json.loads((ctx.out / "metrics.json").read_text())
    assert m["data"]["empty_dropped"] == 5
    assert m["data"]["train_size"] + m["data"]["held_out_size"] == 85
