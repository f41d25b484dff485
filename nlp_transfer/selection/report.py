"""Rendering of ``compare`` results: tables (plain text / Markdown), the learning-curve PNG
and a self-contained HTML report (the PNG embedded as base64, no external assets).

Every number shown comes from the summary rows built by :func:`nlp_transfer.selection.compare.summarize`
and is formatted by :func:`fmt_mean_std` / :func:`fmt_num`, so the text, Markdown, HTML and
JSON outputs agree digit for digit (the tests check this).
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Sequence

__all__ = ["fmt_num", "fmt_mean_std", "fmt_params", "fmt_seconds", "fmt_size", "table_rows",
           "markdown_table", "text_table", "learning_curve_png", "html_report", "TABLE_HEADER"]

#: Column titles of the comparison table (the same in text, Markdown and HTML).
TABLE_HEADER = ("strategy", "n train", "held-out {metric}", "train-sample {metric}", "gap",
                "trainable params", "wall time", "peak RSS", "peak CUDA")

#: Line colours per strategy, stable across plots (a registered strategy may set its own ``Strategy.color``;
#: ``scratch`` is compare's randomly initialised baseline, not a strategy).
COLORS = {"frozen": "#1f77b4", "lora": "#2ca02c", "full": "#d62728", "partial": "#9467bd",
          "scratch": "#7f7f7f"}


def strategy_color(name: str) -> str | None:
    """The plot colour of a strategy: its class's ``color``, else the table above (None: matplotlib's)."""
    from nlp_transfer.registry import STRATEGIES
    return getattr(STRATEGIES.get(name), "color", None) or COLORS.get(name)


# --------------------------------------------------------------------------- formatting

def fmt_num(x: float | None, digits: int = 3) -> str:
    """A metric value with fixed decimals; '-' when missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def fmt_mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``0.912 ± 0.004`` (the ± part omitted when std is unknown, e.g. one seed)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return fmt_num(mean, digits)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_signed(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.{digits}f}"


def fmt_params(n: int | None) -> str:
    """Parameter count as 22.7M / 3.1K."""
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def fmt_seconds(s: float | None) -> str:
    """Seconds as '12.3 s' / '4m05s' / '1h02m'."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def fmt_mb(mb: float | None) -> str:
    if mb is None or (isinstance(mb, float) and math.isnan(mb)):
        return "-"
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def fmt_size(size: int | str, n_train: int | None = None) -> str:
    """Training-set size label: '100', or 'all (1,780)'."""
    if size == "all":
        return f"all ({n_train:,})" if n_train is not None else "all"
    return f"{int(size):,}"


def table_rows(summary: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Formatted cells of the comparison table, one list per summary row."""
    out = []
    for r in summary:
        out.append([
            r["strategy"],
            fmt_size(r["size"], r.get("n_train")),
            fmt_mean_std(r["held_out_mean"], r["held_out_std"]),
            fmt_num(r["train_sample_mean"]),
            fmt_signed(r["gap_mean"]),
            fmt_params(r["trainable_params"]),
            fmt_seconds(r["wall_s_mean"]),
            fmt_mb(r.get("peak_rss_mb")),
            fmt_mb(r.get("cuda_peak_mb")),
        ])
    return out


def _header(metric: str) -> list[str]:
    return [h.format(metric=metric) for h in TABLE_HEADER]


def markdown_table(summary: Sequence[dict[str, Any]], metric: str) -> str:
    """GitHub Markdown table of the summary (what the README shows)."""
    head = _header(metric)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(summary)]
    return "\n".join(lines)


def text_table(summary: Sequence[dict[str, Any]], metric: str) -> str:
    """Fixed-width table for the terminal."""
    head = _header(metric)
    rows = table_rows(summary)
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the plot

