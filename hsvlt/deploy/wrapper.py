"""The module every exporter and the quantiser trace: images in [0, 1] -> probabilities (and optionally one
stage's attention), with the label-only computations held as constants.

Contract of an exported model (docs/DESIGN.md section 3):
    input   "image": float32 RGB, N x 3 x H x W, values in [0, 1] (normalisation happens inside)
    output  "probabilities": N x C, sigmoid applied
    output  "attention" (optional): N x C x h x w label-to-pixel attention of one stage, each map sums to 1
"""

import torch
from torch import nn

from hsvlt.models.classifier import LabelQueryClassifier, MultiLabelClassifier
from hsvlt.models.deployable import Rewrites
from hsvlt.models.hsvlt import HSVLT
from hsvlt.toolchain import quiet_toolchain_calls


class AsTrainedHSVLT(nn.Module):
    """The trained model, not rewritten, as a deployed model is called: images in [0, 1] -> class probabilities
    (and optionally one stage's attention maps). It is the reference that the rewritten form
    (hsvlt.models.hsvlt.RewrittenHSVLT, which `for_export` builds) is held to, and the module traced for the
    models that have no rewrites.

    Where the model has label tokens (a LabelQueryClassifier), the label embeddings and the first language
    projection depend on the labels only; they are computed once here and held as a constant, so the exported
    graph carries neither the text encoder nor E. A model without them (fusion="none") runs on the images
    alone."""

    def __init__(self, model: MultiLabelClassifier, attention_stage: int | None = None, logits: bool = False):
        super().__init__()
        self.model = model.eval()
        self.attention_stage, self.logits = attention_stage, logits
        tokens = None
        if isinstance(model, LabelQueryClassifier):
            with torch.no_grad():
                tokens = model.encode_labels().detach().clone()  # C x d1
        self.register_buffer("label_tokens", tokens)

    def run_model(self, image: torch.Tensor, return_attention: bool):
        """The model's logits (and attention maps with `return_attention`), given the held label tokens."""
        if self.label_tokens is None:
            return self.model(image, return_attention)
        return self.model.forward_with_labels(image, self.label_tokens, return_attention)

    def forward(self, image: torch.Tensor):
        finish = (lambda logits: logits) if self.logits else torch.sigmoid
        if self.attention_stage is None:
            return finish(self.run_model(image, False))
        logits, attention = self.run_model(image, True)
        return finish(logits), attention[self.attention_stage].mean(dim=1)  # N x C, N x C x h x w


DeployableHSVLT = AsTrainedHSVLT  # the earlier name, kept for existing callers


@quiet_toolchain_calls()
def trace(module: nn.Module, img_size: int, max_batch: int | None = None) -> torch.export.ExportedProgram:
    """torch.export of a module taking images: a dynamic batch of 1..max_batch, traced at batch 2 (a program
    traced at batch 1 is specialised to it), or a fixed batch of 1 when max_batch is None (a camera's program,
    which XNNPACK then plans memory for exactly)."""
    if max_batch is None:
        return torch.export.export(module, (torch.rand(1, 3, img_size, img_size),))
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    return torch.export.export(module, (torch.rand(2, 3, img_size, img_size),), dynamic_shapes=({0: batch},))


def for_export(model: MultiLabelClassifier, attention_stage: int | None = None, rewrites: Rewrites | None = None,
               logits: bool = False) -> nn.Module:
    """The module every exporter and the quantiser trace: AsTrainedHSVLT's contract (images in [0, 1] ->
    probabilities, optionally attention) computed by a rewritten copy of `model` that the XNNPACK delegate
    runs whole (RewrittenHSVLT, built by HSVLT.deployable; hsvlt/models/deployable.py: folded norms, label-only
    computations as constants, ...). `logits` skips the final sigmoid (quantisation-aware training takes its
    loss on logits). The ablation baselines (config.fusion other than "ivla") have no rewrites: they get
    AsTrainedHSVLT."""
    if not isinstance(model, HSVLT):
        return AsTrainedHSVLT(model, attention_stage, logits).eval()
    return model.deployable(attention_stage, rewrites or Rewrites(), logits).eval()
