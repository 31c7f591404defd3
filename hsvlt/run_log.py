"""Where a training run's progress is written, for people and for tools: log.jsonl (one JSON line per epoch),
curves.png (loss and mAP per epoch), and TensorBoard event files in OUT/tensorboard when the tensorboard package
is installed (`pip install -e .[tensorboard]`): loss, learning rate, mAP, CF1, OF1 and throughput per epoch, the
training loss every LOSS_EVERY steps, each stage's label-token RMS every LABEL_SCALE_EVERY steps, and each class's
AP at the end. TrainingWatch warns, once each, when the label tokens or the loss blow up."""

import json
from pathlib import Path

from tqdm import tqdm

from hsvlt.outputs import write_text
from hsvlt.plots import plot_curves

LOSS_EVERY = 50  # steps between TensorBoard points of the training loss
LABEL_SCALE_EVERY = 50  # steps between measurements of the label tokens' RMS (one step's forward hooks)
# Label tokens start at RMS ~1 (hsvlt.models.classifier's init). A bounded language update keeps them within a
# few units (docs/RESULTS.md), so past LABEL_RMS_WARN it has stopped bounding them. The paper's update, once its
# gate saturates, doubles them per block up to a plateau: the default run's seeds (README, Training) peaked at RMS
# 2000-4500 in the last two stages and learned, so for it the warning marks about twice the default run's largest,
# where the gradients behind the LayerNorms on L shrink by as much again.
LABEL_RMS_WARN = 50.0
PAPER_LABEL_RMS_WARN = 1e4


def label_rms_bound(language_update: str) -> float:
    """The label-token RMS past which a run of `language_update` (hsvlt.models.config.LANGUAGE_UPDATES) warns."""
    return PAPER_LABEL_RMS_WARN if language_update == "paper" else LABEL_RMS_WARN


# Training starts at the prior's loss (the head's bias is initialised to the class prevalence): a step whose loss is
# several times that has diverged, not merely met a hard batch.
LOSS_WARN_FACTOR = 3.0
SCALARS = {"train_loss": "loss/train", "val_loss": "loss/validation", "lr": "lr", "mAP": "validation/mAP",
           "CF1": "validation/CF1", "OF1": "validation/OF1", "images_per_s": "speed/train_images_per_s"}


class RunLog:
    def __init__(self, out: Path):
        self.out = out
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional extra is not installed: the JSON log and the plot still are written
            self.tensorboard = None
        else:
            self.tensorboard = SummaryWriter(str(out / "tensorboard"))

    def describe(self) -> str:
        """The start-up line: where the run is written and how to watch it."""
        watch = (f"watch it with: tensorboard --logdir {self.out}" if self.tensorboard is not None else
                 f"follow {self.out / 'log.jsonl'} (pip install tensorboard to watch it in TensorBoard)")
        return f"writing the run to {self.out}; {watch}"

    def epoch(self, history: list[dict]) -> None:
        """Rewrite log.jsonl and curves.png with every epoch so far; the last one goes to TensorBoard."""
        write_text(self.out / "log.jsonl", "".join(json.dumps(entry) + "\n" for entry in history))
        plot_curves(history, self.out / "curves.png")
        if self.tensorboard is not None:
            entry = history[-1]
            for key, tag in SCALARS.items():
                if entry.get(key) is not None:
                    self.tensorboard.add_scalar(tag, entry[key], entry["epoch"])
            self.tensorboard.flush()

    def finish(self, labels: list[str], average_precisions: list, epoch: int) -> None:
        """Each class's AP (percent) of the best epoch."""
        if self.tensorboard is not None:
            for label, ap in zip(labels, average_precisions):
                if ap is not None:
                    self.tensorboard.add_scalar(f"AP/{label}", ap, epoch)
            self.tensorboard.close()


class TrainingWatch:
    """Per-step signals of a run's health: the training loss and each stage's label-token RMS go to TensorBoard
    (on the main process), and a one-line warning, once per kind, when either blows up."""

    def __init__(self, log: RunLog | None, label_rms_bound: float = LABEL_RMS_WARN):
        self.log, self.label_rms_bound = log, label_rms_bound
        self.label_scale: dict[str, float] = {}  # the last measurement
        self.first_loss: float | None = None
        self.warned: set[str] = set()

    def step(self, step: int, loss: float, block_scales: dict[str, list[tuple[float, float]]]) -> None:
        """One training step's loss, and what hsvlt.models.ivla.recording_block_scales recorded on it (empty on
        the steps it does not record)."""
        label_scale = {stage: max(labels for labels, _ in blocks) for stage, blocks in block_scales.items()}
        if self.first_loss is None:
            self.first_loss = loss
        board = self.log.tensorboard if self.log is not None else None
        if board is not None and step % LOSS_EVERY == 0:
            board.add_scalar("loss/train_step", loss, step)
        if label_scale:
            self.label_scale = {stage: round(value, 3) for stage, value in label_scale.items()}
            if board is not None:
                for stage, value in label_scale.items():
                    board.add_scalar(f"label_tokens/rms_stage_{stage}", value, step)
            stage, largest = max(label_scale.items(), key=lambda item: item[1])
            if largest > self.label_rms_bound:
                self.warn("labels", f"the label tokens of stage {stage} reached RMS {largest:.0f} at step {step} "
                                    f"(healthy runs of this language update stay below {self.label_rms_bound:g}): "
                                    f"the update is compounding; train with a lower --lr or --update post_norm")
        if loss > LOSS_WARN_FACTOR * self.first_loss:
            self.warn("loss", f"the training loss reached {loss:.3g} at step {step}, {loss / self.first_loss:.1f}x "
                              f"its starting {self.first_loss:.3g}: the run is diverging; lower --lr")

    def warn(self, kind: str, message: str) -> None:
        if kind not in self.warned and self.log is not None:
            self.warned.add(kind)
            tqdm.write(f"warning: {message}")
