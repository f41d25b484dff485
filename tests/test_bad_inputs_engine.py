"""The machinery behind the bad-input catalogue (tests/test_bad_inputs.py): YAML and override
parsing, boolean and list settings, delimiter sniffing, non-text text columns, the recipes'
exit path and the CLI's subcommand table. Cheap: no model is trained here."""
from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from nlp_transfer import cli
from nlp_transfer.config import DataConfig, load_config, parse_value, read_yaml, to_bool, to_list
from nlp_transfer.data import load_raw, prepare_data, sniff_delimiter
from nlp_transfer.errors import ConfigError, DataError
from toy import make_rows, write_csv

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.py"))


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and "expected" in msg and "found" in msg and "Fix:" in msg, msg
    return msg


# --------------------------------------------------------------------------- YAML

@pytest.mark.parametrize("text, where", [
    ("train:\n  lr: 3e-5\n   epochs: 3\n", "line 3, column 10"),
    ("train:\n\tlr: 1\n", "line 2, column 1"),
    ("train: {lr: 1\n", "line 2, column 1"),
    ("eval:\n  metrics: [accuracy, f1\n", "line 3, column 1"),
])
def test_read_yaml_names_file_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    p = tmp_path / "preset.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_yaml(p)
    msg = one_line(err.value)
    assert msg.startswith(f"config file {p}: expected valid YAML, found a syntax error at {where}")
    with pytest.raises(ConfigError, match=re.escape(where)):
        load_config(p)


def test_read_yaml_other_failures(tmp_path: Path) -> None:
    assert read_yaml(_write(tmp_path / "empty.yaml", "")) == {}
    assert read_yaml(_write(tmp_path / "ok.yaml", "train: {lr: 1}\n")) == {"train": {"lr": 1}}
    with pytest.raises(ConfigError, match="expected a YAML mapping, found list"):
        read_yaml(_write(tmp_path / "list.yaml", "- 1\n"))
    with pytest.raises(ConfigError, match="config file: expected an existing YAML file"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("x: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="expected UTF-8 text, found undecodable bytes"):
        read_yaml(bad)


def test_tabs_get_a_tab_specific_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="indent with spaces, not tabs"):
        read_yaml(_write(tmp_path / "t.yaml", "train:\n\tlr: 1\n"))


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- override values

def test_parse_value() -> None:
    assert parse_value("train.lr", "3e-4") == "3e-4"  # YAML 1.1 text; the TrainConfig makes it a float
    assert load_config(None, ["train.lr=3e-4"]).train.lr == 3e-4
    assert parse_value("train.lr", "0.001") == 0.001
    assert parse_value("eval.metrics", "[accuracy,f1]") == ["accuracy", "f1"]
    assert parse_value("data.delimiter", ",") == ","   # not YAML, kept as text
    assert parse_value("data.delimiter", "|") == "|"   # a YAML block indicator, kept as text
    assert parse_value("data.subset", " ") is None
    with pytest.raises(ConfigError) as err:
        parse_value("eval.metrics", "[accuracy,,f1]")
    assert "override 'eval.metrics'" in one_line(err.value) and "at column" in str(err.value)


# --------------------------------------------------------------------------- booleans

@pytest.mark.parametrize("raw, expected", [
    ("true", True), ("false", False), ("yes", True), ("no", False), ("1", True), ("0", False),
    ("True", True), ("FALSE", False), ("Yes", True), ("NO", False), ("'yes'", True), ("'0'", False),
])
def test_boolean_overrides_accept_true_false_yes_no_1_0(raw: str, expected: bool) -> None:
    cfg = load_config(None, [f"data.dedup={raw}", f"output.overwrite={raw}", f"train.compile={raw}"])
    assert cfg.data.dedup is expected and cfg.output.overwrite is expected and cfg.train.compile is expected


@pytest.mark.parametrize("key", ["data.dedup", "model.trust_remote_code", "strategy.cache_features",
                                 "train.group_by_length", "train.compile", "train.balanced_sampler",
                                 "eval.use_test", "output.overwrite", "output.progress_bars",
                                 "output.checkpoint_every_epoch", "output.force_resume", "hub.push",
                                 "hub.private", "hub.merge", "data.label_all_subtokens"])
@pytest.mark.parametrize("raw", ["maybe", "2", "0.5", "[]", "", "'TRUE '"])
def test_every_boolean_field_refuses_anything_else(key: str, raw: str) -> None:
    if raw == "'TRUE '":  # surrounding spaces are forgiven
        assert getattr(getattr(load_config(None, [f"{key}={raw}", "hub.repo_id=u/m"]), key.split(".")[0]),
                       key.split(".")[1]) is True
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}={raw}"])
    assert one_line(err.value).startswith(f"{key}: expected true or false (also yes/no, 1/0), found ")


def test_booleans_from_python_and_yaml(tmp_path: Path) -> None:
    assert DataConfig(dedup="No").dedup is False
    assert to_bool("x.y", 1) is True and to_bool("x.y", " No ") is False
    with pytest.raises(ConfigError, match="data.dedup: expected true or false"):
        DataConfig(dedup="maybe")
    with pytest.raises(ConfigError, match="data.dedup: expected true or false.*found 'maybe'"):
        load_config(_write(tmp_path / "p.yaml", "data:\n  dedup: maybe\n"))


