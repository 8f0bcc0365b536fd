"""Run and study reports: cross-lingual aggregates, results files, charts, W&B tables.

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

Study report (``study_table`` + ``write_study_report``), written into the study directory: ``study.json``,
``study.csv``, ``study.md`` (per target: conditions × languages, cells "mean ± std (Δ)") and ``study_heatmap.png``
(condition × target, Δ of ``avg_xling`` of the primary metric vs the baseline).
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
SELECTION_NOTE = "checkpoint selected on English dev data only; no target-language data was used for selection"
FEW_SHOT_NOTE = "IGLUE few-shot protocol: checkpoint selected on the target language's few-shot dev split"
OVERLAP_MARK = "†"
OVERLAP_LEGEND = (
    f"{OVERLAP_MARK} the condition's intermediate training data overlaps the target's training data "
    "(e.g. SNLI-VE → XVNLI, MNLI → XNLI, SQuAD → XQuAD/MLQA): its gain is not pure intermediate-task transfer."
)

# Intermediate task -> evaluation tasks whose (English) training data it is or contains: the catalogue's
# ``overlaps`` field (contracts/catalogue.py).
KNOWN_OVERLAPS: dict[str, frozenset[str]] = {name: frozenset(s.overlaps) for name, s in TASKS.items() if s.overlaps}

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


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _md_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
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
    payload = {"protocol": dict(protocol) if protocol else None,
               "selection": selection_entry(selection, protocol, data, note), "rows": rows}  # fmt: skip
    _write_csv(paths["csv"], rows, ROW_FIELDS)
    atomic_write_text(paths["md"], run_markdown(rows, selection, protocol, note))
    atomic_write_text(paths["json"], json.dumps(payload, indent=1) + "\n")  # last: results.json = complete
    chance = chance_levels(label_counts or {})
    for task in _unique(r["task"] for r in rows):
        chart = plot_languages(rows, task, run_dir / f"results_{task}.png", chance=chance.get(task),
                               run=run_dir.name)  # fmt: skip
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
    return {task: 100.0 / n for task, n in label_counts.items()
            if n > 1 and task in TASKS and TASKS[task].family in ("classification", "image_pair")
            and TASKS[task].primary == "acc"}  # fmt: skip


def _write_csv(path: Path, rows: Sequence[Row], fields: Sequence[str]) -> None:
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
        lines = ["# Results", "", f"Selection key of this run: `{selection}`; which weights were tested and what they "
                 "were trained and selected on was not recorded.", ""]  # fmt: skip
    lines += [f"- `{a}`: {h}" for a, h in AGGREGATE_HELP.items()] + [""]
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["phase"], r["task"], r["split"], r["seed"])].append(r)
    for (phase, task, split, seed), group in sorted(groups.items(), key=lambda kv: (kv[0][2] != "test", kv[0])):
        header, body = task_table(group, task)
        lines += [f"## {task} — {split} (phase `{phase}`, seed {seed})", ""]
        lines += _md_table(header, ([str(lang), *(_fmt(v) for v in vals)] for lang, *vals in body)) + [""]
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
            rows.append({"phase": "", "task": parts[1], "lang": parts[2], "split": split, "metric": parts[3],
                         "value": float(value), "seed": None})  # fmt: skip
    return rows


def compact_table(rows: Sequence[Row]) -> str:
    """One terminal table for a whole evaluation: a row per language, a column per (task, primary metric)."""
    rows = aggregate(rows)
    columns = _unique((r["task"], r["split"]) for r in rows)
    metric = {(t, sp): primary_metric(t, {r["metric"] for r in rows if r["task"] == t}) for t, sp in columns}
    value = {(r["task"], r["split"], r["lang"]): r["value"] for r in rows
             if r["metric"] == metric[(r["task"], r["split"])]}  # fmt: skip
    langs = order_languages("", {r["lang"] for r in rows})
    header = ["lang", *(f"{t} {sp} {metric[(t, sp)]}" for t, sp in columns)]
    body = [[lang, *(_fmt(value.get((t, sp, lang))) for t, sp in columns)] for lang in langs]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    fmt_row = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in  # noqa: E731
                                      enumerate(zip(cells, widths)))  # fmt: skip
    return "\n".join([fmt_row(header), *(fmt_row(b) for b in body)])


def plot_languages(
    rows: Sequence[Row], task: str, path: Path, *, chance: float | None = None, run: str | None = None
) -> Path | None:
    """Save ``language_chart`` to ``path``; None (nothing written) when the task has no per-language values."""
    fig = language_chart(rows, task, chance=chance, run=run)
    if fig is None:
        return None
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
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
    fig, ax = _pyplot().subplots(figsize=(max(4.0, 0.45 * len(langs) + 1.5), 3.4))
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
    for task in _unique(r["task"] for r in rows):
        columns, data = task_table(rows, task)
        wandb_logger.log_table(key=f"results/{task}", columns=columns, data=data)
    aggregates = {f"{r['split']}/{r['task']}/{r['lang']}/{r['metric']}": r["value"] for r in rows
                  if r["lang"] in AGGREGATE_LANGS}  # fmt: skip
    if aggregates:
        wandb_logger.log_metrics(aggregates)
    for task, path in charts.items():
        wandb_logger.log_image(key=f"results/{task}_chart", images=[str(path)])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------------------------- study report


def find_overlaps(
    condition_tasks: Mapping[str, Iterable[str]], target_tasks: Mapping[str, Iterable[str]]
) -> dict[str, list[str]]:
    """Condition -> targets whose training data the condition's intermediate data overlaps.

    A condition overlaps a target when one of its intermediate tasks is one of the target's tasks (its evaluated
    task and its English training tasks), or is listed in ``KNOWN_OVERLAPS`` for one of them.

    Args:
        condition_tasks: condition name -> its intermediate tasks (empty for the baseline).
        target_tasks: target name -> its evaluated task and its training tasks.
    """
    out: dict[str, list[str]] = {}
    for condition, tasks in condition_tasks.items():
        tasks = set(tasks)
        hits = []
        for target, t_tasks in target_tasks.items():
            t_tasks = set(t_tasks)
            if tasks & t_tasks or any(KNOWN_OVERLAPS.get(t, frozenset()) & t_tasks for t in tasks):
                hits.append(target)
        if hits:
            out[condition] = hits
    return out


def study_table(
    results: Iterable[Mapping[str, Any]],
    baseline: str = "none",
    overlaps: Mapping[str, Iterable[str]] | None = None,
    split: str = "test",
) -> list[Row]:
    """Per (target, task, language incl. aggregates, metric, condition): mean, std and n over seeds, Δ vs baseline.

    Args:
        results: one entry per finished target run: ``{"condition", "target", "seed", "rows"}``.
        baseline: the condition the deltas are taken against (its own delta is 0).
        overlaps: condition -> targets its intermediate data overlaps (see ``find_overlaps``).
        split: which split of the rows to tabulate.

    Returns:
        Rows ``{target, task, lang, metric, primary, condition, mean, std, n, seeds, values, delta, overlap}``;
        ``std`` is the sample std (None for one seed), ``delta`` is None when the baseline has no value.
    """
    overlaps = {c: set(t) for c, t in (overlaps or {}).items()}
    cells: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for res in results:
        for r in aggregate(res["rows"]):
            if r["split"] == split:
                cells[(res["target"], r["task"], r["lang"], r["metric"])][res["condition"]][res["seed"]] = r["value"]
    table = []
    for (target, task, lang, metric), by_condition in cells.items():
        base = by_condition.get(baseline)
        base_mean = statistics.fmean(base.values()) if base else None
        for condition, by_seed in by_condition.items():
            seeds = sorted(by_seed)
            mean, std = mean_std([by_seed[s] for s in seeds])
            table.append(dict(
                target=target, task=task, lang=lang, metric=metric, condition=condition,
                primary=metric == primary_metric(task, [metric]), mean=mean, std=std, n=len(seeds), seeds=seeds,
                values=[by_seed[s] for s in seeds], delta=None if base_mean is None else mean - base_mean,
                overlap=target in overlaps.get(condition, ()),
            ))  # fmt: skip
    return _sort_table(table, baseline)


def _sort_table(table: list[Row], baseline: str) -> list[Row]:
    targets = _unique(r["target"] for r in table)
    conditions = _unique([baseline] + [r["condition"] for r in table])
    langs = {t: order_languages(t, {r["lang"] for r in table if r["task"] == t}) for t in {r["task"] for r in table}}
    metrics = {t: order_metrics(t, {r["metric"] for r in table if r["task"] == t}) for t in langs}

    def key(r: Row) -> tuple:
        t = r["task"]
        return (targets.index(r["target"]), t, metrics[t].index(r["metric"]), conditions.index(r["condition"]),
                langs[t].index(r["lang"]))  # fmt: skip

    return sorted(table, key=key)


STUDY_CSV_FIELDS = ("target", "task", "lang", "metric", "primary", "condition", "mean", "std", "n", "delta", "overlap",
                    "seeds", "values", "control", "ci_low", "ci_high", "p", "p_adj", "correction",
                    "significant")  # fmt: skip
SIGNIFICANCE_KEYS = ("control", "ci_low", "ci_high", "p", "p_adj", "correction", "significant")


def attach_significance(table: Sequence[Row], tests: Sequence[Mapping[str, Any]]) -> list[Row]:
    """The study table with each tested cell's paired-bootstrap interval, p, adjusted p, correction and
    whether it survives (``significance.significance_rows``); untested cells get empty values."""
    by_cell = {(t["target"], t["task"], t["metric"], t["lang"], t["condition"]): t for t in tests}
    out = []
    for r in table:
        t = by_cell.get((r["target"], r["task"], r["metric"], r["lang"], r["condition"]))
        extra = dict.fromkeys(SIGNIFICANCE_KEYS)
        if t is not None:
            extra.update(control=t["control"], ci_low=t["low"], ci_high=t["high"], p=t["p"], p_adj=t["p_adj"],
                         correction=t["correction"], significant=t["significant"])  # fmt: skip
        out.append({**r, **extra})
    return out


def write_study_report(
    out_dir: str | Path,
    table: Sequence[Row],
    *,
    name: str = "study",
    baseline: str = "none",
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write study.json, study.csv, study.md and study_heatmap.png into ``out_dir``.

    Args:
        out_dir: the study directory; created if missing.
        table: rows from ``study_table``.
        name: the study name (titles).
        baseline: the baseline condition (deltas are against it).
        meta: extra entries for study.json (conditions, targets, seeds, missing runs, selection keys, ...);
            a ``missing`` list and a ``selection`` list are also shown in study.md.

    Returns:
        The written files: keys ``json``, ``csv``, ``md``, ``png``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    paths = {k: out_dir / f"study.{k}" for k in ("json", "csv", "md")} | {"png": out_dir / "study_heatmap.png"}
    payload = {"name": name, "baseline": baseline, "split": "test", "selection_note": SELECTION_NOTE,
               "overlap_legend": OVERLAP_LEGEND, **meta, "rows": list(table)}  # fmt: skip
    paths["json"].write_text(json.dumps(payload, indent=1) + "\n")
    joined = [{"seeds": ";".join(map(str, r["seeds"])), "values": ";".join(map(str, r["values"]))} for r in table]
    csv_rows = [dict.fromkeys(SIGNIFICANCE_KEYS) | r | j for r, j in zip(table, joined)]
    _write_csv(paths["csv"], csv_rows, STUDY_CSV_FIELDS)
    paths["md"].write_text(study_markdown(table, name=name, baseline=baseline, meta=meta))
    plot_study_heatmap(table, paths["png"], baseline=baseline, title=f"{name}: Δ avg_xling vs {baseline}")
    return paths


def _cell(r: Row | None, baseline: str) -> str:
    if r is None:
        return "–"
    text = _fmt(r["mean"]) + (f" ± {_fmt(r['std'])}" if r["std"] is not None else "")
    if r["condition"] != baseline and r["delta"] is not None:
        text += f" ({r['delta']:+.2f})"
    return text


def summary_matrix(
    table: Sequence[Row], baseline: str, lang: str = AVG_XLING
) -> tuple[list[str], list[str], dict[tuple[str, str], Row]]:
    """Conditions, column labels and {(condition, column): row} for ``lang`` of each target's primary metric."""
    primary = [r for r in table if r["primary"] and r["lang"] == lang]
    pairs = _unique((r["target"], r["task"]) for r in primary)
    single = {t for t, _ in pairs if sum(1 for t2, _ in pairs if t2 == t) == 1}
    label = {(t, k): t if t in single else f"{t}/{k}" for t, k in pairs}
    conditions = _unique([baseline] + [r["condition"] for r in table])
    cells = {(r["condition"], label[(r["target"], r["task"])]): r for r in primary}
    return conditions, [label[p] for p in pairs], cells


