"""Why it transfers: the study's analysis (``python study.py analyze --config <study>``; docs/analysis.md).

Three sections, from stored outcomes and stored checkpoint diagnostics only (nothing is retrained):

1. **Languages**: each (target, condition)'s per-language Δ against the baseline, with its paired-bootstrap
   interval (as the significance table), beside the language's URIEL distances from English, the pretraining
   data the encoder saw in it (``studies/tables/pretraining.csv``) and its script; Spearman ρ of Δ against each
   predictor over the non-English languages, per condition and pooled over conditions, with a bootstrap interval
   over the points; a scatter per target. Under ``MIN_POINTS`` points no correlation is reported.
2. **Checkpoints**: en↔L retrieval, linear CKA per layer and image→text R@1 of the start, of every condition's
   intermediate checkpoint and of each target's tested checkpoint (``studies/diagnostics.py``), as the change
   from the start; Spearman ρ across conditions of "alignment gained in the intermediate phase" against each
   target's zero-shot avg_xling Δ.
3. **Predicting the grid**: LogME of each intermediate checkpoint's features on each target's English training
   items, and Kendall τ of that ranking against the measured English and avg_xling Δ across conditions.

The baseline is a condition of sections 2 and 3: its "intermediate checkpoint" is the start (gain 0, Δ 0).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from studies import diagnostics, languages, measures
from studies.plan import Run, plan, resolved

# the paired bootstrap of the significance table (issue 24 moves it into studies/: repoint this one line)
from studies.significance import ENGLISH, _test, primary_of, run_outcomes
from studies.spec import Study

MIN_POINTS = 5
"""Fewest points a rank correlation is reported for; fewer: the values are printed, no correlation."""
PREDICTORS = (*languages.DISTANCES, "pretraining", "non_latin")
CI_RESAMPLES = 2000


# ----------------------------------------------------------------------------------------------- 1. languages


def language_deltas(study: Study, results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (target, condition != baseline, language): the paired-bootstrap Δ of the target's primary metric."""
    loaded: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for res in results:
        if res["target"] in study.targets:
            outcomes = run_outcomes(res)
            if outcomes:
                loaded[(res["condition"], res["target"])][res["seed"]] = outcomes
    controls = {n: c.control for n, c in study.conditions.items() if c.control}
    rows = []
    for target, spec in study.targets.items():
        base = loaded.get((study.baseline, target), {})
        for condition in study.conditions:
            by_seed = loaded.get((condition, target), {})
            seeds = sorted(set(by_seed) & set(base))
            if condition == study.baseline or not seeds:
                continue
            sample = by_seed[seeds[0]]
            tested = sorted({t for t, _ in sample})
            task = spec.task if spec.task in tested else tested[0]
            metric = primary_of(task)
            formula = next((e["formulas"].get(metric) for (t, _), e in sample.items() if t == task), None)
            if formula is None:
                continue
            langs = sorted({lang for t, lang in sample if t == task}, key=lambda lg: (lg != ENGLISH, lg))
            for lang in langs:
                row = _test(
                    task,
                    [lang],
                    formula,
                    [base[s] for s in seeds],
                    [by_seed[s] for s in seeds],
                    study.significance.resamples,
                    0,
                )
                if row is not None:
                    rows.append(
                        {
                            "target": target,
                            "task": task,
                            "metric": metric,
                            "condition": condition,
                            "control": controls.get(condition, ""),
                            "lang": lang,
                            **row,
                        }
                    )
    return rows


def text_model(study: Study) -> str:
    """The ``model.core.text_model`` of the study's shared configs (as written: before --rehearse's models)."""
    files = [f for f in study.base if Path(f).is_file()]
    return str(((resolved(files, study.overrides).get("model") or {}).get("core") or {}).get("text_model", ""))


def language_table(langs: Sequence[str], model: str) -> dict[str, dict[str, Any]]:
    """Per language: script, URIEL distances, pretraining data of ``model`` (value, unit, source)."""
    out = {}
    for lang in langs:
        info = languages.language(lang)
        info["pretraining"] = languages.pretraining(model, lang)
        out[lang] = info
    return out


