"""The peer for training: what a user would write instead of nlp_transfer.

A plain ``transformers.Trainer`` script (with ``peft`` for LoRA): ``AutoModelForSequenceClassification``
from the MiniLM folder, ``num_labels=2``, batch 32, ``max_length`` 128, dynamic padding with
``DataCollatorWithPadding``, 3 epochs, no evaluation during training, one evaluation at the end.
Strategies, written the way the ``transformers``/``peft`` docs show them:

* ``frozen``: ``for p in model.base_model.parameters(): p.requires_grad = False`` (only the
  classifier trains; the encoder still runs forward on every batch of every epoch);
* ``full``: every weight trains;
* ``lora``: ``peft.LoraConfig(r=8, target_modules=["query", "value"], modules_to_save=["classifier"])``;
* ``partial``: encoder frozen, then the top-2 layers and the classifier unfrozen.

Freezing ``model.base_model`` also freezes BERT's pooler (it lives there), in every strategy but
``full``. ``--group-by-length`` sets ``train_sampling_strategy="group_by_length"`` (the name in
transformers 5; it was ``group_by_length=True`` in 4.x): the best a Trainer user can do about padding.

The run is offline, reports to nothing, saves no checkpoint (``save_strategy="no"``), logs nothing
during training and uses the CPU when there is no GPU. Real and padded training tokens are counted
exactly by wrapping the collator.

    python benchmarks/trainer_peer.py --strategy full [--group-by-length] [--train-size 4000]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if __package__ in (None, ""):  # run as a script: make `benchmarks.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (BATCH_SIZE, EPOCHS, LORA_ALPHA, LORA_DROPOUT, LORA_R, LORA_TARGETS,  # noqa: E402
                               MAX_LENGTH, PARTIAL_TOP_K, SEED, STRATEGIES, STRATEGY_LR, Split,
                               load_sst2, minilm_path, write_json)


class CountingCollator:
    """Wraps a collator and counts the real (attention-mask) and padded tokens it emits."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.enabled = True
        self.real = 0
        self.padded = 0
        self.batches = 0
        self.seq_lens: list[int] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(features)
        if self.enabled:
            mask = batch["attention_mask"]
            lens = mask.sum(dim=1).tolist()
            self.seq_lens.extend(int(x) for x in lens)
            self.real += int(sum(lens))
            self.padded += int(mask.numel())
            self.batches += 1
        return batch


