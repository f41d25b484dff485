"""Run under ``torchrun --nproc_per_node N`` (or plain python for 1 process) by
tests/test_distributed.py: extracts sentence features, token features, rank-models layer features
and the strategy=auto probe features of toy data, recording which rows each process encoded, and
saves what it got (every process holds the whole split) to ``OUT/rank<r>.npz``.

    python tests/dist_extract.py MODEL_DIR OUT CACHE_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy import make_rows, write_csv  # noqa: E402
from toy_tasks import write_conll  # noqa: E402

from datasets import Dataset  # noqa: E402

from nlp_transfer.data import tokenize  # noqa: E402
from nlp_transfer.model import build_model, load_tokenizer  # noqa: E402
from nlp_transfer.model import features as feats  # noqa: E402
from nlp_transfer.registry import TASKS  # noqa: E402
from nlp_transfer.tasks.token_features import cached_token_features, extract_token_features  # noqa: E402
from nlp_transfer.training.evaluate import default_collator  # noqa: E402

model_dir, out, cache = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
state = feats.process_state()
rank = state.process_index
encoded: dict[str, list[int]] = {}
where = ["?"]
real_batch_rows = feats.batch_rows


def counting_batch_rows(ds, idx):  # every row a process encodes passes here
    encoded.setdefault(where[0], []).extend(int(i) for i in idx)
    return real_batch_rows(ds, idx)


feats.batch_rows = counting_batch_rows
torch.manual_seed(0)
model, resolved, pooling = build_model(str(model_dir), "sequence_classification", 3, "mean", strategy="frozen")
tok = load_tokenizer(resolved)
rows = make_rows(203, seed=3)  # 203 rows, batch 8: 26 batches, not divisible by 2 processes
ds = tokenize(Dataset.from_list([{"text": r["text"]} for r in rows]), tok, 32)
collate = default_collator(tok)
key = {"model_id": resolved, "revision": None, "weights_sha": "toy", "pooling": pooling, "max_length": 32}
res: dict[str, np.ndarray] = {}

where[0] = "sentence"
res["sentence"] = np.asarray(feats.extract_features(model, ds, collate, 8, state.device, None, "f", False))
where[0] = "sentence_cached"
x, hit = feats.cached_features(model, ds, collate, 8, state.device, key, cache, "f", False)
res["sentence_cached"], res["sentence_cached_hit"] = np.asarray(x), np.asarray(hit)

spec = TASKS["token_classification"]
conll = write_conll(out / f"conll{rank}", {"train": 41})
from nlp_transfer.config import DataConfig  # noqa: E402
from nlp_transfer.data import prepare_data  # noqa: E402
data = spec.prepare(DataConfig(name=str(conll))) if spec.prepare else prepare_data(DataConfig(name=str(conll)),
                                                                                    "token_classification")
tds = spec.tokenize(data.train, tok, 32, data.label_names, None)
where[0] = "tokens"
tx, toff = extract_token_features(model, tds, spec.collator(tok), 8, state.device, None, "t", False)
res["tokens"], res["token_offsets"] = np.asarray(tx), np.asarray(toff)
where[0] = "tokens_cached"
tx, toff, thit = cached_token_features(model, tds, spec.collator(tok), 8, state.device, {**key, "pooling": "tokens"},
                                       cache, "t", False)
res["tokens_cached"], res["tokens_cached_hit"] = np.asarray(tx), np.asarray(thit)

from nlp_transfer.selection.rank import extract_layer_features  # noqa: E402
where[0] = "rank"
ext = extract_layer_features(str(model_dir), Dataset.from_list([{"text": r["text"]} for r in rows]),
                             ["last", "mean"], 32, "mean", batch_size=8, cache_dir=None)
res["rank_last"], res["rank_mean"] = ext["features"]["last"], ext["features"]["mean"]

from nlp_transfer import Recipe  # noqa: E402
from nlp_transfer.selection.auto import measure_signals  # noqa: E402
data_csv = write_csv(out / f"auto{rank}" / "train.csv", make_rows(150))
cfg = Recipe(model={"name": str(model_dir), "max_length": 32, "pooling": "mean"}, data={"name": str(data_csv)},
             strategy={"name": "auto", "cache_features": False}, output={"dir": str(out / "unused"),
                                                                        "progress_bars": False})
where[0] = "auto"
signals, meas = measure_signals(cfg, probe_sample=120)
res["auto_probe"] = np.asarray(meas["probe"]["mean"])

np.savez(out / f"rank{rank}.npz", **res)
(out / f"rank{rank}.json").write_text(json.dumps({"encoded": encoded, "world": state.num_processes}))
state.wait_for_everyone()