def _predictor(info: Mapping[str, Any], name: str) -> float | None:
    if name == "pretraining":
        try:
            return float(info["pretraining"]["value"])
        except ValueError:
            return None
    if name == "non_latin":
        return {"Latin": 0.0, "non-Latin": 1.0}.get(info["script"])
    return info.get(name)


def correlation(
    xs: Sequence[float], ys: Sequence[float], stat: Any = measures.spearman, seed: int = 0
) -> dict[str, Any]:
    """``{"n", "rho", "low", "high"}``, or ``{"n", "rho": None, "why"}`` under MIN_POINTS points or undefined."""
    n = len(xs)
    if n == 0:
        return {"n": 0, "rho": None, "why": "no values (e.g. pretraining data unknown)"}
    if n < MIN_POINTS:
        return {"n": n, "rho": None, "why": f"n = {n} < {MIN_POINTS}: no correlation reported"}
    rho = stat(xs, ys)
    if math.isnan(rho):
        return {"n": n, "rho": None, "why": "undefined (a constant side)"}
    low, high = measures.bootstrap_interval(stat, xs, ys, resamples=CI_RESAMPLES, seed=seed)
    return {"n": n, "rho": rho, "low": None if math.isnan(low) else low, "high": None if math.isnan(high) else high}


def language_correlations(
    deltas: Sequence[Mapping[str, Any]], table: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Spearman ρ of Δ against each predictor over the non-English languages: per (target, condition) and per
    target pooled over conditions (every language × condition point)."""
    out = []
    by_target: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for d in deltas:
        if d["lang"] != ENGLISH:
            by_target[d["target"]].append(d)
    for target, rows in by_target.items():
        groups = {c: [r for r in rows if r["condition"] == c] for c in dict.fromkeys(r["condition"] for r in rows)}
        groups["(pooled)"] = rows
        n_langs = len({r["lang"] for r in rows})
        for condition, group in groups.items():
            for name in PREDICTORS:
                points = [(_predictor(table[r["lang"]], name), r["delta"]) for r in group]
                points = [(x, y) for x, y in points if x is not None and y is not None and math.isfinite(y)]
                if n_langs < MIN_POINTS:  # pooling conditions adds points, not languages
                    corr = {"n": n_langs, "rho": None, "why": f"{n_langs} languages < {MIN_POINTS}: no correlation"}
                else:
                    corr = correlation([p[0] for p in points], [p[1] for p in points])
                out.append({"target": target, "condition": condition, "predictor": name, **corr})
    return out


# ----------------------------------------------------------------------------------------------- 2. checkpoints


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(vals) if vals else None


def summarise(diag: Mapping[str, Any]) -> dict[str, Any]:
    """One checkpoint's diagnostics per language: retrieval (mean of both directions), CKA (mean over layers and
    last layer), image→text R@1; and their means over the non-English languages (``avg_xling``)."""
    per_lang = {}
    for lang, row in (diag.get("alignment") or {}).items():
        entry: dict[str, Any] = {"image_text_r1": row.get("image_text_r1")}
        if lang != ENGLISH:
            entry["retrieval"] = _mean([row["retrieval_en_to_l"], row["retrieval_l_to_en"]])
            entry["retrieval_en_to_l"], entry["retrieval_l_to_en"] = row["retrieval_en_to_l"], row["retrieval_l_to_en"]
            entry["cka_mean"], entry["cka_last"] = _mean(row["cka"]), row["cka"][-1]
            entry["cka"] = row["cka"]
        per_lang[lang] = entry
    others = [v for k, v in per_lang.items() if k != ENGLISH]
    avg = {key: _mean([v.get(key) for v in others]) for key in ("retrieval", "cka_mean", "cka_last", "image_text_r1")}
    return {"langs": per_lang, "avg_xling": avg}


def _average(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of ``summarise`` outputs (per language and avg_xling)."""
    if not summaries:
        return {}
    langs = list(dict.fromkeys(k for s in summaries for k in s["langs"]))
    keys = ("retrieval", "retrieval_en_to_l", "retrieval_l_to_en", "cka_mean", "cka_last", "image_text_r1")
    per_lang = {lang: {k: _mean([s["langs"].get(lang, {}).get(k) for s in summaries]) for k in keys} for lang in langs}
    avg = {k: _mean([s["avg_xling"].get(k) for s in summaries]) for k in summaries[0]["avg_xling"]}
    return {"langs": per_lang, "avg_xling": avg, "seeds": len(summaries)}


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def checkpoint_section(study: Study, runs: Sequence[Run]) -> dict[str, Any]:
    """Diagnostics of the start, each condition's intermediate checkpoint and each target's tested checkpoint
    (mean over seeds), each with its change from the start of the same seeds."""
    stored = {r.name: diagnostics.read(r) for r in diagnostics.diagnosed_runs(runs)}
    starts = {r.seed: stored[r.name] for r in runs if r.phase == "start" and stored.get(r.name)}
    start = _average([summarise(d) for d in starts.values()])
    conditions: dict[str, Any] = {}
    for condition in study.conditions:
        mids = [
            stored[r.name]
            for r in runs
            if r.phase == "intermediate" and r.condition == condition and stored.get(r.name)
        ]
        if condition == study.baseline and not mids:
            mids = list(starts.values())  # the baseline's targets start from the start itself
        if not mids:
            continue
        avg = _average([summarise(d) for d in mids])
        avg["change"] = {k: _diff(v, start.get("avg_xling", {}).get(k)) for k, v in avg["avg_xling"].items()}
        avg["lang_change"] = {
            lang: {k: _diff(v, start.get("langs", {}).get(lang, {}).get(k)) for k, v in row.items()}
            for lang, row in avg["langs"].items()
        }
        conditions[condition] = avg
    targets: dict[str, dict[str, Any]] = defaultdict(dict)
    for target in study.targets:
        for condition in study.conditions:
            tested = [
                stored[r.name]
                for r in runs
                if r.phase == "target" and r.target == target and r.condition == condition and stored.get(r.name)
            ]
            if tested:
                avg = _average([summarise(d) for d in tested])
                avg["change"] = {k: _diff(v, start.get("avg_xling", {}).get(k)) for k, v in avg["avg_xling"].items()}
                targets[target][condition] = avg
    # runs with a checkpoint of their own but no stored diagnostics (an evaluation-only target has none: it tests
    # its parent's weights); their checkpoint was deleted before diagnostics were stored, or they failed
    missing = [r.name for r in diagnostics.diagnosed_runs(runs) if not stored.get(r.name) and _has_checkpoint(r)]
    return {
        "start": start,
        "conditions": conditions,
        "targets": dict(targets),
        "stored": sorted(k for k, v in stored.items() if v),
        "missing": sorted(missing),
    }