def selection_headline(by_target: Mapping[str, Mapping[str, int]]) -> str:
    """What selected the tested checkpoints, per target, as its runs recorded it (``results.json`` ``selection``):
    the monitor and in how many runs, or that nothing was selected. Claims English dev only when every finished
    target run selected on an English dev key."""
    if not by_target:
        return "No target run has finished: nothing was selected yet."
    parts, english_only = [], True
    for target, monitors in by_target.items():
        total = sum(monitors.values())
        for monitor, n in monitors.items():
            if monitor:
                english_only &= "/en/" in monitor
                parts.append(f"{target}: `{monitor}` in {n} of {total} run(s)")
            else:
                english_only = False
                parts.append(f"{target}: no checkpoint selected in {n} of {total} run(s) (the weights at the "
                             "end of training, or an evaluation-only run's starting weights, were tested)")
    claim = f" Every target run: {SELECTION_NOTE}." if english_only else ""
    return "Checkpoint selection as the target runs recorded it: " + "; ".join(parts) + "." + claim


def study_markdown(table: Sequence[Row], *, name: str, baseline: str, meta: Mapping[str, Any]) -> str:
    """``study.md``: a summary (Δ avg_xling per condition × target), then per target and metric a table."""
    breaks = meta.get("protocol_breaks") or []
    by_target = meta.get("selection_by_target")
    note = selection_headline(by_target) if by_target is not None else f"Target runs: {SELECTION_NOTE}."
    if breaks:  # said first, as each run's own report does: the study's claim holds only for the other runs
        lines = [f"# Study `{name}`", "", f"**ZERO-SHOT PROTOCOL BROKEN in {len(breaks)} target run(s)** "
                 "(their cells are not zero-shot results):", *[f"- {b}" for b in breaks], "",
                 f"Zero-shot cross-lingual transfer, test split. Other target runs: {note}"]  # fmt: skip
    else:
        lines = [f"# Study `{name}`", "", f"Zero-shot cross-lingual transfer, test split. {note}"]
    if meta.get("selection") and by_target is None:
        lines.append("Selection keys: " + ", ".join(f"`{k}`" for k in meta["selection"]) + ".")
    if meta.get("start"):
        lines.append(start_note(meta["start"]))
    lines += ["", f"Cells: mean ± std over seeds (Δ = difference of the means from `{baseline}`). "
              f"Std is the sample std; n = number of seeds.", ""]  # fmt: skip
    lines += [f"- `{a}`: {h}" for a, h in AGGREGATE_HELP.items()] + [f"- {OVERLAP_LEGEND}", ""]
    if meta.get("missing"):
        missing = ", ".join(f"`{m}`" for m in meta["missing"])
        lines += [f"Runs without results (not finished, or finished without test rows): {missing}", ""]
    lines += _summary_section(table, baseline, AVG_XLING) + _summary_section(table, baseline, AVG_ALL)
    lines += _significance_sections(meta.get("significance") or [], baseline)
    lines += _budget_section(meta.get("budgets") or {}) + _power_section(meta.get("power") or [])
    for (target, task, metric), rows in _group(table, ("target", "task", "metric")).items():
        lines += _metric_section(target, task, metric, rows, baseline)
    return "\n".join(lines) + "\n"


