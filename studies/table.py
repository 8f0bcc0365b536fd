"""The study table and the files written from it: per target, conditions × languages, with deltas and tests.

Study report (``study_table`` + ``write_study_report``), written into the study directory: ``study.json``,
``study.csv``, ``study.md`` (per target: conditions × languages, cells "mean ± std (Δ)") and ``study_heatmap.png``
(condition × target, Δ of ``avg_xling`` of the primary metric vs the baseline). The rows and their cross-lingual
aggregates are a run's result rows (``lightning_modules/reports.py``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from contracts.catalogue import TASKS
from lightning_modules.reports import (
    AGGREGATE_HELP,
    AVG_ALL,
    AVG_XLING,
    Row,
    aggregate,
    fmt_value,
    md_table,
    mean_std,
    order_languages,
    order_metrics,
    primary_metric,
    pyplot,
    unique,
    write_csv,
)
from studies.power import power_lines

SELECTION_NOTE = "checkpoint selected on English dev data only; no target-language data was used for selection"
OVERLAP_MARK = "†"
OVERLAP_LEGEND = (
    f"{OVERLAP_MARK} the condition's intermediate training data overlaps the target's training data "
    "(e.g. SNLI-VE → XVNLI, MNLI → XNLI, SQuAD → XQuAD/MLQA): its gain is not pure intermediate-task transfer."
)

# Intermediate task -> evaluation tasks whose (English) training data it is or contains: the catalogue's
# ``overlaps`` field (contracts/catalogue.py).
KNOWN_OVERLAPS: dict[str, frozenset[str]] = {name: frozenset(s.overlaps) for name, s in TASKS.items() if s.overlaps}


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
            table.append(
                dict(
                    target=target,
                    task=task,
                    lang=lang,
                    metric=metric,
                    condition=condition,
                    primary=metric == primary_metric(task, [metric]),
                    mean=mean,
                    std=std,
                    n=len(seeds),
                    seeds=seeds,
                    values=[by_seed[s] for s in seeds],
                    delta=None if base_mean is None else mean - base_mean,
                    overlap=target in overlaps.get(condition, ()),
                )
            )
    return _sort_table(table, baseline)


def _sort_table(table: list[Row], baseline: str) -> list[Row]:
    targets = unique(r["target"] for r in table)
    conditions = unique([baseline] + [r["condition"] for r in table])
    langs = {t: order_languages(t, {r["lang"] for r in table if r["task"] == t}) for t in {r["task"] for r in table}}
    metrics = {t: order_metrics(t, {r["metric"] for r in table if r["task"] == t}) for t in langs}

    def key(r: Row) -> tuple:
        t = r["task"]
        return (
            targets.index(r["target"]),
            t,
            metrics[t].index(r["metric"]),
            conditions.index(r["condition"]),
            langs[t].index(r["lang"]),
        )

    return sorted(table, key=key)


STUDY_CSV_FIELDS = (
    "target",
    "task",
    "lang",
    "metric",
    "primary",
    "condition",
    "mean",
    "std",
    "n",
    "delta",
    "overlap",
    "seeds",
    "values",
    "control",
    "ci_low",
    "ci_high",
    "p",
    "p_adj",
    "correction",
    "significant",
)
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
            extra.update(
                control=t["control"],
                ci_low=t["low"],
                ci_high=t["high"],
                p=t["p"],
                p_adj=t["p_adj"],
                correction=t["correction"],
                significant=t["significant"],
            )
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
    payload = {
        "name": name,
        "baseline": baseline,
        "split": "test",
        "selection_note": SELECTION_NOTE,
        "overlap_legend": OVERLAP_LEGEND,
        **meta,
        "rows": list(table),
    }
    paths["json"].write_text(json.dumps(payload, indent=1) + "\n")
    joined = [{"seeds": ";".join(map(str, r["seeds"])), "values": ";".join(map(str, r["values"]))} for r in table]
    csv_rows = [dict.fromkeys(SIGNIFICANCE_KEYS) | r | j for r, j in zip(table, joined)]
    write_csv(paths["csv"], csv_rows, STUDY_CSV_FIELDS)
    paths["md"].write_text(study_markdown(table, name=name, baseline=baseline, meta=meta))
    plot_study_heatmap(table, paths["png"], baseline=baseline, title=f"{name}: Δ avg_xling vs {baseline}")
    return paths


def _cell(r: Row | None, baseline: str) -> str:
    if r is None:
        return "–"
    text = fmt_value(r["mean"]) + (f" ± {fmt_value(r['std'])}" if r["std"] is not None else "")
    if r["condition"] != baseline and r["delta"] is not None:
        text += f" ({r['delta']:+.2f})"
    return text


def summary_matrix(
    table: Sequence[Row], baseline: str, lang: str = AVG_XLING
) -> tuple[list[str], list[str], dict[tuple[str, str], Row]]:
    """Conditions, column labels and {(condition, column): row} for ``lang`` of each target's primary metric."""
    primary = [r for r in table if r["primary"] and r["lang"] == lang]
    pairs = unique((r["target"], r["task"]) for r in primary)
    single = {t for t, _ in pairs if sum(1 for t2, _ in pairs if t2 == t) == 1}
    label = {(t, k): t if t in single else f"{t}/{k}" for t, k in pairs}
    conditions = unique([baseline] + [r["condition"] for r in table])
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
                parts.append(
                    f"{target}: no checkpoint selected in {n} of {total} run(s) (the weights at the "
                    "end of training, or an evaluation-only run's starting weights, were tested)"
                )
    claim = f" Every target run: {SELECTION_NOTE}." if english_only else ""
    return "Checkpoint selection as the target runs recorded it: " + "; ".join(parts) + "." + claim


