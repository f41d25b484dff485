"""``nlp-transfer`` command line (the table in :func:`subcommands`) and :func:`run_recipe`, which
makes ``recipes/*.py`` exit the same way."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Callable, NoReturn

from nlp_transfer.errors import NLPTransferError, is_main_process


def _cmd_train(args: argparse.Namespace) -> int:
    from nlp_transfer.config import load_config
    from nlp_transfer.recipe import train
    from nlp_transfer.config import resolve_preset
    from nlp_transfer.multitask import is_multitask_config
    if args.config and args.preset:
        raise NLPTransferError("train", expected="--config or --preset", found="both",
                               fix="pass one of them (--preset takes a shipped name or a path too)")
    path = resolve_preset(args.preset or args.config) if (args.preset or args.config) else None
    if args.quiet:  # only warnings and errors (an explicit output.verbosity=... still wins)
        args.overrides = ["output.verbosity=warning", *args.overrides]
    if path is not None and is_multitask_config(path):  # a preset with a `tasks:` mapping
        from nlp_transfer.multitask import load_multitask_config, train_multitask
        train_multitask(load_multitask_config(path, args.overrides))
        return 0
    cfg = load_config(path, args.overrides)
    train(cfg)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from nlp_transfer.predict import load
    texts: list[str] = list(args.text or [])
    if args.file:
        texts += [line.rstrip("\n") for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise NLPTransferError("predict input", expected="--text TEXT or --file FILE", found="nothing",
                               fix="pass --text 'some text' (repeatable) or --file texts.txt (one per line)")
    predictor = load(args.model_dir, trust_remote_code=args.trust_remote_code)
    pairs = list(args.pair) if args.pair else None
    for text, pred in zip(texts, predictor(texts, pairs)):
        print(json.dumps({"text": text, **pred}, ensure_ascii=False))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from nlp_transfer.predict import evaluate_output
    overrides = {}
    for item in args.set or []:
        k, _, v = item.partition("=")
        overrides[k] = v
    scores = evaluate_output(args.model_dir, args.data, args.split, **overrides)
    print(json.dumps(scores, indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from nlp_transfer.export import export
    options = {"overwrite": True} if args.overwrite else {}
    if args.opset is not None:
        options["opset"] = args.opset
    report = export(args.output_dir, args.format, args.out, args.quantize, args.data, **options)
    print(json.dumps(report, indent=2, default=str))
    return 0


def field_docs(cls: type) -> dict[str, str]:
    """Each field of a config dataclass -> its ``#:`` comment (the lines above the field), joined."""
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#:"):
            pending.append(text[2:].strip())
            continue
        m = re.match(r"^([A-Za-z_]\w*)\s*:", text)
        if m and not text.startswith(("def ", "class ")) and "(" not in text.split(":")[0]:
            docs[m.group(1)] = " ".join(pending)
        pending = []
    return docs


def _one_line(doc: str, width: int = 110) -> str:
    """The first sentence of ``doc``, cut to ``width`` characters."""
    first = re.split(r"(?<=[.;])\s", doc, maxsplit=1)[0]
    return first if len(first) <= width else first[: width - 3].rstrip() + "..."


def _default(f: "dataclasses.Field[object]") -> object:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def config_reference() -> str:
    """Every config key, grouped by section, with its default and one-line doc, then the
    transformers.TrainingArguments names accepted as aliases (generated from the dataclasses)."""
    from nlp_transfer.config import RecipeConfig, TRAINER_ALIASES
    from nlp_transfer.config.trainer_names import TRAINER_ALIAS_NOTES
    lines = ["config keys (section.key=value overrides; default, then what it does):"]
    for top in dataclasses.fields(RecipeConfig):
        section = _default(top)
        if not dataclasses.is_dataclass(section):
            lines.append(f"\n{top.name} (default: {section!s})")
            continue
        cls = type(section)
        lines.append(f"\n{top.name}: {(inspect.getdoc(cls) or '').splitlines()[0]}")
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            doc = _one_line(docs.get(f.name) or "")
            lines.append(f"  {top.name}.{f.name} = {_default(f)!r}" + (f"  {doc}" if doc else ""))
    lines.append("\ntransformers.TrainingArguments names accepted as aliases (bare or section.name; "
                 "a one-line notice says what they became):")
    for name, key in TRAINER_ALIASES.items():
        note = TRAINER_ALIAS_NOTES.get(name)
        lines.append(f"  {name} -> {key}" + (f"  ({note})" if note else ""))
    return "\n".join(lines)