CORRECTION_TEXT = {
    "holm": "Holm–Bonferroni (family-wise error rate)",
    "bh": "Benjamini–Hochberg (false discovery rate)",
}


def _significance_sections(tests: Sequence[Mapping[str, Any]], baseline: str) -> list[str]:
    """Paired-bootstrap deltas of the primary metric vs the baseline: the grid, then the controls block."""
    if not tests:
        return ["No paired test yet: it needs `outcomes.jsonl` in the baseline's and a condition's target runs.", ""]
    correction = CORRECTION_TEXT.get(tests[0]["correction"], tests[0]["correction"])
    lines = [f"## Significance: Δ of the primary metric vs `{baseline}`, paired bootstrap", "",
             f"Paired over test items (same keys) and seeds (seed k of both conditions), {tests[0]['resamples']} "
             f"resamples; 95 % percentile interval; two-sided p; p_adj: {correction} over all "
             f"{len(tests)} deltas of the grid (controls included). ✓ = p_adj < 0.05.", ""]  # fmt: skip
    single = sum(1 for t in tests if (t.get("n_seeds") or 0) < 2)
    if single:
        lines += [f"**{single} of these {len(tests)} deltas rest on one seed per condition: their intervals and "
                  "p-values measure test-item noise only, not the seed-to-seed variation of training (often the "
                  "larger part).** A ✓ there says the two trained models differ on these items, not that the "
                  "condition does; run at least two seeds before claiming an effect (the power estimate below "
                  "sizes them).", ""]  # fmt: skip
    lines += _test_table([t for t in tests if not t["control"]])
    controls = [t for t in tests if t["control"]]
    if controls:
        lines += ["## Controls", "",
                  "A **positive** control must show an interval above 0 (the instrument can see an effect); a "
                  "**negative** control (labels shuffled: same images and texts, no task signal) separates "
                  "what seeing the data does from what learning the task does.", ""]  # fmt: skip
        lines += _test_table(controls)
    return lines