def study_markdown(table: Sequence[Row], *, name: str, baseline: str, meta: Mapping[str, Any]) -> str:
    """``study.md``: a summary (Δ avg_xling per condition × target), then per target and metric a table."""
    breaks = meta.get("protocol_breaks") or []
    by_target = meta.get("selection_by_target")
    note = selection_headline(by_target) if by_target is not None else f"Target runs: {SELECTION_NOTE}."
    if breaks:  # said first, as each run's own report does: the study's claim holds only for the other runs
        lines = [
            f"# Study `{name}`",
            "",
            f"**ZERO-SHOT PROTOCOL BROKEN in {len(breaks)} target run(s)** (their cells are not zero-shot results):",
            *[f"- {b}" for b in breaks],
            "",
            f"Zero-shot cross-lingual transfer, test split. Other target runs: {note}",
        ]
    else:
        lines = [f"# Study `{name}`", "", f"Zero-shot cross-lingual transfer, test split. {note}"]
    if meta.get("selection") and by_target is None:
        lines.append("Selection keys: " + ", ".join(f"`{k}`" for k in meta["selection"]) + ".")
    if meta.get("start"):
        lines.append(start_note(meta["start"]))
    lines += [
        "",
        f"Cells: mean ± std over seeds (Δ = difference of the means from `{baseline}`). "
        f"Std is the sample std; n = number of seeds.",
        "",
    ]
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
    lines = [
        f"## Significance: Δ of the primary metric vs `{baseline}`, paired bootstrap",
        "",
        f"Paired over test items (same keys) and seeds (seed k of both conditions), {tests[0]['resamples']} "
        f"resamples; 95 % percentile interval; two-sided p; p_adj: {correction} over all "
        f"{len(tests)} deltas of the grid (controls included). ✓ = p_adj < 0.05.",
        "",
    ]
    single = sum(1 for t in tests if (t.get("n_seeds") or 0) < 2)
    if single:
        lines += [
            f"**{single} of these {len(tests)} deltas rest on one seed per condition: their intervals and "
            "p-values measure test-item noise only, not the seed-to-seed variation of training (often the "
            "larger part).** A ✓ there says the two trained models differ on these items, not that the "
            "condition does; run at least two seeds before claiming an effect (the power estimate below "
            "sizes them).",
            "",
        ]
    lines += _test_table([t for t in tests if not t["control"]])
    controls = [t for t in tests if t["control"]]
    if controls:
        lines += [
            "## Controls",
            "",
            "A **positive** control must show an interval above 0 (the instrument can see an effect); a "
            "**negative** control (labels shuffled: same images and texts, no task signal) separates "
            "what seeing the data does from what learning the task does.",
            "",
        ]
        lines += _test_table(controls)
    return lines


