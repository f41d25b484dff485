"""Export a trained output folder for serving without nlp_transfer's torch code:

- ``format="onnx"``: one ONNX graph (encoder + pooling + head), optionally int8-quantized,
  checked against the torch model before it is written (:mod:`nlp_transfer.export.onnx`);
  ``nlp_transfer.load(folder)`` serves it through ONNX Runtime;
- ``format="transformers"``: a plain transformers folder (:mod:`nlp_transfer.export.native`).

``nlp-transfer export OUTPUT_DIR --format onnx [--quantize int8] [--data FILE] --out DIR``, or
``nlp_transfer.export.export(output_dir, ...)`` / ``train(...).export(...)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nlp_transfer.config import closest
from nlp_transfer.errors import ConfigError

#: The formats ``export`` writes.
FORMATS = ("onnx", "transformers")


def default_out(output_dir: str | Path, format: str, quantize: str | None = None) -> Path:
    """``<output_dir>-onnx`` (``-onnx-int8``, ``-transformers``) beside the output folder."""
    src = Path(output_dir).expanduser()
    return src.parent / f"{src.name}-{format}{f'-{quantize}' if quantize else ''}"


def export(output_dir: str | Path, format: str = "onnx", out: str | Path | None = None, quantize: str | None = None,
           data: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Export ``output_dir`` (a training output folder) as ``format`` into ``out`` (default:
    :func:`default_out`). ``quantize="int8"`` and ``data`` (check rows: csv/jsonl with the
    held-out columns) apply to ONNX; ``options``: ``opset``, ``overwrite``, ``batch_size``.
    Returns the report (check figures, sizes, where it was written)."""
    if format not in FORMATS:
        raise ConfigError("export format", expected=f"one of {list(FORMATS)}", found=repr(format)
                          + closest(str(format), list(FORMATS)), fix="pass --format onnx (or --format transformers)")
    out = Path(out) if out is not None else default_out(output_dir, format, quantize)
    if format == "transformers":
        if quantize is not None or data is not None or options:
            raise ConfigError("export --format transformers", expected="no --quantize / --data / ONNX options",
                              found=f"quantize={quantize!r}, data={data!r}, {sorted(options)}",
                              fix="leave them out, or use --format onnx")
        from nlp_transfer.export.native import export_native
        return export_native(output_dir, out)
    from nlp_transfer.export.onnx import export_onnx
    return export_onnx(output_dir, out, quantize, data, **options)



__all__ = ["FORMATS", "default_out", "export"]