def _test_table(tests: Sequence[Mapping[str, Any]]) -> list[str]:
    body = [[t["condition"] + (f" ({t['control']})" if t["control"] else ""), t["target"], t["metric"], t["lang"],
             f"{t['delta']:+.2f}", f"[{t['low']:+.2f}, {t['high']:+.2f}]", f"{t['p']:.4f}", f"{t['p_adj']:.4f}",
             "✓" if t["significant"] else "", str(t["n_seeds"]), str(t["n_items"])] for t in tests]  # fmt: skip
    header = ["condition", "target", "metric", "langs", "Δ", "95 % CI", "p", "p_adj", "survives", "seeds", "items"]
    return [*_md_table(header, body), ""] if body else []


def _budget_section(budgets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not budgets:
        return []
    body = []
    for condition, b in budgets.items():
        device = b.get("device") or "device"
        body.append([condition, str(b["steps"]), str(b["examples"]), _seconds(b["intermediate_device_seconds"]),
                     _seconds(b["target_device_seconds"]), device])  # fmt: skip
    return ["## Budgets", "", "Per intermediate run: optimizer steps and training examples seen; mean device time "
            "(wall × devices) per intermediate and per target run.", "",
            *_md_table(["condition", "steps", "examples", "intermediate time", "target time", "device"], body),
            ""]  # fmt: skip


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} s"


