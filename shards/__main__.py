"""``python -m shards {build,list,inspect,verify}``: build shards from a dataset or the demo world, list the
converters, look, check."""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path


def _parse_fields(pairs: list[str] | None) -> dict[str, str]:
    fields = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--field {pair!r}: expected NAME=SOURCE_FIELD, e.g. --field text=sentence1")
        fields[name] = value
    return fields


def _converters() -> dict:
    try:
        from shards.converters import CONVERTERS
    except ImportError as err:
        raise SystemExit(f"Cannot load the dataset converters ({err}); only `build demo` is available.") from err
    return CONVERTERS


def _paragraphs(convert: object) -> list[str]:
    """A converter's docstring as paragraphs, each on one line, without reST markup."""
    doc = re.sub(r":\w+:`([^`]+)`", r"\1", (getattr(convert, "__doc__", None) or "").replace("``", ""))
    return [" ".join(p.split()) for p in doc.strip().split("\n\n") if p.strip()]


def summary(convert: object) -> str:
    """A converter's one-line description (the first paragraph of its docstring): the files it reads."""
    return next(iter(_paragraphs(convert)), "(no description)")


def expects(convert: object) -> list[str]:
    """The rest of the docstring: file layout, images, split names."""
    return _paragraphs(convert)[1:]


def converter_lines() -> str:
    """``demo`` and every converter, one line each (``build --help``)."""
    try:
        converters = _converters()
    except SystemExit as err:
        return str(err)
    lines = ["datasets:", "  demo            the demo world (pictures of shapes, four languages)"]
    lines += [f"  {name:<15} {summary(convert)}" for name, convert in converters.items()]
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    for name, convert in _converters().items():
        print(f"{name}: {summary(convert)}")
        for paragraph in expects(convert):
            print(textwrap.fill(paragraph, 116, initial_indent="    ", subsequent_indent="    "))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    if args.dataset == "demo":
        from shards.demo import build_demo

        out = build_demo(Path(args.out), size=args.size, seed=args.seed, workers=args.workers, progress=True)
        print(f"demo world written to {out}")
        return 0
    converters = _converters()
    if args.dataset not in converters:
        raise SystemExit(f"Unknown dataset {args.dataset!r}. Valid names: demo, {', '.join(sorted(converters))}")
    kwargs = dict(
        src=args.src,
        images=args.images,
        out=args.out,
        split=args.split,
        lang=args.lang,
        workers=args.workers,
        allow_missing=args.allow_missing,
        max_per_shard=args.max_per_shard,
        max_side=args.max_side,
    )
    if args.exclude:  # img2dataset: the xFlickr&CO test set whose images the start phase must not see
        kwargs["exclude"] = args.exclude
    fields = _parse_fields(args.field)
    if fields:
        kwargs["fields"] = fields
    converters[args.dataset](**kwargs)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from shards.inspect import MAX_SAMPLES_PER_SPLIT, inspect_dir
    from shards.manifest import shard_dirs

    for directory in shard_dirs(args.dir):
        inspect_dir(directory, limit=None if args.all else MAX_SAMPLES_PER_SPLIT)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from shards.manifest import shard_dirs
    from shards.verify import verify_dir

    failed = False
    for directory in shard_dirs(args.dir):
        problems = verify_dir(directory)
        failed |= bool(problems)
        print(f"{directory}: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shards", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser(
        "build",
        help="convert a dataset (or generate the demo world) into tar shards",
        epilog=converter_lines() + "\n\nThe files each converter expects: python -m shards list; docs/real_data.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("dataset", help="'demo' or a converter name (listed below)")
    build.add_argument("--out", required=True, help="output directory")
    build.add_argument("--src", help="the dataset's annotation file or directory")
    build.add_argument("--images", help="directory holding the dataset's images")
    build.add_argument("--split", help="only this split (default: all)")
    build.add_argument("--lang", help="only this language (default: all)")
    build.add_argument("--workers", type=int, default=0, help="processes writing shards (0: this process)")
    build.add_argument("--max-per-shard", type=int, default=2000, help="most samples per tar")
    build.add_argument("--max-side", type=int, default=384, help="bound on each image's short side in pixels")
    build.add_argument("--allow-missing", action="store_true", help="skip records whose image file is missing")
    build.add_argument("--field", action="append", metavar="NAME=SOURCE", help="field mapping (generic JSONL)")
    build.add_argument(
        "--exclude",
        action="append",
        metavar="XFLICKRCO",
        help="img2dataset: drop xFlickr&CO test images (its shard dir or annotation .jsonl; 'none')",
    )
    build.add_argument("--size", choices=["small", "full"], default="full", help="demo world size")
    build.add_argument("--seed", type=int, default=0, help="demo world seed")
    build.set_defaults(func=cmd_build)

    listing = sub.add_parser("list", help="every converter with the source files it expects")
    listing.set_defaults(func=cmd_list)

    for name, func, text in (
        ("inspect", cmd_inspect, "counts, label distribution and one sample of a shard directory"),
        ("verify", cmd_verify, "check shards against the manifest (exist, sha256, counts, readable)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("dir", help="a shard directory, or a directory of them (the demo world)")
        if name == "inspect":
            cmd.add_argument(
                "--all",
                action="store_true",
                help="count the labels of every sample (default: the first 20,000 of each split)",
            )
        cmd.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        # The writer's and converters' messages name the file or key and the fix: no traceback needed.
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
