"""Training curves as a PNG."""

from pathlib import Path

from hsvlt.outputs import save_figure


def pyplot():
    """matplotlib with its file-only backend, imported when a plot is drawn (not for `--help`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def plot_curves(history: list[dict], path: str | Path) -> None:
    """Loss (train and validation) and validation mAP / CF1 / OF1 per epoch."""
    plt = pyplot()
    epochs = [entry["epoch"] for entry in history]
    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [entry["train_loss"] for entry in history], "o-", label="train")
    loss_axis.plot(epochs, [entry["val_loss"] for entry in history], "o-", label="validation")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    for key in ("mAP", "CF1", "OF1"):
        score_axis.plot(epochs, [entry[key] for entry in history], "o-", label=key)
    score_axis.set(xlabel="epoch", ylabel="percent", title="validation")
    for axis in (loss_axis, score_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
    plt.close(figure)