def _power_section(power: Sequence[Mapping[str, Any]]) -> list[str]:
    if not power:
        return []
    from lightning_modules.significance import power_lines

    return ["## Seeds needed (power estimate from the baseline)", "", *(f"- {line}" for line in power_lines(power)),
            ""]  # fmt: skip


def start_note(start: Mapping[str, Any]) -> str:
    """Which start every condition had: the model configs and the shared start phase (or none)."""
    model = ", ".join(f"`{c}`" for c in start.get("base", [])) or "the pretrained checkpoints"
    if start.get("start"):
        phase = ", ".join(f"`{c}`" for c in start["start"])
        return (f"Start of every condition (the same per seed): {model}, then the start phase {phase} "
                "(`start/seed<k>`); the baseline's targets start from it too.")  # fmt: skip
    return (f"Start of every condition: {model}, no shared start phase (with unaligned towers the first phase "
            "that shows images trains the image-text alignment).")  # fmt: skip


def _group(table: Sequence[Row], fields: Sequence[str]) -> dict[tuple, list[Row]]:
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in table:
        groups[tuple(r[f] for f in fields)].append(r)
    return groups


def _summary_section(table: Sequence[Row], baseline: str, lang: str) -> list[str]:
    conditions, columns, cells = summary_matrix(table, baseline, lang)
    if not columns:
        return [f"No finished target runs with `{lang}` test results yet.", ""]
    style = "IGLUE style" if lang == AVG_XLING else "XTREME style"
    lines = [f"## Summary ({style}): Δ {lang} of the primary metric vs `{baseline}`", ""]
    body = []
    for c in conditions:
        deltas = [cells[(c, col)]["delta"] for col in columns if (c, col) in cells]
        deltas = [d for d in deltas if d is not None]
        row = [_summary_cell(cells.get((c, col)), baseline) for col in columns]
        body.append([c, *row, f"{statistics.fmean(deltas):+.2f}" if deltas and c != baseline else "–"])
    primary = {label: cells[next(k for k in cells if k[1] == label)]["metric"] for label in columns}
    return lines + _md_table(["condition", *(f"{c} ({primary[c]})" for c in columns), "mean Δ"], body) + [""]


