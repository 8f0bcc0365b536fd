"""What a run actually did with its data: the record behind every results report's protocol lines (issue 14.2).

Zero-shot cross-lingual transfer allows training and checkpoint selection on English data only, never on test
data. A report therefore states, from what happened rather than from intent:

- which weights were tested: a checkpoint (selected on validation, or the last one), the weights at the end of
  this fit (no validation ran), or the starting weights (nothing trained in this command);
- what those weights were trained on (task, split, languages) and selected on: the monitor of the checkpoint
  callback that chose the tested file, with its split and languages (a file kept on a NaN score was not selected);
- the **breaks**: training on a test split, training on non-English data of a task the run tests (in this run or
  in any earlier phase of its ``init_from`` chain), or selecting on non-English or test data. A report with breaks
  says so in its first line.

Each checkpoint carries its own record (``checkpoint["protocol"]``, written by the ``ProtocolRecord`` callback
that ``train.py`` adds to every run), so re-evaluating a checkpoint later reports what that checkpoint was
trained and selected on; ``test_protocol`` builds a test's record, which ``reports.write_run_report`` writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

ENGLISH = "en"
FEW_SHOT_PHASE = "few_shot"  # the phase name of IGLUE few-shot runs (study.py): target data on purpose
TEST_SPLITS = ("test",)


def split_langs(datamodule: Any, task: str, split: str, langs: list[str] | None) -> list[str]:
    """The languages of ``split`` a task uses: ``langs`` when given, else every language the manifest lists."""
    if langs:
        return list(langs)
    return sorted(datamodule.manifests[task]["counts"].get(split, {}))


def data_use(datamodule: Any) -> dict[str, list[dict[str, Any]]]:
    """Per stage (train, val, test): ``{task, split, langs}`` for every task that uses a split in that stage."""
    use: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for name, t in datamodule.tasks.items():
        if t.train_split:
            use["train"].append(
                {
                    "task": name,
                    "split": t.train_split,
                    "langs": split_langs(datamodule, name, t.train_split, t.train_langs),
                }
            )
        if t.val_split:
            use["val"].append({"task": name, "split": t.val_split, "langs": list(t.val_langs or [ENGLISH])})
        if t.test_split:
            langs = [lang for task, lang in datamodule.eval_names("test") if task == name]
            use["test"].append({"task": name, "split": t.test_split, "langs": langs})
    return use


SELECTION_ALIAS = "val/selection"  # logged by TransferModule: the value of its ``selection_key``


def selection_record(monitor: str | None, datamodule: Any) -> dict[str, Any] | None:
    """The data behind a monitored key: ``val/<task>/<lang>/<metric>`` is the task's val split in that language; None
    without a monitor or for ``val/none`` (nothing to select on); for any other key the data is not known (task and
    split None: a report calls selecting on it a break)."""
    if not monitor or monitor == "val/none":
        return None
    parts = monitor.split("/")
    if len(parts) == 4 and parts[0] == "val" and parts[1] in datamodule.tasks:
        task, lang = parts[1], parts[2]
        return {"monitor": monitor, "task": task, "split": datamodule.tasks[task].val_split, "langs": [lang]}
    return {"monitor": monitor, "task": None, "split": None, "langs": []}


def checkpoint_record(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """Stored in every checkpoint: what its weights were trained on, and what each checkpoint callback of the run
    actually monitors (``selections``, by the callback's state key; ``val/selection`` resolved to the module's
    ``selection_key``). ``selection`` is the first checkpoint callback's, the one ``ckpt_path="best"`` uses."""
    dm, key = trainer.datamodule, pl_module.selection_key
    selections = {
        cb.state_key: selection_record(key if cb.monitor == SELECTION_ALIAS else cb.monitor, dm)
        for cb in trainer.checkpoint_callbacks
        if isinstance(cb, ModelCheckpoint)
    }
    main = trainer.checkpoint_callback
    return {
        "trained_on": data_use(dm)["train"],
        "selection": selections.get(main.state_key) if main else None,
        "selections": selections,
        "global_step": trainer.global_step,
    }


