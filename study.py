"""Run a study: intermediate condition × target task × seed (× IGLUE protocol), then the comparison report.

    python study.py [run] --config configs/studies/<name>.yaml [--dry-run [--verbose]] [--executor E] ...
    python study.py status --config configs/studies/<name>.yaml
    python study.py analyze --config configs/studies/<name>.yaml     # why it transfers: analysis.md (docs/analysis.md)
    python study.py --config configs/studies/<name>.yaml --rank-conditions  # LogME ranking, before any target run

A study YAML (docs/study.md; parsed by jsonargparse into ``studies/spec.py``'s dataclasses) names the shared
``--config`` files and overrides, the seeds, an optional ``start`` phase, the conditions (intermediate phases;
the baseline has none), the targets with their optional translate-test and few-shot protocols, the resources
per phase and the checkpoint retention. The runner

1. runs ``start`` once per seed (``<out>/start/seed<k>``), if given;
2. runs each condition's intermediate phase once per seed (``<out>/<condition>/seed<k>/intermediate``),
   starting from the start run's final weights;
3. fine-tunes and zero-shot tests every target per (condition, seed) (``<out>/<condition>/seed<k>/<target>``),
   starting from the intermediate run's final weights (the baseline: from the start run, or from scratch);
4. from each target run's best checkpoint: translate-test (``<target>.translate_test``) and few-shot runs
   (``<target>.fs<N>.<lang>``) where the target defines them;
5. writes study.json / study.csv / study.md / study_heatmap.png into ``<out>`` and prints study.md.

Executors: ``local`` (one run after another in this process), ``local-gpus`` (one run per visible GPU at once),
``slurm`` (one submitit job per run, ``afterok`` dependencies; ``--cluster local`` uses submitit's local
executor). A run whose ``finished.json`` exists is skipped, so rerunning the same command resumes; a failed run
is rerun with ``--retry-failed``. Each run folder is locked while written; a killed runner takes its training
processes with it. Every run is a subprocess ``[*train_cmd, "fit"|"test", ...]``; ``train_cmd`` defaults to
``python train.py`` and can be replaced by the YAML's ``train_cmd`` or ``$MMSTILTS_TRAIN_CMD`` (tests use a fake).
Paths in the YAML are relative to the working directory: run from the repository root.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from studies import analysis, diagnostics, fingerprint, rehearsal
from studies.executors import queued_slurm_jobs, run_local, submit_slurm, visible_gpus
from studies.plan import PROTOCOLS, TRAIN_CMD_ENV, Run, plan, run_args, run_env, summary_lines, train_command
from studies.power import power_lines
from studies.probe import measure
from studies.report import analysis_inputs, collect, power, write_report
from studies.runs import apply_retention, finished, parent_weights, run_status, supersede
from studies.spec import Study, StudyError, load_study, parse_study

__all__ = [
    "TRAIN_CMD_ENV",
    "Run",
    "Study",
    "StudyError",
    "collect",
    "finished",
    "load_study",
    "main",
    "parent_weights",
    "parse_study",
    "plan",
    "run_args",
    "run_env",
    "write_report",
]


def _print_runs(study: Study, runs: Sequence[Run]) -> None:
    cmd = train_command(study)
    for i, run in enumerate(runs, 1):
        status = "finished" if finished(run) else "to run"
        init = f"{run.parent.run_dir}/<{run.init_key}>" if run.parent else None
        print(
            f"[{i}/{len(runs)}] {run.name} ({run.phase}, {status})\n    {shlex.join(cmd + run_args(study, run, init))}"
        )
    overlaps = study.overlaps()
    if overlaps:
        print("overlap marks (†): " + "; ".join(f"{c} -> {', '.join(t)}" for c, t in overlaps.items()))


def print_status(study: Study, runs: Sequence[Run]) -> dict[str, int]:
    """One line per run (state, log path; job, holder); failures with their log's last lines. Returns counts."""
    counts: dict[str, int] = {}
    in_queue = queued_slurm_jobs()
    for run in runs:
        info = run_status(study, run)
        if info["state"] == "queued" and in_queue is not None and info.get("job") not in in_queue:
            info["state"] = "lost"  # left the SLURM queue without starting (scancel, a failed dependency)
        state = info["state"]
        counts[state] = counts.get(state, 0) + 1
        extra = "".join(f" {k}={info[k]}" for k in ("job", "by", "rc") if info.get(k) is not None)
        extra += f" ({info['why']})" if info.get("why") else ""
        print(f"{state:<12} {run.name}  log: {info['log']}{extra}")
        if info.get("tail"):
            print("    | " + info["tail"].replace("\n", "\n    | "))
    print("status: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return counts


def build_parser() -> ArgumentParser:
    """The command line (see the module docstring)."""
    about = __doc__.split("\n\n")[0] + " `python study.py status --config FILE`: each run's state, log and failure."
    about += " `python study.py analyze --config FILE`: the analysis of why conditions transfer (analysis.md)."
    parser = ArgumentParser(prog="study.py [run|status|analyze]", description=about, exit_on_error=False)
    parser.add_argument("--config", required=True, help="study YAML, e.g. configs/studies/iglue.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the plan: runs, GPU-hours, disk; run nothing")
    parser.add_argument("--verbose", action="store_true", help="with --dry-run: every run and its command")
    parser.add_argument(
        "--probe",
        type=int,
        default=0,
        metavar="N",
        help="with --dry-run: measure s/step per phase by two short runs (N, 2N steps)",
    )
    parser.add_argument("--only", nargs="+", default=[], help="run only these conditions")
    parser.add_argument("--targets", nargs="+", default=[], help="run only these targets")
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), help="zero_shot translate_test few_shot")
    parser.add_argument("--report-only", action="store_true", help="only (re)write the report from finished runs")
    parser.add_argument(
        "--executor",
        default="local",
        choices=["local", "local-gpus", "slurm"],
        help="local: one run at a time; local-gpus: one run per GPU; slurm: submitit jobs",
    )
    parser.add_argument("--gpus", default=None, help="local-gpus: N or a list of ids; default: the visible GPUs")
    parser.add_argument(
        "--jobs", type=int, default=1, help="local: runs at once (CPU runs, e.g. one per core with OMP_NUM_THREADS=1)"
    )
    parser.add_argument(
        "--cluster",
        default="slurm",
        choices=["slurm", "local", "debug"],
        help="slurm executor: submitit's cluster (local/debug: jobs on this machine)",
    )
    parser.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, then write the report")
    parser.add_argument("--keep-going", action="store_true", help="after a failure, run what does not depend on it")
    parser.add_argument("--retry-failed", action="store_true", help="rerun runs whose last attempt failed")
    parser.add_argument("--heartbeat", type=float, default=60.0, help="seconds between 'still running' lines")
    parser.add_argument(
        "--rerun-changed",
        action="store_true",
        help="redo finished runs made with other settings than the study's now (and what starts "
        "from them); without it such a study is refused",
    )
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="run this study file at toy scale on this machine (configs/rehearsal.yaml says how)",
    )
    parser.add_argument(
        "--workspace",
        default=None,
        help="with --rehearse: where data, models and runs go (default: configs/rehearsal.yaml's)",
    )
    parser.add_argument(
        "--rank-conditions",
        action="store_true",
        help="run only the start and intermediate phases, then print the conditions ranked by LogME "
        "on each target's English training data (docs/analysis.md)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[str, Namespace]:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in ("run", "status", "analyze") else "run"
    try:
        return command, build_parser().parse_args(argv)
    except Exception as err:  # jsonargparse's ArgumentError: the message names the option
        raise StudyError(f"{err}\n(python study.py --help lists the options)") from None


def _changed_message(changed: dict[str, list[str]], shown: int = 12) -> str:
    lines = [
        f"{len(changed)} finished run(s) were made with other settings than the study file's now; their results "
        "would be compared with runs made with the new ones:"
    ]
    for name, diffs in list(changed.items())[:shown]:
        lines.append(f"  {name}: " + "; ".join(diffs))
    if len(changed) > shown:
        lines.append(f"  ... {len(changed) - shown} more")
    lines.append(
        "Restore the settings, or redo these runs (and what starts from them) with --rerun-changed; the old "
        "runs are kept beside them as <run>.superseded."
    )
    return "\n".join(lines)


def _execute(study: Study, runs: list[Run], args: Namespace) -> list[str]:
    if args.executor == "slurm":
        return submit_slurm(study, runs, cluster=args.cluster, retry_failed=args.retry_failed, wait_jobs=args.wait)
    if args.jobs < 1:
        raise StudyError(f"--jobs {args.jobs}: must be >= 1 (runs at once with --executor local)")
    devices = visible_gpus(args.gpus) if args.executor == "local-gpus" else [None] * args.jobs
    every_run = plan(study)  # retention looks at every dependent in the study, not only the selected runs
    return run_local(
        study,
        runs,
        devices,
        args.heartbeat,
        args.keep_going,
        args.retry_failed,
        on_done=lambda: _retain(study, every_run),
    )


def _retain(study: Study, runs: Sequence[Run], **ensure: object) -> list[Path]:
    """A finished run's checkpoint diagnostics first (``analysis.enabled``), then retention may delete it."""
    try:
        diagnostics.ensure(study, runs, **ensure)  # type: ignore[arg-type]
    except Exception as err:  # the analysis must never fail a study: analyze retries while the checkpoint exists
        print(f"diagnostics failed ({type(err).__name__}: {err}); `study.py analyze` retries them", flush=True)
    return apply_retention(study, runs)


def _analyze(study: Study, args: Namespace) -> int:
    paths = analysis.write_analysis(study, *analysis_inputs(study))
    print(paths["md"].read_text())
    print("analysis: " + ", ".join(str(p) for p in paths.values()), flush=True)
    if args.rehearse:
        gaps = analysis.gaps(study)
        print("rehearsal: " + ("; ".join(gaps) if gaps else "every section of the analysis is filled"))
        return 1 if gaps else 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status (0 ok, 1 a run failed, 2 the study definition is wrong)."""
    try:
        command, args = parse_args(argv)
        study = load_study(args.config)
        if args.rehearse:  # from here on the working directory is the rehearsal's workspace
            study = rehearsal.prepare(study, args.workspace)
        runs = plan(study, args.only, args.targets, args.protocols)
        if args.rank_conditions:  # only what the ranking reads: the start and intermediate phases
            runs = [r for r in runs if r.phase in ("start", "intermediate")]
        if command == "status":
            return 1 if print_status(study, runs).get("failed") else 0
        if command == "analyze":
            return _analyze(study, args)
        missing = [c for c in study.config_files() if not Path(c).is_file()]
        if args.dry_run:
            if args.verbose:
                _print_runs(study, runs)
            if args.probe and missing:
                raise StudyError("--probe needs the config files: " + ", ".join(missing))
            if args.probe:
                for phase, rate in measure(study, runs, args.probe).items():
                    study.resources[phase] = replace(study.resources_for(phase), seconds_per_step=rate)
            done = {r.name: finished(r) is not None for r in runs}
            print("\n".join(summary_lines(study, runs, done, args.verbose)))
        if missing and not args.report_only:
            raise StudyError(
                "Config file(s) not found (paths are relative to the working directory): " + ", ".join(missing)
            )
        every_run = plan(study)
        changed, unknown = fingerprint.changed_runs(study, every_run)
        if changed and (args.dry_run or args.report_only):
            print(
                f"changed: {len(changed)} finished run(s) were made with other settings than the study's now "
                "(a run without --dry-run/--report-only lists them; --rerun-changed redoes them)"
            )
        if args.dry_run:
            return 0
        if changed and not args.report_only:
            if not args.rerun_changed:
                raise StudyError(_changed_message(changed))
            for run in every_run:
                if run.name in changed and run.run_dir.is_dir():
                    print(f"rerun (settings changed): {run.name} (the old run is kept in {supersede(run)})", flush=True)
        if unknown and not args.report_only:
            print(
                f"note: {len(unknown)} finished run(s) have no fingerprint.json (made before fingerprints were "
                "recorded): their settings are not compared",
                flush=True,
            )
    except StudyError as err:
        print(f"study: {err}", file=sys.stderr)
        return 2
    estimate = power(study, collect(study)[0].get("test", []))
    if estimate and not args.report_only:
        print("power (from the baseline's finished runs):\n  " + "\n  ".join(power_lines(estimate)))
    try:
        failures = [] if args.report_only else _execute(study, runs, args)
    except StudyError as err:
        failures = [str(err)]
    except KeyboardInterrupt:
        print("study: interrupted; run the same command again to resume (finished runs are skipped)", file=sys.stderr)
        return 130
    deleted = _retain(study, plan(study))
    if deleted:
        print(f"retention (keep: {study.retention.keep}): deleted {len(deleted)} checkpoint(s) no run needs any more")
    if failures:
        print("study: " + "\n\n".join(failures), file=sys.stderr)
        return 1
    if args.executor == "slurm" and args.cluster == "slurm" and not args.wait:
        print("jobs submitted: `python study.py status --config ...` shows them; rerun with --report-only at the end")
        return 0
    if args.rank_conditions:
        every_run = plan(study)
        diagnostics.ensure(study, every_run, force=True, phases=("start", "intermediate"))
        print("conditions ranked by LogME of their intermediate checkpoint (the baseline: the start), per target:")
        print("  " + "\n  ".join(analysis.ranking_lines(study, analysis.logme_table(study, every_run))), flush=True)
        return 0
    paths = write_report(study)
    print(paths["md"].read_text())
    print("report: " + ", ".join(str(p) for p in paths.values()), flush=True)
    if args.rehearse:
        gaps = rehearsal.verdict(study)
        print("rehearsal: " + ("; ".join(gaps) if gaps else "every target and protocol has numbers, no run missing"))
        return 1 if gaps else 0
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `study.py --dry-run --verbose | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        sys.exit(0)