# --------------------------------------------------------------------------- lists

@pytest.mark.parametrize("override, position", [
    ("eval.metrics=accuracy,,", "position 2 of 3"),
    ("eval.metrics=,accuracy", "position 1 of 2"),
    ("eval.metrics=accuracy, ,f1", "position 2 of 3"),
    ("eval.metrics=[accuracy, null]", "position 2 of 2"),
    ("eval.metrics=['accuracy', '']", "position 2 of 2"),
    ("output.report_to=tensorboard,", "position 2 of 2"),
    ("strategy.target_modules=query,,value", "position 2 of 3"),
    ("data.label_names=neg,,pos", "position 2 of 3"),
    ("data.column_names=label,text,", "position 3 of 3"),
])
def test_empty_list_items_name_key_and_position(override: str, position: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = one_line(err.value)
    assert msg.startswith(f"{key}: expected a list without empty items") and position in msg, msg


def test_lists_from_strings() -> None:
    cfg = load_config(None, ["eval.metrics=accuracy, f1", "data.label_names=neg,pos", "data.column_names=[label,text]"])
    assert cfg.eval.metrics == ["accuracy", "f1"]
    assert cfg.data.label_names == ["neg", "pos"] and cfg.data.column_names == ["label", "text"]
    assert to_list("a", "b", None) is None
    with pytest.raises(ConfigError, match="expected a list or a comma-separated string"):
        to_list("eval", "metrics", 3)


# --------------------------------------------------------------------------- delimiters

def _semicolon_rows(n: int = 30) -> list[dict]:
    return [{"text": r["text"].replace(" ", ", ", 1), "label_name": r["label"]} for r in make_rows(n)]


@pytest.mark.parametrize("name", ["semi.txt", "semi.csv", "semi.tsv"])
def test_semicolon_file_is_sniffed_and_said(tmp_path: Path, name: str, capsys: pytest.CaptureFixture) -> None:
    path = write_csv(tmp_path / name, _semicolon_rows(), delimiter=";")
    prepared = prepare_data(DataConfig(name=str(path), label_column="label_name"))
    assert prepared.label_names == ["finance", "sport", "tech"]
    assert len(prepared.train) + len(prepared.held_out) == 30
    err = capsys.readouterr().err
    assert f"[nlp_transfer] data: read {path} with delimiter ';' (sniffed)" in err


@pytest.mark.parametrize("delimiter", ["|", ",", "\t"])
def test_other_delimiters_are_sniffed(tmp_path: Path, delimiter: str) -> None:
    suffix = ".csv" if delimiter != "," else ".txt"  # a delimiter the extension does not imply
    path = write_csv(tmp_path / f"d{suffix}", make_rows(20), delimiter=delimiter)
    ds = load_raw(DataConfig(name=str(path)))["train"]
    assert ds.column_names == ["text", "label"]


def test_not_sniffed_on_a_rank_other_than_0_prints_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("RANK", "1")
    path = write_csv(tmp_path / "semi.txt", _semicolon_rows(), delimiter=";")
    assert load_raw(DataConfig(name=str(path)))["train"].column_names == ["text", "label_name"]
    assert "sniffed" not in capsys.readouterr().err


def test_sniff_delimiter(tmp_path: Path) -> None:
    assert sniff_delimiter(_write(tmp_path / "a.txt", "a;b\n1;2\n3;4\n")) == [";"]
    assert sniff_delimiter(_write(tmp_path / "b.txt", "a;b|c\n1;2|3\n")) == [";", "|"]
    assert sniff_delimiter(_write(tmp_path / "c.txt", "a;b\n1;2;3\n")) == []  # rows disagree
    assert sniff_delimiter(_write(tmp_path / "d.txt", '"x;y",z\n"1;2",3\n'), exclude=",") == []


def test_explicit_tab_spellings() -> None:
    assert DataConfig(delimiter="tab").delimiter == "\t"
    assert load_config(None, [r"data.delimiter=\t"]).data.delimiter == "\t"
    assert load_config(None, ["data.delimiter=|"]).data.delimiter == "|"


def test_header_less_file_with_column_names_is_not_sniffed(tmp_path: Path) -> None:
    path = _write(tmp_path / "SMS", "ham\thello; there\nspam\twin; now\n" * 5)
    ds = load_raw(DataConfig(name=str(path), delimiter="\t", column_names=["label", "text"]))["train"]
    assert ds.column_names == ["label", "text"] and ds[0]["text"] == "hello; there"


# --------------------------------------------------------------------------- non-text text columns

def test_numbers_in_the_text_column_say_what_was_found(tmp_path: Path) -> None:
    path = _write(tmp_path / "n.json", json.dumps([{"body": f"t{i}", "text": 42 if i == 0 else 17 + i,
                                                    "label": "ab"[i % 2]} for i in range(10)]))
    with pytest.raises(DataError) as err:
        prepare_data(DataConfig(name=str(path)))
    msg = one_line(err.value)
    assert "column 'text' holds int64 values such as 42, 18" in msg
    assert "data.text_column" in msg and "'body'" in msg


def test_numbers_in_the_pair_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", "".join(json.dumps({"a": "x y", "b": 1.5, "label": "ab"[i % 2]}) + "\n"
                                                for i in range(6)))
    with pytest.raises(DataError, match=r"text_pair column 'b' in the train split: .*holds float64 values "
                                         r"such as 1\.5.*data\.text_pair_column"):
        prepare_data(DataConfig(name=str(path), text_column="a", text_pair_column="b"))


