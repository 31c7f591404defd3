"""torchao's eager QAT flow (quantize_ with QATConfig), measured against the PT2E flow of quant/qat.py by
`python reports/quantization.py --eager-study` (the reason PT2E is the default: hsvlt/quant/pt2e.py).

Every nn.Linear of the trained model is fake-quantised the way torchao's Int8DynamicActivationIntxWeightConfig
runs it: int8 weights per output channel, int8 activations quantised per token at run time (the eager flow has
no static int8 configuration). Training is quant/qat.py's loop; convert then swaps in the quantised weights.
Convolutions stay float (the configuration covers linear layers), and the model exports through the plain
wrapper, hsvlt.deploy.wrapper.AsTrainedHSVLT: the export-time rewrites (HSVLT.deployable,
hsvlt/models/deployable.py) fold float weights into new layers and cannot fold quantised tensors.
"""

import torch
from tqdm import tqdm

from hsvlt.checkpoint import load_model
from hsvlt.deploy.wrapper import AsTrainedHSVLT
from hsvlt.losses import build_loss
from hsvlt.quant.qat import QuantizeConfig, loaders, optimizer_and_schedule, train_epoch, validation_map
from hsvlt.toolchain import quiet_toolchain_calls


@quiet_toolchain_calls()
def int8_config():
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerAxis

    return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))


def quantization_aware(config: QuantizeConfig) -> tuple[torch.nn.Module, list[dict]]:
    """Eager QAT of config.ckpt for config.epochs (at most config.max_steps each) at peak config.lr, cosine decay, as
    quant/qat.py trains. Returns the converted model (images -> logits) and the per-epoch log (fake-quantised
    validation mAP). The last epoch is kept: a converted model cannot train on, so there is no best-of."""
    with quiet_toolchain_calls():
        from torchao.quantization import quantize_
        from torchao.quantization.qat import QATConfig

    torch.manual_seed(config.seed)
    model, checkpoint = load_model(config.ckpt)
    train, sampler, val = loaders(checkpoint, model.config.img_size, config, augment=True)
    with quiet_toolchain_calls():
        quantize_(model, QATConfig(int8_config(), step="prepare"))
    optimizer, schedule = optimizer_and_schedule(model, len(train), config)
    loss_fn, log = build_loss(config.loss), []
    for epoch in range(config.epochs):
        model.train()
        sampler.set_epoch(epoch)
        loss = train_epoch(model, train, optimizer, schedule, loss_fn, None, 0.0, config.max_steps,
                           f"eager QAT epoch {epoch + 1}/{config.epochs}")
        model.eval()
        fake_map = validation_map(model, val, "fake-quantised validate")
        log.append({"epoch": epoch + 1, "loss": loss, "fake_quantised_mAP": fake_map})
        tqdm.write(f"eager QAT epoch {epoch + 1}  loss {loss:.4f}  fake-quantised mAP {fake_map:6.2f}")
    with quiet_toolchain_calls():
        quantize_(model, QATConfig(int8_config(), step="convert"))
    return model.eval(), log


@quiet_toolchain_calls()
def program(model: torch.nn.Module, img_size: int) -> torch.export.ExportedProgram:
    """The converted model as a batch-1 program (images in [0, 1] -> probabilities), for export/to_executorch.lower."""
    return torch.export.export(AsTrainedHSVLT(model).eval(), (torch.rand(1, 3, img_size, img_size),))
