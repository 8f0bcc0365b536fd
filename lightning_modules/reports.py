"""Run reports: cross-lingual aggregates, results files, charts, W&B tables.

Pure functions over **result rows** (no Lightning import). A result row is one number:

    {"phase": "target", "task": "xvnli", "lang": "ar", "split": "test", "metric": "acc", "value": 61.2, "seed": 0}

Values are kept as the metric returned them (percentages or fractions); nothing is rescaled.

Aggregates (``aggregate``) are extra rows whose ``lang`` is one of:

- ``avg_xling``: mean over the non-English languages — the IGLUE convention (IGLUE averages exclude English).
- ``avg_all``: macro mean over every language including English — the XTREME convention.
- ``gap``: English minus ``avg_xling`` — the cross-lingual transfer gap (positive = English is better).

Run report (``write_run_report``), written into the run directory:

- ``results.json``: ``{"protocol": {...}, "selection": {"monitor": KEY or null, "data": ...}, "rows": [...]}``;
  ``protocol`` (``lightning_modules/protocol.py``) says which weights were tested, what they were trained and
  selected on, and whether that breaks the zero-shot protocol; rows include the aggregates.
- ``results.csv``: the same rows, columns ``ROW_FIELDS``.
- ``results.md``: first line the protocol headline (a break is named there), the protocol lines, then per task a
  table language × metric (English, other languages, then the aggregates).
- ``results_<task>.png``: per-language bars of the task's primary metric (%), chance level, run and seed.

The study report built from these rows is ``studies/table.py``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from contracts.catalogue import TASKS
from contracts.fields import family_fields
from contracts.files import atomic_open, atomic_write_text

Row = dict[str, Any]

ROW_FIELDS = ("phase", "task", "lang", "split", "metric", "value", "seed")
ENGLISH = "en"
AVG_XLING = "avg_xling"
AVG_ALL = "avg_all"
GAP = "gap"
AGGREGATE_LANGS = (AVG_XLING, AVG_ALL, GAP)
AGGREGATE_HELP = {
    AVG_XLING: "mean over non-English languages (IGLUE)",
    AVG_ALL: "macro mean over all languages incl. English (XTREME)",
    GAP: "English minus avg_xling (cross-lingual gap)",
}
FEW_SHOT_NOTE = "IGLUE few-shot protocol: checkpoint selected on the target language's few-shot dev split"
_SELECTION_KEY = re.compile(r"^(?:val|validate)/(?P<task>[^/]+)/(?P<lang>[^/]+)/(?P<metric>[^/]+)$")


# ----------------------------------------------------------------------------------------------- aggregates


def aggregate(rows: Iterable[Row]) -> list[Row]:
    """The rows plus ``avg_xling``, ``avg_all`` and ``gap`` rows per (phase, task, split, metric, seed).

    Aggregate rows already in the input are dropped and recomputed, so the function is idempotent.
    ``avg_xling`` and ``avg_all`` are added when at least one non-English language is present (for a test set
    without English, such as MaRVL, both are the mean over its languages); ``gap`` when English is present too.

    Raises:
        ValueError: two rows give a value for the same (phase, task, split, metric, seed, lang).
    """
    plain = [dict(r) for r in rows if r["lang"] not in AGGREGATE_LANGS]
    groups: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in plain:
        key = (r["phase"], r["task"], r["split"], r["metric"], r["seed"])
        if r["lang"] in groups[key]:
            where = ", ".join(f"{f}={r[f]!r}" for f in ("phase", "task", "split", "metric", "seed", "lang"))
            raise ValueError(f"Two result rows for the same cell: {where}")
        groups[key][r["lang"]] = float(r["value"])
    out = list(plain)
    for (phase, task, split, metric, seed), by_lang in groups.items():
        for lang, value in language_aggregates(by_lang).items():
            out.append(dict(phase=phase, task=task, lang=lang, split=split, metric=metric, value=value, seed=seed))
    return out


def language_aggregates(by_lang: Mapping[str, float]) -> dict[str, float]:
    """``avg_xling``, ``avg_all`` and ``gap`` of one metric given its value per language (see ``aggregate``)."""
    xling = [v for lang, v in by_lang.items() if lang != ENGLISH]
    if not xling:
        return {}
    out = {AVG_XLING: statistics.fmean(xling), AVG_ALL: statistics.fmean(by_lang.values())}
    if ENGLISH in by_lang:
        out[GAP] = by_lang[ENGLISH] - out[AVG_XLING]
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for a single value."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


# ----------------------------------------------------------------------------------------------- ordering


def primary_metric(task: str, metrics: Iterable[str] = ()) -> str:
    """The catalogue's primary metric of ``task``; for a task not in the catalogue, the first of ``metrics``."""
    if task in TASKS:
        return TASKS[task].primary
    ordered = sorted(metrics)
    if not ordered:
        raise ValueError(f"No metrics for task {task!r}, which is not in the catalogue")
    return ordered[0]