def test_all_missing_texts_still_say_empty(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.jsonl", "".join(json.dumps({"text": None, "label": "ab"[i % 2]}) + "\n"
                                                for i in range(4)))
    with pytest.raises(DataError, match="found only empty or whitespace texts"):
        prepare_data(DataConfig(name=str(path)))


# --------------------------------------------------------------------------- recipes exit like the CLI

def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_recipe_script_exits_like_the_cli(capsys: pytest.CaptureFixture) -> None:
    """`python recipes/bbc_news.py train.lr=-1`: one stderr line, the CLI's code; no traceback."""
    env = {k: "" for k in ("RANK", "LOCAL_RANK")}
    proc = _run(["recipes/bbc_news.py", "train.lr=-1"], env)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    capsys.readouterr()
    rc = cli.main(["train", "--config", str(ROOT / "recipes/configs/bbc_news.yaml"), "train.lr=-1"])
    cli_err = capsys.readouterr().err.strip()
    assert proc.returncode == rc == 2
    assert lines[0] == cli_err == "error: train.lr: expected a number > 0, found -1. Fix: pass train.lr=<number > 0>"


def test_only_rank_0_prints_but_every_rank_exits_with_the_code() -> None:
    proc = _run(["recipes/bbc_news.py", "train.lr=-1"], {"RANK": "1", "LOCAL_RANK": "1"})
    assert proc.returncode == 2 and proc.stderr.strip() == ""


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_exits_with_one_line(recipe: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    assert "run_recipe(main)" in recipe.read_text(), f"{recipe.name} does not end with run_recipe(main)"
    for var in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "argv", [str(recipe), "train.lr=-1"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(recipe), run_name="__main__")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: train.lr: expected a number > 0, found -1. Fix: pass train.lr=<number > 0>", err


def test_run_recipe_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    for var in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    seen = []
    with pytest.raises(SystemExit) as ok:
        cli.run_recipe(seen.append, ["a=1"])
    assert ok.value.code == 0 and seen == [["a=1"]]

    def disk_full(argv: list[str]) -> None:
        raise OSError(28, "No space left on device", "/out/model.safetensors")
    with pytest.raises(SystemExit) as full:
        cli.run_recipe(disk_full, [])
    assert full.value.code == 1
    assert capsys.readouterr().err.startswith("error: I/O error on /out/model.safetensors: expected free disk space")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(SystemExit) as quiet:
        cli.run_recipe(disk_full, [])
    assert quiet.value.code == 1 and capsys.readouterr().err == ""


def test_multitask_recipe_config_flag_without_value(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(sys, "argv", ["multitask.py", "--config"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "recipes" / "multitask.py"), run_name="__main__")
    assert exit_.value.code == 2 and "--config: expected a multi-task YAML preset" in capsys.readouterr().err


# --------------------------------------------------------------------------- CLI subcommands

def test_subcommand_table_is_explicit_and_complete(capsys: pytest.CaptureFixture) -> None:
    names = list(cli.subcommands())
    assert names == ["train", "predict", "evaluate", "export", "push", "rank-models", "compare", "preflight"]
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in names:
        assert re.search(rf"^\s+{re.escape(name)}\s", out, re.M), f"{name} missing from --help:\n{out}"
    assert not (ROOT / "nlp_transfer" / "cli_extra.py").exists()


def test_a_subcommand_module_that_fails_to_import_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    import nlp_transfer.selection
    monkeypatch.delattr(nlp_transfer.selection, "rank", raising=False)
    monkeypatch.setitem(sys.modules, "nlp_transfer.selection.rank", None)  # `import ... rank` -> ImportError
    with pytest.raises(ImportError, match="nlp_transfer.selection.rank"):
        cli.build_parser()


# --------------------------------------------------------------------------- public names

def test_public_names_replace_the_private_ones() -> None:
    from nlp_transfer import metrics
    from nlp_transfer import config
    from nlp_transfer import data
    assert config.closest("lorra", ["lora", "full"]) == " (did you mean 'lora'?)"
    assert metrics.canonical_metric("ACC") == "accuracy" and metrics.canonical_metric("nope") is None
    assert callable(data.canonical_columns) and callable(data.drop_empty) and callable(data.encode_labels)
    for module, old in ((config, "_closest"), (metrics, "_canonical"), (data, "_canonical_columns"),
                        (data, "_drop_empty"), (data, "_encode_labels")):
        assert not hasattr(module, old), f"{module.__name__}.{old} should be gone (public name only)"
