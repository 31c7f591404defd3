"""The training step and the training epoch, written once for everything that trains: `python -m hsvlt.train`
(hsvlt/train.py), quantisation-aware training (quant/qat.py), the GPU throughput measurement
(scripts/gpu_throughput.py), the training-speed report (reports/train_speed.py) and the evidence study's
learning signals (reports/ablation.py).

One step (`Engine.step`):

    forward under autocast (bf16, or float16 with the gradient scaler; None: float32)
    -> the loss in float32 (plus, with a teacher, the distillation term) -> refuse a non-finite loss
    -> backward through the gradient scaler -> clip the true (unscaled) gradients
    -> optimizer step (skipped by the scaler when float16 gradients overflowed) -> schedule step -> EMA update

and every LABEL_SCALE_EVERY steps, with a TrainingWatch, the label tokens' RMS recorded on that step's forward.
One epoch (`Engine.train_epoch`): the loader's batches through the step with a progress bar, the loss averaged
over every process's images. Under torchrun the model is wrapped in DistributedDataParallel (`wrap_for`), which
averages the gradients during backward; everything else is the same in one process or many.

`Engine.for_config` builds what hsvlt.train's TrainConfig says (AdamW with per-group learning rates, warm-up and
cosine, EMA, the loss); the other callers build the parts they need.
"""

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from hsvlt import distributed
from hsvlt.data.base import to_model_input
from hsvlt.evaluate import autocast, autocast_dtype
from hsvlt.losses import BCELoss, build_loss, distillation_loss
from hsvlt.models.classifier import is_backbone
from hsvlt.models.ivla import recording_block_scales
from hsvlt.run_log import LABEL_SCALE_EVERY, TrainingWatch

CPU_PLACEMENT = distributed.Placement(torch.device("cpu"))


# ---- what an optimiser trains ------------------------------------------------------------------------------

class TrainSettings(Protocol):
    """What the engine reads of a run's settings (`parameter_groups`, `Engine.for_config`), resolved: no None
    where a recipe fills it in. A resolved hsvlt.train.TrainConfig (`.resolved()`) is one; the engine names the
    fields instead of importing it, because hsvlt.train builds on the engine."""

    lr: float
    backbone_lr_scale: float
    weight_decay: float
    freeze_stages: int
    epochs: int
    warmup_epochs: float
    schedule: str  # "cosine" or "plateau"
    loss: str
    clip_grad: float
    ema: float  # decay per step; 0: no EMA
    no_amp: bool


def stage_of(name: str) -> int:
    """The backbone stage (0-3) a parameter or module name belongs to; -1 outside the stages."""
    return int(name.split(".")[1]) if name.startswith("stages.") else -1


def parameter_groups(model: torch.nn.Module, config: TrainSettings) -> list[dict]:
    """AdamW groups: backbone vs the rest (own learning rates), and no weight decay on 1-D tensors
    (norms, biases, layer scales). Frozen stages' backbone weights are left out entirely."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        backbone = is_backbone(name)
        if backbone and stage_of(name) < config.freeze_stages:
            parameter.requires_grad_(False)
            continue
        groups.setdefault((backbone, parameter.ndim > 1), []).append(parameter)
    return [
        {"params": params, "lr": config.lr * (config.backbone_lr_scale if backbone else 1.0),
         "weight_decay": config.weight_decay if decay else 0.0}
        for (backbone, decay), params in sorted(groups.items())
    ]


def freeze_batch_norm_statistics(model: torch.nn.Module, frozen_stages: int) -> None:
    """Put the batch norms of frozen backbone stages in eval mode (call after model.train()): frozen weights
    keep their ImageNet running statistics instead of drifting with each batch."""
    for name, module in model.named_modules():
        if (isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and is_backbone(name)
                and stage_of(name) < frozen_stages):
            module.eval()


def warmup_cosine(total_steps: int, warmup_steps: int, cosine: bool):
    """LambdaLR factor: linear warm-up over `warmup_steps`, then a cosine to 1% of the peak at `total_steps`
    (or flat, where a plateau schedule takes over)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine:
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def wrap_for(model: torch.nn.Module, placement: distributed.Placement) -> torch.nn.Module:
    """The module a step calls: `model` itself in one process, DistributedDataParallel under torchrun (build it
    after the optimiser's groups have frozen what they freeze: DDP keeps the parameters that need gradients
    when it is built)."""
    if not placement.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[placement.device.index]
                                   if placement.device.type == "cuda" else None)