def order_languages(task: str, langs: Iterable[str]) -> list[str]:
    """English first, then the catalogue's order for ``task`` (others alphabetically), then the aggregates."""
    langs = set(langs)
    catalogue = TASKS[task].languages if task in TASKS else ()
    rank = {lang: i for i, lang in enumerate(catalogue)}
    plain = sorted(langs - set(AGGREGATE_LANGS), key=lambda x: (x != ENGLISH, rank.get(x, len(rank)), x))
    return plain + [a for a in AGGREGATE_LANGS if a in langs]


def order_metrics(task: str, metrics: Iterable[str]) -> list[str]:
    """The catalogue's metric order for ``task`` (primary first), other metrics alphabetically after it."""
    metrics = set(metrics)
    primary = primary_metric(task, metrics)
    catalogue = TASKS[task].metrics if task in TASKS else ()
    rank = {m: i for i, m in enumerate(catalogue)}
    return sorted(metrics, key=lambda m: (m != primary, rank.get(m, len(rank)), m))


def unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def fmt_value(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def md_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


# ----------------------------------------------------------------------------------------------- run report


def check_selection(selection: str) -> None:
    """Fail if the checkpoint-selection key names a non-English language (``val/<task>/<lang>/<metric>``).

    Raises:
        ValueError: the key selects on a non-English dev set, which would leak target-language data.
    """
    match = _SELECTION_KEY.match(selection)
    if match and match["lang"] != ENGLISH:
        raise ValueError(
            f"Checkpoint selection key {selection!r} uses language {match['lang']!r}: zero-shot transfer must "
            f"select on English dev data only. Monitor e.g. 'val/{match['task']}/en/{match['metric']}'."
        )


def write_run_report(
    run_dir: str | Path,
    rows: Iterable[Row],
    *,
    selection: str,
    protocol: Mapping[str, Any] | None = None,
    label_counts: Mapping[str, int] | None = None,
    wandb_logger: Any = None,
) -> dict[str, Path]:
    """Write results.json/.csv/.md and one per-language chart per task into ``run_dir``.

    Args:
        run_dir: the run directory (``trainer.default_root_dir``); created if missing.
        rows: result rows (see the module docstring); aggregates are (re)computed here.
        selection: the key that selects checkpoints in this run, e.g. ``val/xvnli/en/acc``.
        protocol: what actually happened (``lightning_modules.protocol.run_protocol``); without it the report says
            that the tested weights' training and selection data were not recorded.
        label_counts: task -> number of labels, for the chance level drawn on classification charts.
        wandb_logger: a ``lightning.pytorch.loggers.WandbLogger``; if given, the tables are logged with
            ``log_table``, the aggregates with ``log_metrics`` and the charts with ``log_image``.

    Returns:
        The written files: keys ``json``, ``csv``, ``md`` and ``png:<task>`` per task.
    """
    rows = aggregate(rows)
    few_shot = any(r.get("phase") == "few_shot" for r in rows)  # the one protocol that selects on target data
    if not few_shot:
        check_selection(selection)
    data, note = ("few-shot dev split", FEW_SHOT_NOTE) if few_shot else (None, None)  # without a protocol record
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": run_dir / "results.json", "csv": run_dir / "results.csv", "md": run_dir / "results.md"}
    payload = {
        "protocol": dict(protocol) if protocol else None,
        "selection": selection_entry(selection, protocol, data, note),
        "rows": rows,
    }
    write_csv(paths["csv"], rows, ROW_FIELDS)
    atomic_write_text(paths["md"], run_markdown(rows, selection, protocol, note))
    atomic_write_text(paths["json"], json.dumps(payload, indent=1) + "\n")  # last: results.json = complete
    chance = chance_levels(label_counts or {})
    for task in unique(r["task"] for r in rows):
        chart = plot_languages(rows, task, run_dir / f"results_{task}.png", chance=chance.get(task), run=run_dir.name)
        if chart is not None:
            paths[f"png:{task}"] = chart
    if wandb_logger is not None:
        log_run_report(wandb_logger, rows, {k[4:]: p for k, p in paths.items() if k.startswith("png:")})
    return paths


def selection_entry(
    selection: str, protocol: Mapping[str, Any] | None, data: str | None = None, note: str | None = None
) -> dict[str, Any]:
    """results.json's ``selection``: the key that actually selected the tested weights (null: none did); without a
    protocol record, the run's key and, if known, ``data`` (what it selects on) and ``note``."""
    if protocol is None:
        return {"monitor": selection, "data": data or "not recorded", **({"note": note} if note else {})}
    selected = protocol.get("selected_on")
    if not selected:
        return {"monitor": None, "data": "no checkpoint selection: " + str(protocol.get("weights"))}
    langs = ", ".join(selected["langs"])
    return {"monitor": selected["monitor"], "data": f"{selected['task']} {selected['split']} [{langs}]"}


def chance_levels(label_counts: Mapping[str, int]) -> dict[str, float]:
    """Task -> accuracy (%) of a uniform guess, for single-label tasks whose primary metric is ``acc``."""
    return {
        task: 100.0 / n
        for task, n in label_counts.items()
        if n > 1 and task in TASKS and family_fields(TASKS[task].family).single_label and TASKS[task].primary == "acc"
    }


def write_csv(path: Path, rows: Sequence[Row], fields: Sequence[str]) -> None:
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def task_table(rows: Sequence[Row], task: str) -> tuple[list[str], list[list[Any]]]:
    """One task's rows as a wide table: columns ``["lang", *metrics]``, one row per language (ordered)."""
    mine = [r for r in rows if r["task"] == task]
    metrics = order_metrics(task, {r["metric"] for r in mine})
    value = {(r["lang"], r["metric"]): r["value"] for r in mine}
    langs = order_languages(task, {r["lang"] for r in mine})
    return ["lang", *metrics], [[lang, *(value.get((lang, m)) for m in metrics)] for lang in langs]


def run_markdown(
    rows: Sequence[Row], selection: str, protocol: Mapping[str, Any] | None = None, note: str | None = None
) -> str:
    """``results.md``: the protocol headline first, the protocol lines, then per (phase, task, split, seed) a table.

    Without a protocol record: the selection key and ``note`` (what selected it), or that it was not recorded.
    """
    from lightning_modules.protocol import protocol_lines

    if protocol is not None:
        lines = [f"# Results — {protocol['headline']}", "", *protocol_lines(protocol), ""]
    elif note:
        lines = ["# Results", "", f"Checkpoint selection: `{selection}` — {note}.", ""]
    else:
        lines = [
            "# Results",
            "",
            f"Selection key of this run: `{selection}`; which weights were tested and what they "
            "were trained and selected on was not recorded.",
            "",
        ]
    lines += [f"- `{a}`: {h}" for a, h in AGGREGATE_HELP.items()] + [""]
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["phase"], r["task"], r["split"], r["seed"])].append(r)
    for (phase, task, split, seed), group in sorted(groups.items(), key=lambda kv: (kv[0][2] != "test", kv[0])):
        header, body = task_table(group, task)
        lines += [f"## {task} — {split} (phase `{phase}`, seed {seed})", ""]
        lines += md_table(header, ([str(lang), *(fmt_value(v) for v in vals)] for lang, *vals in body)) + [""]
    return "\n".join(lines)