def _has_checkpoint(run: Run) -> bool:
    info = diagnostics.finished(run)
    return bool(info) and any(info.get(k) for k in ("best_ckpt", "final_ckpt", "last_ckpt"))


def measured_deltas(study: Study, table: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], float]:
    """(target, condition, en | avg_xling) -> mean Δ of the primary metric over seeds (the baseline: 0)."""
    out = {}
    for r in table:
        if r["target"] in study.targets and r.get("primary") and r["lang"] in (ENGLISH, "avg_xling"):
            delta = 0.0 if r["condition"] == study.baseline else r.get("delta")
            if delta is not None:
                out[(r["target"], r["condition"], r["lang"])] = delta
    return out


def gain_correlations(
    study: Study, section: Mapping[str, Any], measured: Mapping[tuple, float]
) -> list[dict[str, Any]]:
    """Per target and alignment measure: Spearman ρ across conditions of the intermediate phase's gain against
    the zero-shot avg_xling Δ."""
    out = []
    for target in study.targets:
        for measure in ("retrieval", "cka_mean", "image_text_r1"):
            points = []
            for condition, entry in section["conditions"].items():
                gain = entry["change"].get(measure)
                delta = measured.get((target, condition, "avg_xling"))
                if gain is not None and delta is not None:
                    points.append((condition, gain, delta))
            corr = correlation([p[1] for p in points], [p[2] for p in points])
            out.append({"target": target, "measure": measure, "points": points, **corr})
    return out