def _test_table(tests: Sequence[Mapping[str, Any]]) -> list[str]:
    body = [
        [
            t["condition"] + (f" ({t['control']})" if t["control"] else ""),
            t["target"],
            t["metric"],
            t["lang"],
            f"{t['delta']:+.2f}",
            f"[{t['low']:+.2f}, {t['high']:+.2f}]",
            f"{t['p']:.4f}",
            f"{t['p_adj']:.4f}",
            "✓" if t["significant"] else "",
            str(t["n_seeds"]),
            str(t["n_items"]),
        ]
        for t in tests
    ]
    header = ["condition", "target", "metric", "langs", "Δ", "95 % CI", "p", "p_adj", "survives", "seeds", "items"]
    return [*md_table(header, body), ""] if body else []


def _budget_section(budgets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not budgets:
        return []
    body = []
    for condition, b in budgets.items():
        device = b.get("device") or "device"
        body.append(
            [
                condition,
                str(b["steps"]),
                str(b["examples"]),
                _seconds(b["intermediate_device_seconds"]),
                _seconds(b["target_device_seconds"]),
                device,
            ]
        )
    return [
        "## Budgets",
        "",
        "Per intermediate run: optimizer steps and training examples seen; mean device time "
        "(wall × devices) per intermediate and per target run.",
        "",
        *md_table(["condition", "steps", "examples", "intermediate time", "target time", "device"], body),
        "",
    ]


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} s"


def _power_section(power: Sequence[Mapping[str, Any]]) -> list[str]:
    if not power:
        return []
    return ["## Seeds needed (power estimate from the baseline)", "", *(f"- {line}" for line in power_lines(power)), ""]


def start_note(start: Mapping[str, Any]) -> str:
    """Which start every condition had: the model configs and the shared start phase (or none)."""
    model = ", ".join(f"`{c}`" for c in start.get("base", [])) or "the pretrained checkpoints"
    if start.get("start"):
        phase = ", ".join(f"`{c}`" for c in start["start"])
        return (
            f"Start of every condition (the same per seed): {model}, then the start phase {phase} "
            "(`start/seed<k>`); the baseline's targets start from it too."
        )
    return (
        f"Start of every condition: {model}, no shared start phase (with unaligned towers the first phase "
        "that shows images trains the image-text alignment)."
    )


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
    return lines + md_table(["condition", *(f"{c} ({primary[c]})" for c in columns), "mean Δ"], body) + [""]


def _summary_cell(r: Row | None, baseline: str) -> str:
    if r is None:
        return "–"
    mark = OVERLAP_MARK if r["overlap"] else ""
    if r["condition"] == baseline or r["delta"] is None:
        return fmt_value(r["mean"]) + mark
    return f"{r['delta']:+.2f}{mark}"


def _metric_section(target: str, task: str, metric: str, rows: Sequence[Row], baseline: str) -> list[str]:
    langs = order_languages(task, {r["lang"] for r in rows})
    conditions = unique([baseline] + [r["condition"] for r in rows])
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
    return [title, "", *md_table(["condition", "n", *langs], body), ""]


def plot_study_heatmap(table: Sequence[Row], path: Path, *, baseline: str = "none", title: str = "") -> Path:
    """Heatmap condition × target of Δ ``avg_xling`` (primary metric) vs the baseline, centred at 0, annotated."""
    conditions, columns, cells = summary_matrix(table, baseline)
    if len(conditions) > 1:
        conditions = [c for c in conditions if c != baseline]
    grid = [[_delta_or_nan(cells.get((c, col))) for col in columns] for c in conditions]
    finite = [abs(v) for row in grid for v in row if not math.isnan(v)]
    limit = max(finite, default=0.0) or 1.0
    plt = pyplot()
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