def build_peer_model(model_path: str, strategy: str, num_labels: int = 2, top_k: int = PARTIAL_TOP_K) -> Any:
    """Load ``AutoModelForSequenceClassification`` and set up ``strategy`` as a Trainer user would."""
    from transformers import AutoModelForSequenceClassification

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=num_labels)
    if strategy == "full":
        return model
    if strategy == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                         target_modules=list(LORA_TARGETS), modules_to_save=["classifier"])
        return get_peft_model(model, cfg)
    for p in model.base_model.parameters():
        p.requires_grad = False
    if strategy == "partial":
        for layer in model.base_model.encoder.layer[-top_k:]:
            for p in layer.parameters():
                p.requires_grad = True
    return model


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def run_trainer(strategy: str, train: Split, dev: Split, epochs: int = EPOCHS, group_by_length: bool = False,
                seed: int = SEED, *, model_path: str | None = None, batch_size: int = BATCH_SIZE,
                max_length: int = MAX_LENGTH, lr: float | None = None, bf16: bool = False) -> dict[str, Any]:
    """Fine-tune with a plain ``Trainer`` and evaluate on ``dev`` once at the end.

    Returns a dict with ``wall_s`` (model load + tokenisation + training + final evaluation: what the
    user waits for), ``train_s`` (``trainer.train()`` alone), ``train_samples_per_s``
    (``epochs * len(train) / train_s``), ``dev_accuracy``, ``train_tokens_real`` and
    ``train_tokens_padded`` (summed over all epochs, counted in the collator), ``train_seq_lens``
    (real length of every training sequence processed, for FLOP counting), and the settings used.
    """
    import numpy as np
    import torch
    import transformers
    import datasets
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    model_path = model_path or minilm_path()
    lr = STRATEGY_LR[strategy] if lr is None else lr
    use_cpu = not torch.cuda.is_available()

    t_start = time.perf_counter()
    transformers.set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = build_peer_model(model_path, strategy)
    t_loaded = time.perf_counter()

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["sentence"], truncation=True, max_length=max_length)

    train_ds = Dataset.from_dict(train.to_dict()).map(tokenize, batched=True, remove_columns=["sentence"])
    dev_ds = Dataset.from_dict(dev.to_dict()).map(tokenize, batched=True, remove_columns=["sentence"])
    t_tok = time.perf_counter()

    collator = CountingCollator(DataCollatorWithPadding(tokenizer))
    with tempfile.TemporaryDirectory(prefix="trainer_peer_") as out_dir:
        args = TrainingArguments(
            output_dir=out_dir,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=batch_size,
            learning_rate=lr,
            train_sampling_strategy="group_by_length" if group_by_length else "random",
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=seed,
            use_cpu=use_cpu,
            bf16=bf16 and not use_cpu,
            dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator,
                          processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # the end-of-training metrics print; we return them
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        collator.enabled = False
        t1 = time.perf_counter()
        pred = trainer.predict(dev_ds)
        eval_s = time.perf_counter() - t1
    wall_s = time.perf_counter() - t_start

    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    preds = np.asarray(logits).argmax(axis=-1)
    # Compare with pred.label_ids, not dev.labels: with train_sampling_strategy="group_by_length",
    # transformers 5 also length-groups the *eval* sampler (Trainer._get_eval_sampler), so predict()
    # returns rows in a shuffled order. Comparing with dev.labels scored 0.515 (chance) here.
    gold = np.asarray(pred.label_ids) if pred.label_ids is not None else np.asarray(dev.labels)
    assert len(gold) == len(preds) == len(dev), (len(gold), len(preds), len(dev))
    accuracy = float((preds == gold).mean())
    trainable, total = count_params(model)
    return {
        "peer": "transformers.Trainer" + (" group_by_length" if group_by_length else ""),
        "strategy": strategy,
        "wall_s": wall_s,
        "load_s": t_loaded - t_start,
        "tokenize_s": t_tok - t_loaded,
        "train_s": train_s,
        "eval_s": eval_s,
        "train_samples_per_s": epochs * len(train) / train_s,
        "dev_accuracy": accuracy,
        "dev_size": len(dev),
        "train_size": len(train),
        "train_tokens_real": collator.real,
        "train_tokens_padded": collator.padded,
        "train_batches": collator.batches,
        "train_seq_lens": collator.seq_lens,
        "trainable_params": trainable,
        "total_params": total,
        "settings": {"epochs": epochs, "batch_size": batch_size, "max_length": max_length, "lr": lr,
                     "seed": seed, "group_by_length": group_by_length,
                     "optim": str(getattr(args.optim, "value", args.optim)),
                     "device": "cpu" if use_cpu else "cuda", "model_path": model_path},
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: run one strategy (or all) and print the result as JSON."""
    ap = argparse.ArgumentParser(description="Plain transformers.Trainer peer on SST-2.")
    ap.add_argument("--strategy", default="full", choices=[*STRATEGIES, "all"])
    ap.add_argument("--group-by-length", action="store_true")
    ap.add_argument("--train-size", type=int, default=4000)
    ap.add_argument("--dev-size", type=int, default=None, help="default: the full 872-sentence dev set")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--model", default=None, help="model folder (default: the installed MiniLM)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    train, dev = load_sst2(args.train_size, args.seed)
    if args.dev_size:
        dev = dev.head(args.dev_size)
    strategies = STRATEGIES if args.strategy == "all" else (args.strategy,)
    results = []
    for s in strategies:
        r = run_trainer(s, train, dev, args.epochs, args.group_by_length, args.seed, model_path=args.model, lr=args.lr)
        r.pop("train_seq_lens")
        print(json.dumps(r, indent=2), flush=True)
        results.append(r)
    if args.json:
        write_json(args.json, {"trainer_peer": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
