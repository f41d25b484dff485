"""Performance levers that are user options (issues 7, 16): train.compile, data.num_proc, train.heap_allocations.

They must change speed only: the same run with and without them trains the same model, the
saved files keep their plain names, and a reload predicts what the trained module predicts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, load_dataset
from safetensors.torch import load_file

from conftest import recipe_kwargs
from nlp_transfer import Recipe, load, train
from nlp_transfer.data import NUM_PROC_MIN_ROWS, resolve_num_proc, tokenize
from nlp_transfer.errors import ConfigError
from nlp_transfer.model import load_tokenizer

PROBE = ["stocks fell on the market", "the team won the match", "a new phone chip"]


def _saved_tensors(out: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
    return tensors


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_compile_trains_the_same_model_and_saves_plain_names(tiny_model, toy_csv, tmp_path, strategy):
    # Inductor draws its own dropout masks; fallback_random makes it use eager's RNG so the two
    # runs are comparable update for update (the user-facing default keeps inductor's faster RNG).
    import torch._inductor.config as inductor_config
    kw = dict(train={"epochs": 1, "max_steps": 4})
    eager = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "eager", strategy, **kw)))
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    with inductor_config.patch(fallback_random=True):
        comp = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "comp", strategy,
                                            train={"epochs": 1, "max_steps": 4, "compile": True})))
    assert comp.config.train.compile is True
    assert counters["stats"]["unique_graphs"] >= 1, "train.compile=true must actually compile the step"
    a, b = _saved_tensors(eager.output_dir), _saved_tensors(comp.output_dir)
    assert a.keys() == b.keys(), "compile must not rename saved tensors"
    assert not any("_orig_mod" in k for k in b)
    moved = 0
    for k in a:  # same update up to kernel rounding (inductor fuses differently)
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-3), k
        moved += 1
    assert moved
    assert comp.metrics["held_out"]["accuracy"] == pytest.approx(eager.metrics["held_out"]["accuracy"], abs=0.05)
    # the compiled run reloads like any other
    assert np.allclose(load(comp.output_dir).logits(PROBE), load(eager.output_dir).logits(PROBE), atol=1e-3)
    assert "compile: true" in (comp.output_dir / "recipe.yaml").read_text()


def test_compile_is_ignored_with_a_message_for_frozen(tiny_model, toy_csv, tmp_path, capsys):
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "out", "frozen",
                                     train={"epochs": 1, "compile": True})))
    assert "train.compile ignored: frozen trains a head on cached features" in capsys.readouterr().out
    assert (r.output_dir / "metrics.json").is_file()


def test_compile_and_num_proc_from_key_value_overrides() -> None:
    from nlp_transfer.config import RecipeConfig, apply_overrides
    d = apply_overrides(RecipeConfig().to_dict(), ["train.compile=true", "data.num_proc=2"])
    cfg = RecipeConfig.from_dict(d)
    assert cfg.train.compile is True and cfg.data.num_proc == 2


def test_num_proc_resolution() -> None:
    assert resolve_num_proc(None, 10) is None  # small data: stay in process
    assert resolve_num_proc(None, NUM_PROC_MIN_ROWS - 1) is None
    big = resolve_num_proc(None, NUM_PROC_MIN_ROWS)
    assert big is None or 2 <= big <= 4  # None on a 1-CPU machine
    assert resolve_num_proc(1, 10**6) is None
    assert resolve_num_proc(3, 10) == 3  # an explicit choice is obeyed


def test_num_proc_must_be_positive(tiny_model, toy_csv, tmp_path) -> None:
    with pytest.raises(ConfigError) as e:
        Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", data={"num_proc": 0}))
    assert "data.num_proc" in str(e.value)


def test_tokenize_with_two_processes_gives_the_same_rows(tiny_model, monkeypatch) -> None:
    tok = load_tokenizer(str(tiny_model))
    texts = [f"sentence number {i} " + "word " * (i % 17) for i in range(300)]
    ds = Dataset.from_dict({"text": texts, "label": [i % 3 for i in range(300)]})
    seen: list = []
    real_map = Dataset.map

    def spy(self, *a, **k):
        seen.append(k.get("num_proc"))
        return real_map(self, *a, **k)

    monkeypatch.setattr(Dataset, "map", spy)
    one = tokenize(ds, tok, 32, num_proc=1)
    two = tokenize(ds, tok, 32, num_proc=2)
    assert seen[:2] == [None, 2], "data.num_proc must reach datasets.map"
    assert one.column_names == two.column_names
    for col in one.column_names:
        assert one[col][:] == two[col][:], col
    assert one["length"][:5] == [len(x) for x in one["input_ids"][:5]]


def test_tokenisation_is_cached_on_disk_for_file_datasets(tiny_model, tmp_path) -> None:
    """A file-backed dataset: the second tokenisation reads the first one's Arrow cache."""
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"row {i} about things,{i % 2}\n" for i in range(200)))
    ds = load_dataset("csv", data_files=str(f), split="train", cache_dir=str(tmp_path / "hf"))
    tok = load_tokenizer(str(tiny_model))
    first = tokenize(ds, tok, 32)
    assert first.cache_files, "expected an on-disk Arrow cache for a file-backed dataset"
    files = [Path(c["filename"]) for c in first.cache_files]
    stamps = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files]
    second = tokenize(ds, tok, 32)
    assert [Path(c["filename"]) for c in second.cache_files] == files
    # read back, not recomputed: a recomputation rewrites the file (new inode or mtime)
    assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files] == stamps
    assert second["input_ids"][:] == first["input_ids"][:]