class ProtocolRecord(pl.Callback):
    """Stores ``checkpoint_record`` in every checkpoint the run saves (under ``checkpoint["protocol"]``; merged, so
    ``callbacks.FinalCheckpoint``'s ``final`` flag stays whichever hook runs first)."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint.setdefault("protocol", {}).update(checkpoint_record(trainer, pl_module))


def selected_by(checkpoint: dict[str, Any], ckpt_path: str | Path | None) -> str | None:
    """The state key of the checkpoint callback that recorded ``ckpt_path`` as its best with a finite score, else
    None. Lightning stores a NaN score as -inf (mode max) or inf: a file kept on a NaN score was not selected."""
    if not ckpt_path:
        return None
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if not str(key).startswith("ModelCheckpoint"):
            continue
        best, score = state.get("best_model_path"), state.get("best_model_score")
        if best and Path(best).name == Path(ckpt_path).name and score is not None and math.isfinite(float(score)):
            return str(key)
    return None


def read_record(ckpt_path: str | Path) -> dict[str, Any]:
    """A checkpoint's stored record and what selected it (tensors memory-mapped, not read): ``selected_on`` is the
    data of the monitor of the checkpoint callback that chose this file, None when no finite score chose it."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    record, key = ckpt.get("protocol") or {}, selected_by(ckpt, ckpt_path)
    selected_on = None
    if key is not None:  # checkpoints saved before ``selections`` existed: the run's selection key
        monitor = ckpt["callbacks"][key].get("monitor")
        unknown = {"monitor": monitor, "task": None, "split": None, "langs": []}
        selected_on = (record.get("selections") or {}).get(key) or record.get("selection") or unknown
    return {"record": ckpt.get("protocol"), "selected": key is not None, "selected_on": selected_on}