def learning_curve_png(summary: Sequence[dict[str, Any]], path: str | Path, metric: str,
                       title: str = "", gap_warning: float | None = 0.05, chance: float | None = None) -> Path:
    """Held-out metric against the number of labelled examples (log x axis), one line per
    strategy with a ±1 std band over seeds (and the majority-class ``chance`` level dotted); a
    second panel shows the train-sample minus held-out gap (overfitting), with the warning
    threshold dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strategies = list(dict.fromkeys(r["strategy"] for r in summary))
    fig, (ax, ax_gap) = plt.subplots(1, 2, figsize=(10, 4), dpi=100,
                                     gridspec_kw={"width_ratios": [3, 2]})
    for s in strategies:
        rows = sorted((r for r in summary if r["strategy"] == s), key=lambda r: r["n_train"])
        x = [r["n_train"] for r in rows]
        m = [r["held_out_mean"] for r in rows]
        sd = [r["held_out_std"] if r["held_out_std"] is not None else 0.0 for r in rows]
        color = strategy_color(s)
        ax.plot(x, m, marker="o", label=s, color=color)
        ax.fill_between(x, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                        alpha=0.18, color=color, linewidth=0)
        g = [r["gap_mean"] for r in rows]
        gsd = [r["gap_std"] if r.get("gap_std") is not None else 0.0 for r in rows]
        ax_gap.plot(x, g, marker="o", label=s, color=color)
        ax_gap.fill_between(x, [a - b for a, b in zip(g, gsd)], [a + b for a, b in zip(g, gsd)],
                            alpha=0.15, color=color, linewidth=0)
    ticks = sorted({r["n_train"] for r in summary})
    for a in (ax, ax_gap):
        a.set_xscale("log")
        a.set_xticks(ticks)
        a.set_xticklabels([f"{t:,}" for t in ticks])
        a.minorticks_off()
        a.set_xlabel("labelled training examples")
        a.grid(True, alpha=0.3)
    if chance is not None:
        ax.axhline(chance, color="black", linestyle=":", linewidth=0.9, label=f"chance ({chance:.3f})")
    ax.set_ylabel(f"held-out {metric} (mean ± std over seeds)")
    ax.set_title(title or "learning curves", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax_gap.set_ylabel(f"train-sample − held-out {metric}")
    ax_gap.set_title("overfitting gap", fontsize=10)
    if gap_warning is not None:
        ax_gap.axhline(gap_warning, color="black", linestyle="--", linewidth=0.8)
    ax_gap.axhline(0.0, color="black", linewidth=0.5)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .6em} th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.rec{background:#eef6ee;border-left:4px solid #2ca02c;padding:.6em 1em}
.small{color:#666;font-size:.85em} img{max-width:100%}
"""


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], num_from: int = 2,
                css_class: str = "") -> str:
    out = [f'<table class="{css_class}">' if css_class else "<table>", "<tr>"
           + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' if i >= num_from else f"<td>{html.escape(c)}</td>"
                        for i, c in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def html_report(title: str, summary: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]],
                metric: str, recommendation: dict[str, Any], png_path: str | Path | None,
                settings: dict[str, Any], notes: Sequence[str] = ()) -> str:
    """One self-contained HTML page: recommendation, learning curves, table, every run."""
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts.append('<div class="rec"><b>Recommendation.</b> '
                 + html.escape(recommendation.get("headline", "")) + "<ul>"
                 + "".join(f"<li>{html.escape(t)}</li>" for t in recommendation.get("findings", []))
                 + "</ul></div>")
    if png_path is not None and Path(png_path).is_file():
        b64 = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
        parts.append(f'<h2>Learning curves</h2><img alt="learning curves" src="data:image/png;base64,{b64}">')
    parts.append(f"<h2>Summary (mean ± std over seeds)</h2>")
    parts.append(_html_table(_header(metric), table_rows(summary), css_class="summary"))
    parts.append("<h2>Every run</h2>")
    head = ["strategy", "size", "seed", "n train", f"held-out {metric}", f"train-sample {metric}", "gap",
            "best epoch", "epochs run", "wall time", "status"]
    rows = []
    for r in runs:
        ok = "error" not in r
        rows.append([r["strategy"], str(r["size"]), str(r["seed"]), str(r.get("n_train", "-")),
                     fmt_num(r.get("held_out", {}).get(metric)) if ok else "-",
                     fmt_num(r.get("train_sample", {}).get(metric)) if ok else "-",
                     fmt_signed(r.get("gap")) if ok else "-",
                     str(r.get("best_epoch", "-")), str(r.get("epochs_run", "-")),
                     fmt_seconds(r.get("wall_s")), "ok" if ok else f"failed: {r['error']}"])
    parts.append(_html_table(head, rows, num_from=3, css_class="runs"))
    parts.append("<h2>Settings</h2><table>" + "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in settings.items())
        + "</table>")
    if notes:
        parts.append('<h2>Notes</h2><ul class="small">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                     + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