# ----------------------------------------------------------------------------------------------- 3. LogME


def logme_table(study: Study, runs: Sequence[Run]) -> dict[str, dict[str, float]]:
    """target -> condition -> LogME of its intermediate checkpoint (mean over seeds; the baseline: the start)."""
    stored = {r.name: diagnostics.read(r) for r in runs if r.phase in ("start", "intermediate")}
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for target in study.targets:
        for condition in study.conditions:
            phase = "start" if condition == study.baseline else "intermediate"
            scores = [
                ((stored[r.name] or {}).get("logme") or {}).get(target, {}).get("logme")
                for r in runs
                if r.phase == phase and (phase == "start" or r.condition == condition) and stored.get(r.name)
            ]
            score = _mean(scores)
            if score is not None:
                out[target][condition] = score
    return dict(out)


def logme_taus(
    study: Study, scores: Mapping[str, Mapping[str, float]], measured: Mapping[tuple, float]
) -> list[dict[str, Any]]:
    """Kendall τ across conditions of LogME against the measured English and avg_xling Δ, per target."""
    out = []
    for target, by_condition in scores.items():
        for lang in (ENGLISH, "avg_xling"):
            points = [
                (c, s, measured[(target, c, lang)]) for c, s in by_condition.items() if (target, c, lang) in measured
            ]
            corr = correlation([p[1] for p in points], [p[2] for p in points], stat=measures.kendall_tau)
            out.append({"target": target, "against": lang, "points": points, **corr})
    return out