def _add_train(sub: "argparse._SubParsersAction") -> None:  # noqa: F821
    from nlp_transfer.config import preset_names
    t = sub.add_parser("train", help="run a recipe: --preset NAME (or --config preset.yaml) key=value ...",
                       description="Run a recipe: a preset (or the defaults) plus key=value overrides.",
                       epilog=config_reference(), formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", help="YAML preset file (e.g. recipes/configs/bbc_news.yaml); defaults if omitted")
    t.add_argument("--preset", help="a preset shipped with the package, by name (one of: "
                                    f"{', '.join(preset_names())}), or a YAML path")
    t.add_argument("--quiet", "-q", action="store_true",
                   help="print only warnings and errors (output.verbosity=warning); no progress bars")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. strategy=lora train.lr=3e-4")
    t.set_defaults(func=_cmd_train)


def _add_predict(sub: "argparse._SubParsersAction") -> None:  # noqa: F821
    pr = sub.add_parser("predict", help="predict with a trained output folder or Hub repo")
    pr.add_argument("model_dir")
    pr.add_argument("--text", action="append", help="a text to classify (repeatable)")
    pr.add_argument("--pair", action="append", help="second text of a pair (repeatable, same order as --text)")
    pr.add_argument("--file", help="a UTF-8 file with one text per line")
    pr.add_argument("--trust-remote-code", action="store_true",
                    help="allow code from the model's repository to run (only for folders you trust)")
    pr.set_defaults(func=_cmd_predict)


def _add_evaluate(sub: "argparse._SubParsersAction") -> None:  # noqa: F821
    ev = sub.add_parser("evaluate", help="score a trained model on a labelled file or dataset")
    ev.add_argument("model_dir")
    ev.add_argument("--data", required=True, help="file, folder, 'bbc_news' or Hub id (columns as in training)")
    ev.add_argument("--split", help="split to score (default: test, validation, dev or train)")
    ev.add_argument("--set", action="append", help="data option override, e.g. --set text_column=sentence")
    ev.set_defaults(func=_cmd_evaluate)


def _add_export(sub: "argparse._SubParsersAction") -> None:  # noqa: F821
    ex = sub.add_parser("export", help="export a trained output folder: ONNX (optionally int8) or plain transformers",
                        description="Export a trained output folder for serving. ONNX: the whole model (encoder, "
                                    "pooling, head) as one graph, checked against the torch model on the held-out "
                                    "rows saved with the run (or --data) before anything is written.")
    ex.add_argument("output_dir", help="the output folder of a training run")
    ex.add_argument("--format", default="onnx", help="onnx (default) or transformers")
    ex.add_argument("--quantize", help="int8: dynamic int8 weights (refused if held-out accuracy drops > 0.5 pt)")
    ex.add_argument("--data", help="csv/jsonl check rows with the held-out columns (default: held_out.jsonl)")
    ex.add_argument("--out", help="folder to write (default: OUTPUT_DIR-onnx[-int8] beside it)")
    ex.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    ex.set_defaults(func=_cmd_export)


def subcommands() -> dict[str, Callable[["argparse._SubParsersAction"], None]]:  # noqa: F821
    """Every ``nlp-transfer`` subcommand: name -> the function that adds its parser.

    The subcommands defined in their own modules are imported here, normally: a module that
    fails to import fails ``nlp-transfer`` with its error instead of hiding the subcommand."""
    from nlp_transfer.selection import compare
    from nlp_transfer.publish import hub
    from nlp_transfer.training import preflight
    from nlp_transfer.selection import rank
    return {
        "train": _add_train,
        "predict": _add_predict,
        "evaluate": _add_evaluate,
        "export": _add_export,
        "push": hub.add_subcommand,
        "rank-models": rank.add_subcommand,
        "compare": compare.add_subcommand,
        "preflight": preflight.add_subcommand,
    }


def build_parser() -> argparse.ArgumentParser:
    from nlp_transfer.version import __version__
    p = argparse.ArgumentParser(prog="nlp-transfer", description="Transfer a pretrained transformer to your data.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, add in subcommands().items():
        add(sub)
        if name not in sub.choices:
            raise RuntimeError(f"subcommand table: {add.__module__}.{add.__name__} did not add '{name}'")
    return p


def _report(fn: Callable[[], object]) -> int:
    """Run ``fn`` the way the CLI does: the exit code, and for a user error (NLPTransferError: 2,
    OSError: 1) one ``error: ...`` line on stderr, printed by the main process only."""
    try:
        return int(fn() or 0)
    except NLPTransferError as e:
        message, code = str(e), 2
    except OSError as e:  # disk full, permissions, read-only file system ... during the run
        message, code = os_error_message(e), 1
    if is_main_process():
        print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _report(lambda: args.func(args))


def run_recipe(recipe: Callable[[list[str]], object], argv: list[str] | None = None) -> NoReturn:
    """Run a ``recipes/*.py`` script's ``main(argv)`` and exit like the ``nlp-transfer`` CLI: code 0,
    or for a user error one ``error: ...`` line (main process only, under torchrun / accelerate
    launch) and exit code 2 (1 for an operating-system error) on every process. ``argv`` defaults
    to ``sys.argv[1:]``."""
    sys.exit(_report(lambda: recipe(sys.argv[1:] if argv is None else list(argv))))


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error: which file, what went wrong, what to do."""
    import errno

    from nlp_transfer.errors import make_message
    target = f" on {e.filename}" if getattr(e, "filename", None) else ""
    reason = e.strerror or str(e) or type(e).__name__
    found = f"{type(e).__name__} [Errno {e.errno}] {reason}" if e.errno is not None else f"{type(e).__name__}: {reason}"
    if e.errno == errno.ENOSPC:
        expected, fix = "free disk space", ("free space on that disk or pass output.dir=<folder on another disk> "
                                            "(and output.cache_dir for frozen features); no complete output was written")
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        expected, fix = "write permission", "pass output.dir=<a folder you can write> or fix the folder's permissions"
    else:
        expected, fix = "the file operation to succeed", "check the path, the disk and its permissions, then re-run"
    return make_message(f"I/O error{target}", expected=expected, found=found, fix=fix)


if __name__ == "__main__":
    sys.exit(main())