def _summary_cell(r: Row | None, baseline: str) -> str:
    if r is None:
        return "–"
    mark = OVERLAP_MARK if r["overlap"] else ""
    if r["condition"] == baseline or r["delta"] is None:
        return _fmt(r["mean"]) + mark
    return f"{r['delta']:+.2f}{mark}"


def _metric_section(target: str, task: str, metric: str, rows: Sequence[Row], baseline: str) -> list[str]:
    langs = order_languages(task, {r["lang"] for r in rows})
    conditions = _unique([baseline] + [r["condition"] for r in rows])
    by_cell = {(r["condition"], r["lang"]): r for r in rows}
    kind = "primary" if rows[0]["primary"] else "secondary"
    title = f"## {target} — {metric} ({kind})" if target == task else f"## {target}: {task} — {metric} ({kind})"
    body = []
    for c in conditions:
        mine = [r for r in rows if r["condition"] == c]
        if not mine:
            continue
        mark = OVERLAP_MARK if mine[0]["overlap"] else ""
        n = "/".join(map(str, sorted({r["n"] for r in mine})))
        body.append([f"{c}{mark}", n, *(_cell(by_cell.get((c, lang)), baseline) for lang in langs)])
    return [title, "", *_md_table(["condition", "n", *langs], body), ""]


def plot_study_heatmap(table: Sequence[Row], path: Path, *, baseline: str = "none", title: str = "") -> Path:
    """Heatmap condition × target of Δ ``avg_xling`` (primary metric) vs the baseline, centred at 0, annotated."""
    conditions, columns, cells = summary_matrix(table, baseline)
    if len(conditions) > 1:
        conditions = [c for c in conditions if c != baseline]
    grid = [[_delta_or_nan(cells.get((c, col))) for col in columns] for c in conditions]
    finite = [abs(v) for row in grid for v in row if not math.isnan(v)]
    limit = max(finite, default=0.0) or 1.0
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(columns) + 2.5), max(2.5, 0.4 * len(conditions) + 1.5)))
    cmap = plt.get_cmap("RdBu").with_extremes(bad="#dddddd")
    image = ax.imshow(grid if columns else [[math.nan]], cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    fig.colorbar(image, ax=ax, label=f"Δ avg_xling vs {baseline}")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(conditions)), conditions, fontsize=8)
    for i, c in enumerate(conditions):
        for j, col in enumerate(columns):
            r = cells.get((c, col))
            text = "–" if math.isnan(grid[i][j]) else f"{grid[i][j]:+.1f}" + (OVERLAP_MARK if r["overlap"] else "")
            dark = not math.isnan(grid[i][j]) and abs(grid[i][j]) > 0.6 * limit
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_title(title or f"Δ avg_xling vs {baseline}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _delta_or_nan(r: Row | None) -> float:
    return math.nan if r is None or r["delta"] is None else float(r["delta"])
