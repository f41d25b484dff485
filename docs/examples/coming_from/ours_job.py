import sys, time
from nlp_transfer import Recipe, train
from common import dev_df, train_df

def compute_metrics(p):  # the same function Trainer gets
    return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}

t0 = time.time()
if sys.argv[1] == "full":   # Trainer's job, in Trainer's words
    r = train(Recipe(model={"name": "minilm", "max_length": 64}, data={"train": train_df, "validation": dev_df},
                     strategy="full", train={"learning_rate": 5e-5, "num_train_epochs": 10, "per_device_train_batch_size": 16,
                                              "seed": 0},
                     output={"output_dir": "out_ours_full", "overwrite": True, "report_to": ["none"]}),
              compute_metrics=compute_metrics)
else:                        # let nlp_transfer choose
    r = train(Recipe(model={"name": "minilm", "max_length": 64}, data={"train": train_df, "validation": dev_df},
                     strategy="auto", output={"dir": "out_ours_auto", "overwrite": True, "report_to": ["none"]}))
print("NLP_TRANSFER", sys.argv[1], "dev accuracy", round(r.metrics["held_out"]["accuracy"], 4), "strategy",
      r.metrics["strategy"], "best epoch", r.metrics["best_epoch"], "wall", round(time.time() - t0, 1), "s")
