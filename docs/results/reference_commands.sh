#!/usr/bin/env bash
# The `nlp-transfer compare` runs behind docs/results/{sst2,bbc_news}/ and docs/results/step_budget/ (CPU, 2 cores).
# Finished runs are reused on a re-run (resume), so an interrupted job can simply be restarted.
set -euo pipefail
OUT=${OUT:-outputs/reference}
DATA=${DATA:-../shared/data}

nlp-transfer compare --data "$DATA/sst2" --text-column sentence --label-names negative positive \
  --model minilm --strategies frozen lora full scratch --sizes 100 1000 --seeds 2 --max-size scratch=100 \
  --budget-epochs 2 --min-steps 16 --max-length 64 --batch-size 32 --set eval.train_sample_size=128 \
  --out "$OUT/sst2" --title "SST-2 (held-out: GLUE dev, 872 sentences) - all-MiniLM-L6-v2"

nlp-transfer compare --data bbc_news \
  --model minilm --strategies frozen lora scratch --sizes 50 200 all --seeds 2 --max-size lora=50 scratch=50 \
  --budget-epochs 3 --min-steps 12 --max-length 128 --batch-size 16 --set eval.train_sample_size=128 \
  --out "$OUT/bbc_news" --title "BBC News (held-out: 20% carved, stratified) - all-MiniLM-L6-v2"

# Step budgets (train.min_steps=200, the default) at 50-200 examples: docs/results/step_budget/.
nlp-transfer compare --data "$DATA/sst2" --text-column sentence --label-names negative positive \
  --model minilm --strategies frozen lora full partial contrastive --sizes 50 100 200 --seeds 1 --min-steps 200 \
  --max-length 64 --batch-size 32 --set eval.train_sample_size=128 --out "$OUT/step_budget/sst2" \
  --title "SST-2 (held-out: GLUE dev, 872 sentences), step budget 200 - all-MiniLM-L6-v2"
nlp-transfer compare --data bbc_news --model minilm --strategies frozen lora full partial contrastive --sizes 50 200 \
  --seeds 1 --min-steps 200 --max-length 128 --batch-size 32 --set eval.train_sample_size=128 \
  --out "$OUT/step_budget/bbc_news" \
  --title "BBC News (held-out: 20% carved, stratified), step budget 200 - all-MiniLM-L6-v2"
# A second training seed at 100/200 (docs/results/step_budget/sst2/lora_contrastive_2seeds.*) and
# 500/800 examples (frozen_lora_500_800.*): the evidence behind auto's "few labels -> lora" rule.
nlp-transfer compare --data "$DATA/sst2" --text-column sentence --label-names negative positive \
  --model minilm --strategies lora contrastive --sizes 100 200 --seeds 2 --min-steps 200 \
  --max-length 64 --batch-size 32 --set eval.train_sample_size=128 --out "$OUT/step_budget/sst2_2seeds"
nlp-transfer compare --data "$DATA/sst2" --text-column sentence --label-names negative positive \
  --model minilm --strategies frozen lora --sizes 500 800 --seeds 1 --min-steps 200 \
  --max-length 64 --batch-size 32 --set eval.train_sample_size=128 --out "$OUT/step_budget/sst2_500_800"

# rank-models: the pretrained MiniLM against the random-init copy of its architecture that
# `compare` built for `scratch` (a known-bad candidate), last layer vs mean of all layers.
SCRATCH=$(ls -d "${NLP_TRANSFER_CACHE:-$HOME/.cache/nlp_transfer}"/scratch/model-random-* | head -1)
nlp-transfer rank-models --data "$DATA/sst2" --text-column sentence --label-names negative positive \
  --models minilm "$SCRATCH" --layers last,mean --sample 2000 --max-length 64 --out "$OUT/sst2/rank_models.json"
nlp-transfer rank-models --data bbc_news --models minilm "$SCRATCH" --layers last,mean --sample 1000 \
  --max-length 128 --out "$OUT/bbc_news/rank_models.json"