def logits_of(outputs) -> torch.Tensor:
    """The logits of a forward: a model with attention outputs (the deployable form kept with an attention
    stage) returns (logits, maps)."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def device_batches(loader: Iterable, device: torch.device, input_format: torch.memory_format = torch.channels_last,
                   limit: int | None = None, unreadable: dict | None = None):
    """(images float N x 3 x S x S in [0, 1] in `input_format`, targets) on `device`, of the loader's first `limit`
    batches (all: None); what could not be read goes into `unreadable` (dataset index -> why) and is skipped."""
    for number, batch in enumerate(loader):
        if limit is not None and number >= limit:
            return
        if unreadable is not None:
            unreadable.update(batch["bad"])
        if batch["images"] is None:
            continue
        images = to_model_input(batch["images"], device).contiguous(memory_format=input_format)
        yield images, batch["targets"].to(device, non_blocking=True)


@dataclass
class EpochResult:
    loss: float  # mean training loss per image, over every process
    images: int  # images trained on, over every process
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


class Engine:
    """One model's training: its step and its epoch. `model` is the module whose parameters train (clipped, EMA'd,
    checked for their stages); `net` what the step calls (the DDP wrapper of `model`, or `model`)."""

    def __init__(self, model: torch.nn.Module, loss_fn: torch.nn.Module,
                 optimizer: torch.optim.Optimizer | None = None, *, net: torch.nn.Module | None = None,
                 placement: distributed.Placement = CPU_PLACEMENT, amp_dtype: torch.dtype | None = None,
                 clip_grad: float = 0.0, schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
                 schedule_until: int | None = None, ema: AveragedModel | None = None,
                 teacher: torch.nn.Module | None = None, distill: float = 0.0, watch: TrainingWatch | None = None,
                 training_mode: Callable[[bool], None] | None = None,
                 input_format: torch.memory_format = torch.channels_last):
        self.model, self.net, self.loss_fn, self.optimizer = model, net or model, loss_fn, optimizer
        self.placement, self.device = placement, placement.device
        self.amp_dtype, self.clip_grad = amp_dtype, clip_grad
        # float16 loses small gradients to underflow unless the loss is scaled; disabled (bf16, float32), the
        # scaler passes every call straight through.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        # The schedule steps every step, or only for its first `schedule_until` (the warm-up before a plateau
        # schedule, stepped by the caller once per epoch, takes over).
        self.schedule, self.schedule_until = schedule, schedule_until
        self.ema = ema
        # Distillation: (1 - distill) x the labels' loss + distill x the binary KL to the teacher's probabilities.
        self.teacher, self.distill = teacher, distill
        self.watch = watch
        # How the model switches between training and evaluation: Module.train, or for a captured PT2E graph,
        # which has no such switch of its own, hsvlt.quant.pt2e.train_mode.
        self.training_mode = training_mode or self.net.train
        # The layout the step hands images over in: channels_last for eager convolutions' fast path; a captured
        # graph takes them contiguous, as it was traced.
        self.input_format = input_format
        self.steps_taken = 0  # where the schedule does not count them

    @classmethod
    def for_config(cls, model: torch.nn.Module, config: TrainSettings,
                   placement: distributed.Placement = CPU_PLACEMENT, steps_per_epoch: int | None = None,
                   watch: TrainingWatch | None = None) -> "Engine":
        """hsvlt.train's step for `config`: AdamW over parameter_groups, autocast unless config.no_amp, the
        configured loss and clipping, EMA where config.ema, and with `steps_per_epoch` the warm-up + cosine
        schedule (warm-up only with config.schedule "plateau"). `model` already on placement's device."""
        ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
               if config.ema else None)
        # One fused kernel over all parameters rather than a loop of small ops per tensor.
        optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr,
                                      fused=placement.device.type in ("cpu", "cuda"))
        schedule, warmup = None, None
        if steps_per_epoch is not None:
            warmup = int(config.warmup_epochs * steps_per_epoch)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, warmup_cosine(config.epochs * steps_per_epoch, warmup, config.schedule == "cosine"))
        return cls(model, build_loss(config.loss), optimizer, net=wrap_for(model, placement), placement=placement,
                   amp_dtype=autocast_dtype(placement.device, not config.no_amp, cpu=True),
                   clip_grad=config.clip_grad, schedule=schedule,
                   schedule_until=warmup if config.schedule != "cosine" else None, ema=ema, watch=watch)

    # ---- one step ----------------------------------------------------------------------------------------
    @property
    def step_number(self) -> int:
        """Steps taken so far (the schedule's count where there is one: it is what a resumed run restores)."""
        return self.schedule.last_epoch if self.schedule is not None else self.steps_taken

    def forward(self, images: torch.Tensor, targets: torch.Tensor, record: bool = False):
        """The loss of one batch (float32, a graph to backward through) and, with `record`, what each IVLA block
        handed on in this forward (hsvlt.models.ivla.recording_block_scales; empty otherwise)."""
        with (recording_block_scales(self.model, enabled=record) as scales, autocast(self.device, self.amp_dtype)):
            logits = logits_of(self.net(images)).float()
            teacher_logits = None
            if self.distill > 0:
                with torch.no_grad():
                    teacher_logits = logits_of(self.teacher(images)).float()
        loss = self.loss_fn(logits, targets)
        if teacher_logits is not None:
            loss = (1 - self.distill) * loss + self.distill * distillation_loss(logits, teacher_logits)
        return loss, scales

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of `loss` (scaled in float16), the previous ones cleared."""
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.model.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def update(self) -> None:
        """Clip, step the optimizer and the schedule, update the EMA."""
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
        self.scaler.update()
        if self.schedule is not None and (self.schedule_until is None
                                          or self.schedule.last_epoch < self.schedule_until):
            self.schedule.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.steps_taken += 1

    def step(self, images: torch.Tensor, targets: torch.Tensor) -> float:
        """One training step on a batch already on the device; returns its loss. A non-finite loss stops the
        run before it reaches the weights."""
        step = self.step_number
        loss, scales = self.forward(images, targets,
                                    record=self.watch is not None and step % LABEL_SCALE_EVERY == 0)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step + 1}; lower --lr")
        value = loss.item()
        if self.watch is not None:
            self.watch.step(step, value, scales)
        self.backward(loss)
        self.update()
        return value

    # ---- one epoch ---------------------------------------------------------------------------------------
    def batches(self, loader: Iterable, limit: int | None = None, unreadable: dict | None = None):
        """The loader's batches as this step takes them (device_batches)."""
        return device_batches(loader, self.device, self.input_format, limit, unreadable)

    def train_epoch(self, loader, desc: str, limit: int | None = None, unreadable: dict | None = None,
                    freeze: Callable[[], None] | None = None,
                    after_step: Callable[[], None] | None = None) -> EpochResult:
        """Train on the loader's batches (its first `limit`) with a progress bar. `freeze` runs once the model is
        in training mode (what this epoch keeps fixed: frozen stages' batch norms, observers); `after_step` after
        every step (checkpoints, stop requests: an exception it raises ends the epoch there)."""
        self.training_mode(True)
        if freeze is not None:
            freeze()
        total, count, started = 0.0, 0, time.perf_counter()
        steps = len(loader) if limit is None else min(limit, len(loader))
        with tqdm(self.batches(loader, limit, unreadable), total=steps, desc=desc, leave=False,
                  disable=not self.placement.is_main) as progress:
            for images, targets in progress:
                loss = self.step(images, targets)
                total += loss * len(images)
                count += len(images)
                progress.set_postfix(loss=f"{total / count:.3f}", lr=f"{self.learning_rate:.2e}")
                if after_step is not None:
                    after_step()
        elapsed = time.perf_counter() - started
        loss_sum, image_count = (sum(x) for x in zip(*distributed.gather_objects((total, count), self.placement)))
        return EpochResult(loss_sum / max(image_count, 1), image_count, elapsed)

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def learning_signals(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
    """One batch forward and backward through hsvlt.engine's step, nothing updated: per backbone stage the
    gradient norm of its weights, the RMS of the label tokens L after each of its interaction blocks, and the RMS
    of L and of the multi-modal feature S that its last block hands on. Shows whether a stage still learns (its
    gradient) and whether L or S has blown up or died out."""
    engine = Engine(model, BCELoss())
    engine.training_mode(True)
    loss, scales = engine.forward(images, targets, record=True)
    engine.backward(loss)
    grad = {}
    for name, parameter in model.named_parameters():
        if parameter.grad is not None and stage_of(name) >= 0:
            grad[stage_of(name)] = grad.get(stage_of(name), 0.0) + float(parameter.grad.pow(2).sum())
    model.zero_grad(set_to_none=True)
    model.eval()
    # stage -> (L, S) per block; the interaction of late fusion counts as the last stage
    per_stage = {int(stage) if stage.isdigit() else len(grad) - 1: blocks for stage, blocks in scales.items()}
    stages = sorted(per_stage)
    return {"grad_norm": [grad[i] ** 0.5 for i in sorted(grad)],
            "L_rms_blocks": [[labels for labels, _ in per_stage[i]] for i in stages],
            "L_rms": {str(i): per_stage[i][-1][0] for i in stages},
            "S_rms": {str(i): per_stage[i][-1][1] for i in stages}}
