"""Where a training run's progress is written, for people and for tools: log.jsonl (one JSON line per epoch),
curves.png (loss and mAP per epoch), and TensorBoard event files in OUT/tensorboard when the tensorboard package
is installed (`pip install -e .[tensorboard]`): loss, learning rate, mAP, CF1, OF1 and throughput per epoch, the
training loss every LOSS_EVERY steps, and each class's AP at the end."""

import json
from pathlib import Path

from hsvlt.outputs import write_text
from hsvlt.plots import plot_curves

LOSS_EVERY = 50  # steps between TensorBoard points of the training loss
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

    def step(self, step: int, loss: float) -> None:
        if self.tensorboard is not None and step % LOSS_EVERY == 0:
            self.tensorboard.add_scalar("loss/train_step", loss, step)

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
