"""SMS spam with class weights: an imbalanced binary task (13% spam).

    python recipes/sms_spam.py                          # frozen MiniLM, class_weights=auto
    python recipes/sms_spam.py train.class_weights=none # the unweighted baseline
    python recipes/sms_spam.py --compare                # both, side by side (spam recall, macro-F1)

``key=value`` arguments override the preset ``configs/sms_spam.yaml``. The held-out
per-class scores and confusion matrix are in ``<output>/metrics.json`` ("held_out_details")
and ``<output>/confusion_matrix.png``.
"""
from pathlib import Path

from nlp_transfer.cli import run_recipe
from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "sms_spam.yaml"


def compare(overrides: list[str]) -> None:
    """Train with class_weights=none and =auto on the same split and print the figures."""
    rows = []
    for weights in ("none", "auto"):
        cfg = load_config(PRESET, overrides + [f"train.class_weights={weights}", "output.overwrite=true"])
        cfg.output.dir = f"{cfg.output.dir}_{weights}"
        m = train(cfg).metrics
        spam = m["held_out_details"]["per_class"]["spam"]
        rows.append((weights, spam["recall"], spam["precision"], spam["f1"], m["held_out"]["f1"],
                     m["held_out"]["accuracy"], m["held_out_details"]["confusion_matrix"]["matrix"]))
    print("\n| class_weights | spam recall | spam precision | spam F1 | macro-F1 | accuracy | confusion [[ham], [spam]] |")
    print("|---|---|---|---|---|---|---|")
    for w, r, p, f, mf, acc, cm in rows:
        print(f"| {w} | {r:.4f} | {p:.4f} | {f:.4f} | {mf:.4f} | {acc:.4f} | {cm} |")


def main(argv: list[str]) -> None:
    if "--compare" in argv:
        compare([a for a in argv if a != "--compare"])
    else:
        train(load_config(PRESET, argv))


if __name__ == "__main__":
    run_recipe(main)  # errors: one line and the CLI's exit code, like `nlp-transfer train`