def ranking_lines(study: Study, scores: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The conditions ranked by LogME per target (``study.py --rank-conditions``)."""
    lines = []
    for target in study.targets:
        by_condition = scores.get(target)
        if not by_condition:
            lines.append(f"{target}: no LogME (no stored intermediate diagnostics, or the target has no class labels)")
            continue
        ranked = sorted(by_condition.items(), key=lambda kv: -kv[1])
        lines.append(f"{target}: " + " > ".join(f"{c} ({s:.3f})" for c, s in ranked))
    return lines


# ----------------------------------------------------------------------------------------------- report


def analyse(
    study: Study, results: Sequence[Mapping[str, Any]], table: Sequence[Mapping[str, Any]], compute: bool = True
) -> dict[str, Any]:
    """The analysis of a study's finished runs: ``results`` = the finished zero-shot target runs and ``table`` =
    the study table (``studies.report``: ``collect`` and ``study_rows``); missing checkpoint diagnostics are
    computed where the checkpoint still exists, if ``compute``."""
    runs = plan(study)
    if compute:
        diagnostics.ensure(study, runs, force=True)
    zero_shot = [r for r in results if r["target"] in study.targets]
    deltas = language_deltas(study, zero_shot)
    model = text_model(study)
    langs = sorted({d["lang"] for d in deltas}, key=lambda lg: (lg != ENGLISH, lg))
    lang_table = language_table(langs, model)
    measured = measured_deltas(study, table)
    section = checkpoint_section(study, runs)
    scores = logme_table(study, runs)
    return {
        "study": study.name,
        "baseline": study.baseline,
        "text_model": model,
        "min_points": MIN_POINTS,
        "languages": {"table": lang_table, "deltas": deltas, "correlations": language_correlations(deltas, lang_table)},
        "checkpoints": {**section, "gain_vs_delta": gain_correlations(study, section, measured)},
        "logme": {
            "scores": scores,
            "taus": logme_taus(study, scores, measured),
            "measured": [{"target": t, "condition": c, "lang": lg, "delta": d} for (t, c, lg), d in measured.items()],
        },
    }


def _num(value: float | None, fmt: str = "{:+.2f}") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def _corr(c: Mapping[str, Any], symbol: str = "ρ") -> str:
    if c.get("rho") is None:
        return f"{c.get('why', 'not reported')}"
    interval = f" [{_num(c.get('low'))}, {_num(c.get('high'))}]" if c.get("low") is not None else ""
    return f"{symbol} = {c['rho']:+.2f}{interval} (n = {c['n']})"


def markdown(data: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """analysis.md."""
    lines = [
        f"# Why it transfers: {data['study']}",
        "",
        f"Baseline: `{data['baseline']}`. Text encoder: `{data['text_model'] or 'unknown'}`. Rank correlations "
        f"need at least {data['min_points']} points; intervals are 95 % percentile bootstraps over the points. "
        "Method and sources: docs/analysis.md.",
        "",
    ]
    lines += _languages_md(data["languages"], data["min_points"], plots)
    lines += _checkpoints_md(data["checkpoints"])
    lines += _logme_md(data["logme"])
    return "\n".join(lines) + "\n"


def _languages_md(sec: Mapping[str, Any], min_points: int, plots: Mapping[str, str]) -> list[str]:
    lines = ["## 1. Languages: where the gains go", ""]
    table = sec["table"]
    if not table:
        return [*lines, "No per-language outcomes yet (no finished target run with its baseline).", ""]
    lines += [
        "URIEL distance from English (studies/tables/uriel_distances.csv) and the encoder's pretraining data in "
        "each language (studies/tables/pretraining.csv; sources below).",
        "",
        "| lang | script | syntactic | genetic | geographic | phonological | pretraining |",
        "|---|---|---|---|---|---|---|",
    ]
    sources: list[str] = []
    for lang, info in table.items():
        pre = info["pretraining"]
        value = pre["value"] + (f" {pre['unit']}" if pre["value"] != "unknown" and pre["unit"] else "")
        if pre["source"] and pre["source"] not in sources:
            sources.append(pre["source"])
        mark = f" [{sources.index(pre['source']) + 1}]" if pre["source"] else ""
        distances = " | ".join(_num(info[k], "{:.3f}") for k in languages.DISTANCES)
        lines.append(f"| {lang} | {info['script']} | {distances} | {value}{mark} |")
    lines += ["", *(f"[{i}] {src}" + ("  " if i < len(sources) else "") for i, src in enumerate(sources, 1)), ""]
    by_target: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for d in sec["deltas"]:
        by_target[d["target"]].append(d)
    for target, rows in by_target.items():
        langs = list(dict.fromkeys(r["lang"] for r in rows))
        metric = rows[0]["metric"]
        lines += [
            f"### {target} ({rows[0]['task']}, {metric}): Δ vs the baseline per language [95 % paired-bootstrap "
            "interval]",
            "",
            "| condition | " + " | ".join(langs) + " |",
            "|---" * (len(langs) + 1) + "|",
        ]
        for condition in dict.fromkeys(r["condition"] for r in rows):
            cells = {r["lang"]: r for r in rows if r["condition"] == condition}
            lines.append(
                f"| {condition} | "
                + " | ".join(
                    f"{_num(cells[lg]['delta'])} [{_num(cells[lg]['low'])}, {_num(cells[lg]['high'])}]"
                    if lg in cells
                    else "–"
                    for lg in langs
                )
                + " |"
            )
        lines.append("")
        corrs = [c for c in sec["correlations"] if c["target"] == target]
        n_langs = len([lg for lg in langs if lg != ENGLISH])
        if n_langs < min_points:
            lines += [
                f"{n_langs} non-English languages (< {min_points}): the values above are all there is; no "
                "correlation is reported.",
                "",
            ]
        else:
            preds = list(PREDICTORS)
            lines += [
                f"Spearman ρ of Δ with each predictor over the {n_langs} non-English languages "
                "(non_latin: 1 for a non-Latin script):",
                "",
                "| condition | " + " | ".join(preds) + " |",
                "|---" * (len(preds) + 1) + "|",
            ]
            for condition in dict.fromkeys(c["condition"] for c in corrs):
                cells = {c["predictor"]: c for c in corrs if c["condition"] == condition}
                lines.append(
                    f"| {condition} | " + " | ".join(_corr(cells[p]) if p in cells else "–" for p in preds) + " |"
                )
            lines.append("")
        if target in plots:
            lines += [f"![{target}: Δ against distance from English]({plots[target]})", ""]
    return lines


def _checkpoints_md(sec: Mapping[str, Any]) -> list[str]:
    lines = ["## 2. Checkpoints: did the intermediate phase align the languages?", ""]
    if not sec["conditions"]:
        return [
            *lines,
            "No stored checkpoint diagnostics (enable `analysis` in the study file, or run "
            "`study.py analyze` while the checkpoints exist).",
            "",
        ]
    start = sec["start"].get("avg_xling", {})
    lines += [
        "Mean over the non-English languages and seeds: en↔L retrieval accuracy (both directions, mean-pooled "
        "last layer), linear CKA between English and L (mean over layers), image→text R@1 (– where the core "
        "has no retrieval path); in brackets the change from the start.",
        "",
        f"Start: retrieval {_num(start.get('retrieval'), '{:.3f}')}, CKA {_num(start.get('cka_mean'), '{:.3f}')}"
        f", image→text R@1 {_num(start.get('image_text_r1'), '{:.3f}')}",
        "",
        "| condition (intermediate checkpoint) | retrieval | CKA | image→text R@1 |",
        "|---|---|---|---|",
    ]
    for condition, entry in sec["conditions"].items():
        a, ch = entry["avg_xling"], entry["change"]
        lines.append(
            f"| {condition} | "
            + " | ".join(
                f"{_num(a.get(k), '{:.3f}')} ({_num(ch.get(k), '{:+.3f}')})"
                for k in ("retrieval", "cka_mean", "image_text_r1")
            )
            + " |"
        )
    lines.append("")
    langs = list(dict.fromkeys(lg for e in sec["conditions"].values() for lg in e["langs"] if lg != ENGLISH))
    lines += [
        "Retrieval per language (change from the start):",
        "",
        "| condition | " + " | ".join(langs) + " |",
        "|---" * (len(langs) + 1) + "|",
    ]
    for condition, entry in sec["conditions"].items():
        lines.append(
            f"| {condition} | "
            + " | ".join(
                f"{_num(entry['langs'].get(lg, {}).get('retrieval'), '{:.3f}')} "
                f"({_num(entry['lang_change'].get(lg, {}).get('retrieval'), '{:+.3f}')})"
                for lg in langs
            )
            + " |"
        )
    lines.append("")
    for target, by_condition in sec["targets"].items():
        lines += [
            f"Tested checkpoints of {target} (after target training):",
            "",
            "| condition | retrieval | CKA | image→text R@1 |",
            "|---|---|---|---|",
        ]
        for condition, entry in by_condition.items():
            a, ch = entry["avg_xling"], entry["change"]
            lines.append(
                f"| {condition} | "
                + " | ".join(
                    f"{_num(a.get(k), '{:.3f}')} ({_num(ch.get(k), '{:+.3f}')})"
                    for k in ("retrieval", "cka_mean", "image_text_r1")
                )
                + " |"
            )
        lines.append("")
    lines += ["Alignment gained in the intermediate phase vs zero-shot avg_xling Δ, across conditions (Spearman):", ""]
    for c in sec["gain_vs_delta"]:
        values = ", ".join(f"{cond} ({g:+.3f}, {d:+.2f})" for cond, g, d in c["points"])
        lines.append(f"- {c['target']}, {c['measure']}: {_corr(c)}" + (f"; (gain, Δ): {values}" if values else ""))
    lines.append("")
    if sec["missing"]:
        lines += [
            f"No stored diagnostics for {len(sec['missing'])} run(s): {', '.join(sec['missing'][:12])}"
            + (" …" if len(sec["missing"]) > 12 else ""),
            "",
        ]
    return lines


def _logme_md(sec: Mapping[str, Any]) -> list[str]:
    lines = ["## 3. Predicting the grid: LogME of the intermediate checkpoints", ""]
    if not sec["scores"]:
        return [*lines, "No LogME scores stored (no intermediate diagnostics, or no target with class labels).", ""]
    lines += [
        "LogME (You et al. 2021) of each condition's intermediate checkpoint (the baseline: the start) on each "
        "target's English training items, mean over seeds; higher predicts better transfer. Kendall τ against "
        "the measured Δ across conditions (the baseline counts with Δ 0).",
        "",
    ]
    for target, by_condition in sec["scores"].items():
        ranked = sorted(by_condition.items(), key=lambda kv: -kv[1])
        measured = {(m["condition"], m["lang"]): m["delta"] for m in sec["measured"] if m["target"] == target}
        lines += [
            f"### {target}",
            "",
            "| rank | condition | LogME | measured Δ en | measured Δ avg_xling |",
            "|---|---|---|---|---|",
        ]
        for i, (condition, score) in enumerate(ranked, 1):
            lines.append(
                f"| {i} | {condition} | {score:.4f} | {_num(measured.get((condition, ENGLISH)))} | "
                f"{_num(measured.get((condition, 'avg_xling')))} |"
            )
        lines.append("")
        for tau in (t for t in sec["taus"] if t["target"] == target):
            lines.append(f"- vs Δ {tau['against']}: {_corr(tau, 'τ')}")
        lines.append("")
    return lines


def scatter_plots(data: Mapping[str, Any], out_dir: Path) -> dict[str, str]:
    """One figure per target, a panel per URIEL distance: Δ per (language, condition) with its bootstrap interval,
    coloured by condition, a least-squares line per condition; returns target -> file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = data["languages"]["table"]
    by_target: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for d in data["languages"]["deltas"]:
        if d["lang"] != ENGLISH and d["delta"] is not None and math.isfinite(d["delta"]):
            by_target[d["target"]].append(d)
    files = {}
    for target, rows in by_target.items():
        conditions = list(dict.fromkeys(r["condition"] for r in rows))
        colours = {c: plt.cm.tab10(i % 10) for i, c in enumerate(conditions)}
        fig, axes = plt.subplots(2, 2, figsize=(10, 8), sharey=True)
        for ax, kind in zip(axes.flat, languages.DISTANCES):
            for k, condition in enumerate(conditions):
                pts = [r for r in rows if r["condition"] == condition and table[r["lang"]][kind] is not None]
                if not pts:
                    continue
                # a small horizontal offset per condition keeps the intervals of one language apart
                span = max((table[r["lang"]][kind] for r in rows if table[r["lang"]][kind] is not None), default=1)
                shift = (k - (len(conditions) - 1) / 2) * 0.006 * (span or 1)
                xs = [table[r["lang"]][kind] + shift for r in pts]
                ys = [r["delta"] for r in pts]
                err = [
                    [max(0.0, r["delta"] - r["low"]) if r.get("low") is not None else 0 for r in pts],
                    [max(0.0, r["high"] - r["delta"]) if r.get("high") is not None else 0 for r in pts],
                ]
                ax.errorbar(
                    xs,
                    ys,
                    yerr=err,
                    fmt="o",
                    color=colours[condition],
                    label=condition,
                    ms=5,
                    lw=0.8,
                    capsize=2,
                    alpha=0.85,
                )
                if len(set(xs)) >= 2:
                    slope, icpt = _fit(xs, ys)
                    lo, hi = min(xs), max(xs)
                    ax.plot([lo, hi], [icpt + slope * lo, icpt + slope * hi], color=colours[condition], lw=1.2)
            placed = sorted(
                (table[lg][kind], lg) for lg in dict.fromkeys(r["lang"] for r in rows) if table[lg][kind] is not None
            )
            for i, (x, lang) in enumerate(placed):  # language codes along the bottom, two rows against overlaps
                ax.annotate(
                    lang,
                    (x, 0),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, 3 + 9 * (i % 2)),
                    textcoords="offset points",
                    ha="center",
                    fontsize=8,
                    color="dimgrey",
                )
            ax.axhline(0, color="grey", lw=0.6, ls="--")
            ax.set_xlabel(f"{kind} distance from English (URIEL)")
            ax.grid(alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel(f"Δ {rows[0]['metric']} vs {data['baseline']} (points)")
        axes[0, 0].legend(fontsize=8, loc="best")
        n = len({r["lang"] for r in rows})
        note = "" if n >= data["min_points"] else f"; {n} languages: no correlation reported"
        fig.suptitle(
            f"{target}: zero-shot Δ per language vs distance from English\n(95 % paired-bootstrap interval{note})",
            fontsize=11,
        )
        fig.tight_layout()
        name = f"analysis_{target}.png"
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        files[target] = name
    return files


def _fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def write_analysis(
    study: Study, results: Sequence[Mapping[str, Any]], table: Sequence[Mapping[str, Any]], compute: bool = True
) -> dict[str, Path]:
    """analysis.json, analysis.md and the plots into ``study.out`` (arguments: ``analyse``); returns their paths."""
    out = study.out_dir
    out.mkdir(parents=True, exist_ok=True)
    data = analyse(study, results, table, compute=compute)
    plots = scatter_plots(data, out)
    paths = {"json": out / "analysis.json", "md": out / "analysis.md"}
    paths["json"].write_text(json.dumps({**data, "plots": plots}, indent=1, default=str) + "\n")
    paths["md"].write_text(markdown(data, plots))
    paths.update({f"plot_{t}": out / f for t, f in plots.items()})
    return paths


def gaps(study: Study) -> list[str]:
    """What analysis.json lacks for a filled analysis (the rehearsal's check): per-language Δ and every
    language's distances and script, a rank correlation where there are enough languages, checkpoint diagnostics
    of the start and the conditions, LogME scores with their τ."""
    path = study.out_dir / "analysis.json"
    if not path.is_file():
        return [f"no {path}"]
    data = json.loads(path.read_text())
    out = []
    lang_sec, ckpt_sec, logme_sec = data["languages"], data["checkpoints"], data["logme"]
    if not lang_sec["deltas"]:
        out.append("analysis: no per-language Δ")
    for lang, info in lang_sec["table"].items():
        missing = [k for k in languages.DISTANCES if info.get(k) is None]
        if missing or info["script"] == "unknown":
            out.append(f"analysis: {lang} lacks {', '.join(missing) or 'its script'}")
    for target in {d["target"] for d in lang_sec["deltas"]}:
        n = len({d["lang"] for d in lang_sec["deltas"] if d["target"] == target and d["lang"] != ENGLISH})
        computed = [c for c in lang_sec["correlations"] if c["target"] == target and c["n"] >= MIN_POINTS]
        if n >= MIN_POINTS and not computed:  # a rho, or the reason it is undefined (a constant side)
            out.append(f"analysis: {target} has {n} languages but no correlation")
    if not ckpt_sec["start"] or not ckpt_sec["conditions"]:
        out.append("analysis: no checkpoint diagnostics of the start and the conditions")
    if len(ckpt_sec["conditions"]) < len(study.conditions):
        out.append(
            f"analysis: checkpoint diagnostics of {len(ckpt_sec['conditions'])} of {len(study.conditions)} conditions"
        )
    if not any(ckpt_sec["targets"].values()):
        out.append("analysis: no diagnostics of the targets' tested checkpoints")
    if not logme_sec["scores"]:
        out.append("analysis: no LogME scores")
    if not logme_sec["taus"]:
        out.append("analysis: no Kendall tau")
    return out
