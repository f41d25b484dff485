"""``nlp-transfer`` command line: train, predict, evaluate (and more subcommands as they land)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import NLPTransferError


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .recipe import train
    cfg = load_config(args.config, args.overrides)
    train(cfg)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import load
    texts: list[str] = list(args.text or [])
    if args.file:
        texts += [line.rstrip("\n") for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise NLPTransferError("predict input", expected="--text TEXT or --file FILE", found="nothing",
                               fix="pass --text 'some text' (repeatable) or --file texts.txt (one per line)")
    predictor = load(args.model_dir)
    pairs = list(args.pair) if args.pair else None
    for text, pred in zip(texts, predictor(texts, pairs)):
        print(json.dumps({"text": text, **pred}, ensure_ascii=False))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .predict import evaluate_output
    overrides = {}
    for item in args.set or []:
        k, _, v = item.partition("=")
        overrides[k] = v
    scores = evaluate_output(args.model_dir, args.data, args.split, **overrides)
    print(json.dumps(scores, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nlp-transfer", description="Transfer a pretrained transformer to your data.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run a recipe: --config preset.yaml key=value ...")
    t.add_argument("--config", help="YAML preset (e.g. recipes/configs/bbc_news.yaml); defaults if omitted")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. strategy=lora train.lr=3e-4")
    t.set_defaults(func=_cmd_train)

    pr = sub.add_parser("predict", help="predict with a trained output folder or Hub repo")
    pr.add_argument("model_dir")
    pr.add_argument("--text", action="append", help="a text to classify (repeatable)")
    pr.add_argument("--pair", action="append", help="second text of a pair (repeatable, same order as --text)")
    pr.add_argument("--file", help="a UTF-8 file with one text per line")
    pr.set_defaults(func=_cmd_predict)

    ev = sub.add_parser("evaluate", help="score a trained model on a labelled file or dataset")
    ev.add_argument("model_dir")
    ev.add_argument("--data", required=True, help="file, folder, 'bbc_news' or Hub id (columns as in training)")
    ev.add_argument("--split", help="split to score (default: test, validation, dev or train)")
    ev.add_argument("--set", action="append", help="data option override, e.g. --set text_column=sentence")
    ev.set_defaults(func=_cmd_evaluate)

    from . import cli_extra
    cli_extra.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NLPTransferError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