def test_column_numpy_reads_through_arrow_and_matches_the_lazy_column() -> None:
    """Scalar columns are read with Arrow's take over the indices mapping (memory lever):
    same values and order as ds[col][:], after select(), for ClassLabel, floats and empty splits;
    list columns fall back to the row-wise path."""
    from datasets import ClassLabel

    from nlp_transfer.data import column_numpy
    ds = Dataset.from_dict({"label": [3, 1, 2, 0, 5], "f": [0.5, 1.0, 2.0, 3.0, 4.0],
                            "l": [[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]]})
    sub = ds.select([4, 2, 0])
    for col in ("label", "f", "l"):
        assert column_numpy(sub, col).tolist() == np.asarray(sub[col][:]).tolist(), col
    assert column_numpy(sub, "label").tolist() == [5, 2, 3]
    assert column_numpy(ds.select([]), "label").tolist() == []
    cl = ds.cast_column("label", ClassLabel(num_classes=6)).select([1, 0])
    assert column_numpy(cl, "label").tolist() == [1, 3]
    assert column_numpy(ds.filter(lambda r: r["label"] > 1), "f").tolist() == [0.5, 2.0, 4.0]


def test_single_texts_store_only_token_ids_and_features_match_full_masks(tiny_model) -> None:
    """Lean tokenisation (memory lever): no stored attention_mask / token_type_ids for single
    texts; the collator builds the mask per batch, so features equal a fully masked forward."""
    from nlp_transfer.model.features import extract_features
    from nlp_transfer.model import build_model
    from nlp_transfer.training.evaluate import default_collator

    tok = load_tokenizer(str(tiny_model))
    texts = ["a short one", "a much longer sentence about markets and goals and chips", "mid size text"]
    lean = tokenize(Dataset.from_dict({"text": texts, "label": [0, 1, 2]}), tok, 32)
    assert set(lean.column_names) == {"input_ids", "label", "length"}
    pairs = tokenize(Dataset.from_dict({"text": texts, "text_pair": texts[::-1], "label": [0, 1, 2]}), tok, 32)
    assert "token_type_ids" in pairs.column_names or "token_type_ids" not in tok.model_input_names

    model, _, _ = build_model(str(tiny_model), "sequence_classification", 3, "mean", 0.0, None, False,
                              strategy="frozen")
    model.eval()
    got = extract_features(model, lean, default_collator(tok), 2, torch.device("cpu"))
    enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        want = model.encode(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")).numpy()
    assert np.allclose(got, want, atol=1e-5)


def test_sorted_buckets_pad_less_than_megabatches_and_stay_seeded() -> None:
    """train.length_grouping=sorted: every row once per pass, full batches of (nearly) one length in
    shuffled order, the short batch last holding the shortest rows; seeded; a new order each pass."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from nlp_transfer.training.sampling import SortedBucketSampler
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(2.8, 0.6, 1003).astype(int), 2, 128)

    def batches(sampler):
        order = list(sampler)
        assert sorted(order) == list(range(len(lengths)))
        return [order[i:i + 32] for i in range(0, len(order), 32)]

    def padded(bs):
        return sum(len(b) * lengths[b].max() for b in bs)

    g = torch.Generator().manual_seed(5)
    s = SortedBucketSampler(lengths, 32, g)
    first, second = batches(s), batches(s)
    assert first != second and batches(SortedBucketSampler(lengths, 32, torch.Generator().manual_seed(5))) == first
    assert len(first[-1]) == 1003 % 32 and lengths[first[-1]].max() <= lengths[np.concatenate(first[:-1])].min()
    assert padded(first) == padded(second)
    grouped = batches(LengthGroupedSampler(32, lengths=lengths.tolist(), generator=torch.Generator().manual_seed(5)))
    best = np.sort(lengths)[::-1]  # the least padding any batching of these rows can have
    assert padded(first) == sum(len(c) * c.max() for c in np.array_split(best, range(32, len(best), 32)))
    assert padded(first) < 0.95 * padded(grouped)


def test_length_grouping_is_a_checked_choice() -> None:
    with pytest.raises(ConfigError, match="train.length_grouping"):
        Recipe(train={"length_grouping": "random"})


def test_sorted_length_grouping_trains_through_the_engine(tiny_model, toy_csv, tmp_path, monkeypatch) -> None:
    from nlp_transfer.training.sampling import SortedBucketSampler
    passes = []
    orig = SortedBucketSampler.__iter__
    monkeypatch.setattr(SortedBucketSampler, "__iter__", lambda self: passes.append(len(self)) or orig(self))
    kw = recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", "full", train={"epochs": 2, "length_grouping": "sorted"})
    r = train(Recipe(**kw))
    assert passes == [r.metrics["data"]["train_size"]] * 2  # the engine drew both epochs from it
    assert r.metrics["history"][-1]["held_out"]["accuracy"] > 0.8 and r.metrics["best_step"] > 0


_FAULTS_SCRIPT = """
import json, resource, torch
from nlp_transfer.training.host_memory import heap_allocations

def faults(n, floats=16 * 1024 * 1024):  # minor page faults of allocating and freeing 64 MB, n times
    out = []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.ones(floats)
        del t
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return out

with heap_allocations(True) as on:
    inside = faults(6)
print(json.dumps({"on": on, "inside": inside, "after": faults(3)}))
"""


def test_heap_allocations_reuse_large_blocks_and_are_put_back() -> None:
    import json
    import subprocess
    import sys

    from nlp_transfer.training.host_memory import glibc, heap_allocations
    with heap_allocations(False) as on:
        assert on is False  # disabled: malloc untouched
    if glibc() is None:
        with heap_allocations(True) as on:
            assert on is False  # not glibc: nothing to tune, nothing fails
        return
    # a fresh process: the heap of a long test session is fragmented by everything before
    r = json.loads(subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True,
                                  check=True).stdout.strip().splitlines()[-1])
    inside, after = r["inside"], r["after"]
    assert r["on"] is True
    # 64 MB = 16,384 pages: a fresh mmap faults every page in; once the heap has grown to hold the
    # block (one or two allocations), the kept block faults none, as a training step's would
    assert inside[0] > 10_000 and max(inside[-3:]) < 1_000, inside
    # put back: the kept memory was returned (the next block faults in again) and blocks are
    # mmapped afresh again (at least two of three fault in fully)
    assert after[0] > 10_000 and sum(f > 10_000 for f in after) >= 2, f"malloc settings not put back: {after}"


def test_heap_allocations_change_speed_only(tiny_model, toy_csv, tmp_path, monkeypatch) -> None:
    from nlp_transfer.training import engine, host_memory
    entered = []

    def spy(enabled):  # the engine really enters the context, with the setting as configured
        entered.append(enabled)
        return host_memory.heap_allocations(enabled)
    monkeypatch.setattr(engine, "heap_allocations", spy)
    kw = dict(train={"epochs": 1, "max_steps": 4})
    on = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "on", "full", **kw)))
    off = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "off", "full",
                                       train={"epochs": 1, "max_steps": 4, "heap_allocations": False})))
    assert on.config.train.heap_allocations is True and off.config.train.heap_allocations is False
    assert entered == [True, False]  # CPU runs
    a, b = _saved_tensors(on.output_dir), _saved_tensors(off.output_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
