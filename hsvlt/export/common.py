"""What the exporters share: their settings and flags (ExportConfig, export_parser, --int8)."""

import argparse
from dataclasses import dataclass
from pathlib import Path

from hsvlt.cli import int_between, non_negative_int, program
from hsvlt.export.parity import PARITY_SCENES


@dataclass
class ExportConfig:
    """What every export takes (export_parser): the checkpoint, the file to write, the attention output,
    the preset check and the parity check. Each exporter's config extends it with its own settings."""

    ckpt: Path
    out: Path
    attention_stage: int | None = None
    preset: str | None = None  # refuse a checkpoint of another preset
    parity_images: int = 32  # shipped scenes compared with PyTorch (0: none; at most len(PARITY_SCENES))


def export_parser(script: str, description: str, out_help: str, defaults: ExportConfig) -> argparse.ArgumentParser:
    """The parser of the exporter `script` (its module docstring as `description`), with the flags of
    ExportConfig, which every exporter takes; `defaults`: the exporter's own config's."""
    parser = argparse.ArgumentParser(prog=program(script), description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by hsvlt.train (best.pt)")
    parser.add_argument("--out", required=True, type=Path, help=out_help)
    parser.add_argument("--attention-stage", type=non_negative_int,
                        help="also output the label-to-pixel attention of this stage (0-3), N x C x h x w")
    parser.add_argument("--preset", help="refuse a checkpoint of another preset than this one")
    parser.add_argument("--parity-images", type=int_between(0, len(PARITY_SCENES)), default=defaults.parity_images,
                        help=f"scenes to compare with PyTorch on, 0..{len(PARITY_SCENES)} (0: skip)")
    return parser


def add_int8_argument(parser: argparse.ArgumentParser) -> None:
    """--int8, for the exporters that can take the int8 program quantised from the checkpoint
    (hsvlt.quant.pt2e.load_for_export)."""
    parser.add_argument("--int8", type=Path, help="int8 program made by quant/qat.py from this checkpoint (.pt2)")


def size_mb(path: Path) -> float:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    return path.stat().st_size / 1e6