def test_protocol(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """The record of the test that just ran: the weights it scored, their data, the breaks (``run_protocol``)."""
    dm, ckpt_path = trainer.datamodule, trainer.ckpt_path
    loaded = read_record(ckpt_path) if ckpt_path else None
    weights = tested_weights(ckpt_path, loaded, trainer.global_step, pl_module.hparams.get("init_from"), dm)
    return run_protocol(
        weights,
        data_use(dm)["test"],
        getattr(pl_module, "_lineage", None),
        few_shot=pl_module.hparams.get("phase") == FEW_SHOT_PHASE,
    )


def tested_weights(
    ckpt_path: str | None, loaded: dict[str, Any] | None, global_step: int, init_from: str | None, datamodule: Any
) -> dict[str, Any]:
    """Which weights a test scored and their history: ``{checkpoint, weights, trained_on, selected_on}``."""
    if ckpt_path:
        loaded = loaded or {}
        record = loaded.get("record") or {}
        if loaded.get("selected"):
            how = "selected on validation"
        elif record.get("final"):
            how = "the final weights of its fit, not selected by validation"
        else:
            how = "not selected by validation"
        return {
            "checkpoint": str(ckpt_path),
            "weights": f"checkpoint {ckpt_path} ({how}, step {record.get('global_step', '?')})",
            "trained_on": record.get("trained_on"),
            "selected_on": loaded.get("selected_on"),
        }
    if global_step > 0:
        return {
            "checkpoint": None,
            "weights": f"the weights at the end of this fit (step {global_step}): no validation selected a checkpoint",
            "trained_on": data_use(datamodule)["train"],
            "selected_on": None,
        }
    start = f"init_from {init_from}" if init_from else "the model's initial weights"
    return {
        "checkpoint": None,
        "weights": f"the starting weights ({start}): nothing was trained in this command",
        "trained_on": [],
        "selected_on": None,
    }


def earlier_phases(lineage: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The phases before this one, nearest first: ``{path, phase, trained_on}`` from the lineage chain that every
    checkpoint carries (``trained_on`` None: a checkpoint saved before the chain recorded it)."""
    phases, parent = [], (lineage or {}).get("parent")
    while parent:
        phases.append({k: parent.get(k) for k in ("path", "phase", "trained_on")})
        parent = (parent.get("lineage") or {}).get("parent")
    return phases


def _training_breaks(uses: list[dict[str, Any]], tested: list[dict[str, Any]], where: str = "") -> list[str]:
    breaks, tested_tasks = [], {t["task"] for t in tested}
    for use in uses:
        if use["split"] in TEST_SPLITS or any(use["task"] == t["task"] and use["split"] == t["split"] for t in tested):
            breaks.append(f"trained on test data ({use['task']} {use['split']}){where}")
        foreign = [lang for lang in use["langs"] if lang != ENGLISH]
        if foreign and use["task"] in tested_tasks:
            breaks.append(
                f"trained on non-English data of a tested task ({use['task']} {use['split']}: "
                f"{', '.join(foreign)}){where}"
            )
    return breaks


def protocol_breaks(
    weights: dict[str, Any], tested: list[dict[str, Any]], earlier: list[dict[str, Any]] | None = None
) -> list[str]:
    """The ways the tested weights' training and selection break zero-shot transfer to the tested languages:
    this run's own training and selection, and the training of every ``earlier`` phase (``earlier_phases``) —
    an intermediate phase on the target's translated training data breaks it as much as the target phase would."""
    breaks = _training_breaks(weights.get("trained_on") or [], tested)
    for phase in earlier or []:
        where = f" in an earlier phase ({phase['phase']}: {phase['path']})"
        breaks += _training_breaks(phase["trained_on"] or [], tested, where)
    selected = weights.get("selected_on")
    if selected and selected.get("task") is None:
        breaks.append(f"checkpoint selected on `{selected['monitor']}`, whose data is not recorded")
    elif selected:
        if selected["split"] in TEST_SPLITS or any(
            selected["task"] == t["task"] and selected["split"] == t["split"] for t in tested
        ):
            breaks.append(f"checkpoint selected on test data ({selected['task']} {selected['split']})")
        foreign = [lang for lang in selected["langs"] if lang != ENGLISH]
        if foreign:
            breaks.append(f"checkpoint selected on non-English data ({selected['monitor']})")
    return breaks


def run_protocol(
    weights: dict[str, Any], tested: list[dict[str, Any]], lineage: dict[str, Any] | None, *, few_shot: bool = False
) -> dict:
    """The ``protocol`` entry of results.json: the tested weights, their data, the breaks and the headline.

    ``few_shot``: an IGLUE few-shot run (phase ``few_shot``), which trains and selects on target-language data by
    design; its headline names that protocol and the target-language data instead of calling it broken.
    """
    earlier = earlier_phases(lineage)
    breaks = protocol_breaks(weights, tested, earlier)
    parent = (lineage or {}).get("parent") or None
    record = {
        **weights,
        "tested_on": tested,
        "breaks": breaks,
        "zero_shot": not breaks and not few_shot,
        "earlier_phases": earlier,
        "protocol": FEW_SHOT_PHASE if few_shot else "zero_shot",
        "parent": {"path": parent["path"], "phase": parent.get("phase"), "tasks": parent.get("tasks")}
        if parent
        else None,
    }
    record["headline"] = headline(record)
    return record


def _uses(uses: list[dict[str, Any]] | None) -> str:
    if uses is None:
        return "unknown (the checkpoint carries no record)"
    if not uses:
        return "nothing"
    return "; ".join(f"{u['task']} {u['split']} [{', '.join(u['langs'])}]" for u in uses)


def headline(record: dict[str, Any]) -> str:
    """The first line of results.md."""
    if record.get("protocol") == FEW_SHOT_PHASE:
        used = "; ".join(record["breaks"]) or "no target-language data recorded"
        return f"IGLUE few-shot protocol (not zero-shot): {used}."
    if record["breaks"]:
        return "**ZERO-SHOT PROTOCOL BROKEN**: " + "; ".join(record["breaks"]) + "."
    return "Zero-shot protocol kept: no test data and no non-English data of a tested task was trained or selected on."


def protocol_lines(record: dict[str, Any]) -> list[str]:
    """The protocol block of results.md (after the headline)."""
    selected = record.get("selected_on")
    selection = "none"
    if selected:
        data = (
            f"{selected['task']} {selected['split']} [{', '.join(selected['langs'])}]"
            if selected.get("task")
            else "data not recorded"
        )
        selection = f"`{selected['monitor']}` ({data})"
    lines = [
        f"- Tested: {record['weights']}.",
        f"- Trained on: {_uses(record.get('trained_on'))}.",
        f"- Checkpoint selected on: {selection}.",
        f"- Tested on: {_uses(record.get('tested_on'))}.",
    ]
    if record.get("parent"):
        p = record["parent"]
        lines.append(f"- Started from: {p['path']} (phase {p.get('phase')}, tasks {', '.join(p.get('tasks') or [])}).")
    for phase in record.get("earlier_phases") or []:
        lines.append(f"- Earlier phase {phase['phase']} trained on: {_uses(phase['trained_on'])}.")
    return lines


def append_finished(root: str | Path, info: dict[str, Any]) -> dict[str, Any]:
    """Add one command's record to ``finished.json``; a later evaluation never erases the fit's ``last_ckpt``.

    The top level keeps the latest fit's entries (what the study runner reads); ``history`` lists every command.
    """
    path = Path(root, "finished.json")
    record = json.loads(path.read_text()) if path.exists() else {}
    history = record.pop("history", None) or ([dict(record)] if record else [])
    if info.get("subcommand") == "fit" or not record:
        record.update(info)
    record["history"] = [*history, info]
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record