def label_name(names: Sequence[str], value: Any) -> Any:
    """The label name of an index (a list of indices: a list of names); other values (spans, ids) unchanged."""
    if isinstance(value, list):
        return [label_name(names, v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    return None


def rows_from_metrics(metrics: Mapping[str, Any], split: str) -> list[Row]:
    """Result rows from logged ``<split>/<task>/<lang>/<metric>`` values (``trainer.callback_metrics``), no counts."""
    rows = []
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == split and parts[3] != "count" and parts[2] not in AGGREGATE_LANGS:
            rows.append(
                {
                    "phase": "",
                    "task": parts[1],
                    "lang": parts[2],
                    "split": split,
                    "metric": parts[3],
                    "value": float(value),
                    "seed": None,
                }
            )
    return rows


def compact_table(rows: Sequence[Row]) -> str:
    """One terminal table for a whole evaluation: a row per language, a column per (task, primary metric)."""
    rows = aggregate(rows)
    columns = unique((r["task"], r["split"]) for r in rows)
    metric = {(t, sp): primary_metric(t, {r["metric"] for r in rows if r["task"] == t}) for t, sp in columns}
    value = {
        (r["task"], r["split"], r["lang"]): r["value"] for r in rows if r["metric"] == metric[(r["task"], r["split"])]
    }
    langs = order_languages("", {r["lang"] for r in rows})
    header = ["lang", *(f"{t} {sp} {metric[(t, sp)]}" for t, sp in columns)]
    body = [[lang, *(fmt_value(value.get((t, sp, lang))) for t, sp in columns)] for lang in langs]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]

    def fmt_row(cells: Sequence[object]) -> str:
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt_row(header), *(fmt_row(b) for b in body)])


