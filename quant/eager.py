"""torchao's eager QAT flow (quantize_ with QATConfig), measured against the PT2E flow of quant/qat.py by
`python quant/report.py --eager-study` (the reason PT2E is the default: quant/pt2e.py).

Every nn.Linear of the trained model is fake-quantised the way torchao's Int8DynamicActivationIntxWeightConfig
runs it: int8 weights per output channel, int8 activations quantised per token at run time (the eager flow has
no static int8 configuration). Training is quant/qat.py's loop; convert then swaps in the quantised weights.
Convolutions stay float (the configuration covers linear layers), and the model exports through the plain
wrapper, hsvlt.deploy.wrapper.DeployableHSVLT: the export-time rewrites (hsvlt/deploy/rewrites.py) fold float weights
into new layers and cannot fold quantised tensors.
"""

import argparse

import torch
from tqdm import tqdm

from hsvlt.checkpoint import load_model
from hsvlt.deploy.wrapper import DeployableHSVLT
from hsvlt.losses import build_loss
from quant.qat import loaders, optimizer_and_schedule, train_epoch, validation_map


def int8_config():
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerAxis

    return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))


def quantization_aware(args: argparse.Namespace) -> tuple[torch.nn.Module, list[dict]]:
    """Eager QAT of args.ckpt for args.epochs (at most args.max_steps each) at peak args.lr, cosine decay, as
    quant/qat.py trains. Returns the converted model (images -> logits) and the per-epoch log (fake-quantised
    validation mAP). The last epoch is kept: a converted model cannot train on, so there is no best-of."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    torch.manual_seed(args.seed)
    model, checkpoint = load_model(args.ckpt)
    train, sampler, val = loaders(checkpoint, model.config.img_size, args, augment=True)
    quantize_(model, QATConfig(int8_config(), step="prepare"))
    optimizer, schedule = optimizer_and_schedule(model, len(train), args)
    loss_fn, log = build_loss(args.loss), []
    for epoch in range(args.epochs):
        model.train()
        sampler.set_epoch(epoch)
        loss = train_epoch(model, train, optimizer, schedule, loss_fn, None, 0.0, args.max_steps,
                           f"eager QAT epoch {epoch + 1}/{args.epochs}")
        model.eval()
        fake_map = validation_map(model, val, "fake-quantised validate")
        log.append({"epoch": epoch + 1, "loss": loss, "fake_quantised_mAP": fake_map})
        tqdm.write(f"eager QAT epoch {epoch + 1}  loss {loss:.4f}  fake-quantised mAP {fake_map:6.2f}")
    quantize_(model, QATConfig(int8_config(), step="convert"))
    return model.eval(), log


def program(model: torch.nn.Module, img_size: int) -> torch.export.ExportedProgram:
    """The converted model as a batch-1 program (images in [0, 1] -> probabilities), for export/to_executorch.lower."""
    return torch.export.export(DeployableHSVLT(model).eval(), (torch.rand(1, 3, img_size, img_size),))
