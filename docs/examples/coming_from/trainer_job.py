import time, numpy as np, evaluate
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
from common import MINILM, dev_df, train_df
t0 = time.time()
tok = AutoTokenizer.from_pretrained(MINILM)
model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2)
enc = lambda b: tok(b["text"], truncation=True, max_length=64)
train_ds, dev_ds = Dataset.from_pandas(train_df).map(enc, batched=True), Dataset.from_pandas(dev_df).map(enc, batched=True)
def compute_metrics(p):
    return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}
args = TrainingArguments(output_dir="out_trainer", learning_rate=5e-5, num_train_epochs=10, per_device_train_batch_size=16,
                         eval_strategy="epoch", save_strategy="no", report_to=[], seed=0, logging_steps=10)
trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds, processing_class=tok,
                  compute_metrics=compute_metrics)
trainer.train()
print("TRAINER dev accuracy", trainer.evaluate()["eval_accuracy"], "wall", round(time.time() - t0, 1), "s")