def plot_languages(
    rows: Sequence[Row], task: str, path: Path, *, chance: float | None = None, run: str | None = None
) -> Path | None:
    """Save ``language_chart`` to ``path``; None (nothing written) when the task has no per-language values."""
    fig = language_chart(rows, task, chance=chance, run=run)
    if fig is None:
        return None
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def language_chart(rows: Sequence[Row], task: str, *, chance: float | None = None, run: str | None = None) -> Any:
    """Bar chart of the primary metric (else the first present) per language, test split if present.

    The y axis is in % (every metric is a percentage), ``chance`` (%) is drawn as a dotted line, and the subtitle
    names the run and the seed(s). Returns the matplotlib figure, or None without per-language values.
    """
    mine = [r for r in rows if r["task"] == task]
    split = "test" if any(r["split"] == "test" for r in mine) else "val"
    present = {r["metric"] for r in mine if r["split"] == split}
    if not present:
        return None
    metric = order_metrics(task, present)[0]  # the primary metric if present
    values: dict[str, list[float]] = defaultdict(list)
    for r in mine:
        if r["split"] == split and r["metric"] == metric:
            values[r["lang"]].append(float(r["value"]))
    langs = [lang for lang in order_languages(task, values) if lang not in AGGREGATE_LANGS]
    if not langs:
        return None
    means = {lang: statistics.fmean(v) for lang, v in values.items()}
    seeds = sorted({str(r["seed"]) for r in mine})
    fig, ax = pyplot().subplots(figsize=(max(4.0, 0.45 * len(langs) + 1.5), 3.4))
    colors = ["#d95f02" if lang == ENGLISH else "#1b9e77" for lang in langs]
    bars = ax.bar(langs, [means[lang] for lang in langs], color=colors)
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    title = f"{task} — {metric} ({split})"
    if AVG_XLING in means:
        ax.axhline(means[AVG_XLING], color="#444444", linestyle="--", linewidth=1, label="avg_xling (non-English)")
        title += f"  avg_xling {means[AVG_XLING]:.2f}"
    if chance is not None:
        ax.axhline(chance, color="#b2182b", linestyle=":", linewidth=1.2, label=f"chance {chance:.1f}%")
    if AVG_XLING in means or chance is not None:
        ax.legend(fontsize=7, loc="lower right")
    if GAP in means:
        title += f"  gap {means[GAP]:.2f}"
    ax.set_title(f"{title}\nrun {run or '?'}, seed {', '.join(seeds)}", fontsize=9)
    ax.set_ylabel(f"{metric} (%)")
    ax.yaxis.set_major_formatter(_percent_formatter())
    ax.tick_params(axis="x", labelsize=8, rotation=90 if len(langs) > 12 else 0)
    fig.tight_layout()
    return fig


def _percent_formatter() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=100, decimals=0)


def log_run_report(wandb_logger: Any, rows: Sequence[Row], charts: Mapping[str, Path]) -> None:
    """Log the rows (long table), one wide table per task, the aggregates as metrics and the charts to W&B."""
    wandb_logger.log_table(
        key="results/rows", columns=list(ROW_FIELDS), data=[[r[f] for f in ROW_FIELDS] for r in rows]
    )
    for task in unique(r["task"] for r in rows):
        columns, data = task_table(rows, task)
        wandb_logger.log_table(key=f"results/{task}", columns=columns, data=data)
    aggregates = {
        f"{r['split']}/{r['task']}/{r['lang']}/{r['metric']}": r["value"] for r in rows if r["lang"] in AGGREGATE_LANGS
    }
    if aggregates:
        wandb_logger.log_metrics(aggregates)
    for task, path in charts.items():
        wandb_logger.log_image(key=f"results/{task}_chart", images=[str(path)])


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
