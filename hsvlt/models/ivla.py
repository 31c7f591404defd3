"""Interactive Visual-Linguistic Attention (IVLA): one interaction step between image and label tokens, and
beside it its deployable form (the layer_norm, attention and label_constants rewrites of
hsvlt/models/deployable.py).

Attention is written as matmul -> softmax -> matmul with separate q/k/v Linear layers on purpose:
F.scaled_dot_product_attention decomposes into ops XNNPACK does not delegate, and a packed in-projection
(nn.MultiheadAttention) breaks quantised lowering. See docs/DESIGN.md section 5.
"""

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from hsvlt.models.convnext import DropPath, LayerNorm2d, rewrite_visual
from hsvlt.models.deployable import (
    ChannelNorm,
    Rewrites,
    TokenNorm,
    constant,
    fold_input_affine,
    linear_from,
    pointwise,
)

# The layer_scale update's starting scale of the gated branch: a saturated gate then grows L by 1% per block, not
# 2x, until training has learned a larger scale.
LAYER_SCALE_INIT = 1e-2


class Attention(nn.Module):
    """Multi-head attention of `queries` over `context`; no q/k/v bias, softmax over the context axis."""

    def __init__(self, dim: int, num_heads: int = 1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:  # B N d -> B h N d/h
        batch, tokens, dim = x.shape
        return x.reshape(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # queries: B Q d, context: B K d
        q = self.split_heads(self.query(queries)) * self.scale
        k = self.split_heads(self.key(context))
        v = self.split_heads(self.value(context))
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)  # B h Q K
        out = (attn @ v).transpose(1, 2).flatten(2)  # B Q d
        return self.proj(out), attn


class GatedResidual(nn.Module):
    """The language update: label tokens L (B C d) and the block's multi-modal feature M (its S, after drop path)
    -> the next label tokens. Every form gates with g(x) = tanh(W2 ReLU(W1 x)) (no biases); `kind`, a value of
    HSVLTConfig.language_update, says where:

        paper        x = L + M;  L <- x + g(x) * x          the paper's self-gated residual. Nothing pulls the
                                                            scale of L back: a saturated gate doubles it in
                                                            every block (docs/RESULTS.md measures it)
        update_gate  L <- L + M + g(M) * M                  the gate on the update, not on the state: L grows
                                                            by at most 2|M| per block, additively
        layer_scale  x = L + M;  L <- x + gamma * g(x) * x  the paper's, with a per-channel scale on the gated
                                                            branch started at LAYER_SCALE_INIT (CaiT's LayerScale)
        post_norm    x = L + M;  L <- LayerNorm(x + g(x) * x)

    ("stage_norm" keeps the paper's update here; IVLABlock normalises L where it enters each stage.)
    """

    def __init__(self, dim: int, kind: str = "paper"):
        super().__init__()
        self.kind = kind
        self.gate = nn.Sequential(
            nn.Linear(dim, dim, bias=False), nn.ReLU(), nn.Linear(dim, dim, bias=False), nn.Tanh()
        )
        self.scale = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT)) if kind == "layer_scale" else None
        self.norm = nn.LayerNorm(dim) if kind == "post_norm" else None

    def forward(self, labels: torch.Tensor, update: torch.Tensor) -> torch.Tensor:  # B C d, B C d -> B C d
        if self.kind == "update_gate":
            return labels + update + self.gate(update) * update
        x = labels + update
        if self.scale is not None:
            return x + self.scale * self.gate(x) * x
        x = x + self.gate(x) * x
        return x if self.norm is None else self.norm(x)

    def deployable(self, rewrites: Rewrites) -> "GatedResidual":
        """This update for export: post_norm's LayerNorm rewritten as the other norms are (split_norm)."""
        if self.norm is None:
            return self
        export = copy.deepcopy(self)
        export.norm, _ = split_norm(self.norm, self.norm.normalized_shape[0], False, rewrites, fold=False)
        return export


class VisualFeedback(nn.Module):
    """Optional: visual tokens attend to label tokens. Its output projection starts at zero
    (IVLABlock.reset_residual_branches), so a model with feedback on computes exactly what the reference
    (feedback off) computes at step 0."""

    def __init__(self, dim: int, num_heads: int = 1):
        super().__init__()
        self.attention = Attention(dim, num_heads)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # tokens: B HW d, labels: B C d -> update of the visual map, B d H W
        update, _ = self.attention(tokens, labels)
        return update.transpose(1, 2).unflatten(2, (height, width))


class IVLABlock(nn.Module):
    """One interaction step: update the visual map, let each label attend to it, form the multi-modal
    feature S and update the label tokens.

    `visual` is the visual update (a ConvNeXt block, or a group of MBConv blocks for EfficientNet-Lite).
    Returns (V, L, S, attention) with V: B d H W, L and S: B C d, attention: B heads C HW.
    The model's last block is built with `final=True`: only its S is used, so it updates neither L nor V.

    `pre_norm` puts a LayerNorm on the label tokens and on the visual tokens where they enter the
    cross-attention (and the language projection): S then no longer scales with |L|. It does not bound L itself;
    `language_update` (GatedResidual's kinds) does. With `language_update="stage_norm"` the block built with
    `stage_entry=True` (the first of its stage) normalises the label tokens it is given, before anything else.
    """

    def __init__(
        self,
        visual: nn.Module,
        dim: int,
        num_heads: int = 1,
        drop_path: float = 0.0,
        visual_feedback: bool = False,
        final: bool = False,
        pre_norm: bool = True,
        language_update: str = "paper",
        stage_entry: bool = False,
    ):
        super().__init__()
        self.visual = visual
        self.entry_norm = nn.LayerNorm(dim) if language_update == "stage_norm" and stage_entry else None
        self.label_norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()
        self.token_norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()
        self.cross_attention = Attention(dim, num_heads)
        self.language_proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU())  # W_l
        self.multimodal_proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU())  # W_m
        self.language_gate = None if final else GatedResidual(dim, language_update)
        self.feedback = VisualFeedback(dim, num_heads) if visual_feedback and not final else None
        self.drop_path = DropPath(drop_path)

    def reset_residual_branches(self) -> None:
        """Close the language gate (tanh(0) = 0) and the visual feedback at initialisation: the block then
        starts as L <- L + S and V unchanged, and the gates open as training finds them useful. The layer_scale
        update keeps its gate open and starts its scale small instead, as LayerScale does."""
        if self.language_gate is not None and self.language_gate.scale is None:
            nn.init.zeros_(self.language_gate.gate[2].weight)
        if self.feedback is not None:
            nn.init.zeros_(self.feedback.attention.proj.weight)
            nn.init.zeros_(self.feedback.attention.proj.bias)

    def forward(
        self, visual: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.entry_norm is not None:
            labels = self.entry_norm(labels)
        visual = self.visual(visual)  # B d H W
        tokens = self.token_norm(visual.flatten(2).transpose(1, 2))  # B HW d
        queries = self.label_norm(labels)  # B C d
        attended, attention = self.cross_attention(queries, tokens)  # B C d, B h C HW
        multimodal = self.multimodal_proj(self.language_proj(queries) * attended)  # B C d
        if self.language_gate is not None:
            labels = self.language_gate(labels, self.drop_path(multimodal))
        if self.feedback is not None:
            update = self.feedback(tokens, self.label_norm(labels), *visual.shape[-2:])
            visual = visual + self.drop_path(update)
        return visual, labels, multimodal, attention

    def deployable(self, rewrites: Rewrites, constant_labels: torch.Tensor | None = None,
                   pixel_side: bool = False) -> "ExportIVLABlock":
        """The same block for export (ExportIVLABlock): `constant_labels` (C x d) where the labels it is given are
        the same for every image (stage 1's first block), `pixel_side` to project the attention on the pixels."""
        return ExportIVLABlock(self, rewrites, constant_labels, pixel_side)


@contextmanager
def recording_block_scales(model: nn.Module, enabled: bool = True) -> Iterator[dict[str, list[tuple[float, float]]]]:
    """While active (and `enabled`), record what each IVLA block of `model` hands on: the dict yielded maps each
    stage ("0".."3", or "interaction" for late fusion) to, per block in order, the RMS of its label tokens L and of
    its multi-modal feature S. Hooks are added on entry and removed on exit, so a trainer that records one step in
    N pays nothing on the others."""
    record: dict[str, list[tuple[float, float]]] = {}
    if not enabled:
        yield record
        return

    def rms(tensor: torch.Tensor) -> float:
        return float(tensor.detach().float().pow(2).mean().sqrt())

    def remember(stage: str):
        def hook(_module, _inputs, outputs):
            record.setdefault(stage, []).append((rms(outputs[1]), rms(outputs[2])))
        return hook

    hooks = [module.register_forward_hook(remember(name.split(".")[1] if name.startswith("stages.") else
                                                   name.split(".")[0]))
             for name, module in model.named_modules() if isinstance(module, IVLABlock)]
    try:
        yield record
    finally:
        for hook in hooks:
            hook.remove()


# ---- deployable form -------------------------------------------------------------------------------------


def split_norm(norm: nn.Module, width: int, channels_first: bool, rewrites: Rewrites, fold: bool):
    """A pre-norm of IVLA (nn.LayerNorm or nn.Identity) on label tokens (B C d) or on the map (B d H W,
    `channels_first`) -> (module, (weight, bias)): with `fold` the module normalises only and the affine
    part is returned for the next layers to fold in; otherwise the module applies it (identity returned).
    With the layer_norm rewrite off the module is the native LayerNorm."""
    identity = (torch.ones(width), torch.zeros(width))
    if not isinstance(norm, nn.LayerNorm):
        return nn.Identity(), identity
    weight, bias = norm.weight.detach(), norm.bias.detach()
    if not rewrites.layer_norm:
        native = LayerNorm2d(width, eps=norm.eps) if channels_first else nn.LayerNorm(width, eps=norm.eps)
        native.load_state_dict(norm.state_dict())
        return native, identity
    kind = ChannelNorm if channels_first else TokenNorm
    if fold:
        return kind(width, norm.eps), (weight, bias)
    return kind(width, norm.eps, weight, bias), identity


def folded_projections(attention: Attention) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head h: query-key  QK_h = s Wq_h^T Wk_h and value-output VO_h = Wv_h^T Wo_h^T (each d x d), so that
    head h's scores are Q QK_h K^T and the output is sum_h A_h K VO_h + b (Q, K the raw inputs)."""
    heads, dim = attention.num_heads, attention.query.in_features
    size = dim // heads
    wq = attention.query.weight.detach() * attention.scale
    wk, wv, wo = attention.key.weight.detach(), attention.value.weight.detach(), attention.proj.weight.detach()
    rows = [slice(h * size, (h + 1) * size) for h in range(heads)]
    query_key = torch.stack([wq[r].T @ wk[r] for r in rows])  # h d d
    value_out = torch.stack([wv[r].T @ wo[:, r].T for r in rows])  # h d d
    return query_key, value_out


class LabelAttention(nn.Module):
    """Label tokens attend to the pixels of a B x d x H x W map; returns B x C x d and the attention
    B x C x heads x HW. Projections folded onto the label side (folded_projections), and with them the
    affine parts of the label and pixel pre-norms: a pixel-side bias adds the same score to every pixel
    (softmax ignores it) and, as attention weights sum to 1, a constant to the output. With `keys` (h C d,
    precomputed from constant labels) the scores are a 1 x 1 conv of the map. Rows are ordered label-major,
    (C h): every reshape is then a view (a transpose before a reshape of a dynamic batch leaves an
    undelegated view_copy). With `pixel_side` (one head; the label affine must then be applied to the labels
    already) the products are 1 x 1 convs of the map instead: keys QK p and values VO^T p + b per pixel p."""

    def __init__(self, attention: Attention, label_affine, pixel_affine, keys: torch.Tensor | None = None,
                 pixel_side: bool = False):
        super().__init__()
        query_key, value_out = folded_projections(attention)
        self.heads, dim = attention.num_heads, attention.query.in_features
        (label_weight, label_bias), (pixel_weight, pixel_bias) = label_affine, pixel_affine
        out_bias = attention.proj.bias.detach() + torch.einsum("e,hed->d", pixel_bias, value_out)
        query_key = query_key * pixel_weight  # QK_h diag(w_pixel)
        value_out = value_out * pixel_weight[:, None]  # diag(w_pixel) VO_h
        self.query_key = self.score_kernel = self.value_out = self.pixel_keys = self.pixel_values = None
        if pixel_side:
            self.pixel_keys = pointwise(query_key[0], torch.zeros(dim))
            self.pixel_values = pointwise(value_out[0].T, out_bias)
            return
        self.value_out = linear_from(value_out.permute(2, 0, 1).reshape(dim, self.heads * dim), out_bias)
        if keys is None:
            weight = query_key.permute(0, 2, 1).reshape(self.heads * dim, dim)  # L -> B C (h d): L QK_h
            self.query_key = fold_input_affine(linear_from(weight), label_weight, label_bias)
        else:
            keys = torch.einsum("hcd,hde->che", keys, query_key)  # (labels) QK_h diag(w_pixel), C h d
            self.score_kernel = constant(keys.reshape(-1, dim)[:, :, None, None])

    def forward(self, labels: torch.Tensor | None, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Shapes are written with -1 for the batch: a view of a symbolic size is not delegated.
        dim, height, width = visual.shape[1:]
        if self.pixel_keys is not None:  # one head
            scores = torch.bmm(labels, self.pixel_keys(visual).reshape(-1, dim, height * width))  # B C HW
            attention = scores.softmax(dim=-1)
            values = self.pixel_values(visual).reshape(-1, dim, height * width)  # B d HW
            mixed = torch.bmm(attention, values.transpose(1, 2))  # B C d
            return mixed, attention.reshape(-1, labels.shape[1], 1, height * width)
        pixels = visual.reshape(-1, dim, height * width)  # B d HW
        if self.score_kernel is not None:
            scores = F.conv2d(visual, self.score_kernel).reshape(-1, self.score_kernel.shape[0], height * width)
        else:
            keys = self.query_key(labels).reshape(-1, labels.shape[1] * self.heads, dim)  # B (C h) d
            scores = torch.bmm(keys, pixels)  # B (C h) HW
        attention = scores.softmax(dim=-1)
        classes = attention.shape[1] // self.heads
        mixed = torch.bmm(attention, pixels.transpose(1, 2)).reshape(-1, classes, self.heads * dim)  # B C (h d)
        return self.value_out(mixed), attention.reshape(-1, classes, self.heads, height * width)


class TokenAttention(nn.Module):
    """The model's own Attention over the flattened map (the `attention` rewrite switched off); its attention
    is returned as LabelAttention's, B x C x heads x HW."""

    def __init__(self, attention: Attention):
        super().__init__()
        self.attention = attention

    def forward(self, labels: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, attention = self.attention(labels, visual.flatten(2).transpose(1, 2))  # B C d, B h C HW
        return attended, attention.transpose(1, 2)


class PixelAttention(nn.Module):
    """Visual feedback: the pixels of B x d x H x W attend to label tokens B x C x d; returns the update,
    B x d x H x W. Projections folded onto the label side, K'_h = L QK_h^T and V'_h = L VO_h, with the label
    pre-norm's affine part. One linear layer per head, concatenated head-major (B (h C) d) so that the
    softmax over labels runs on the last axis without a transpose before a reshape (which leaves an
    undelegated view_copy with a dynamic batch)."""

    def __init__(self, attention: Attention, label_affine):
        super().__init__()
        query_key, value_out = folded_projections(attention)
        self.heads, dim = attention.num_heads, attention.query.in_features
        self.keys = nn.ModuleList(fold_input_affine(linear_from(qk), *label_affine) for qk in query_key)
        self.values = nn.ModuleList(fold_input_affine(linear_from(vo.T), *label_affine) for vo in value_out)
        self.bias = constant(attention.proj.bias.view(1, dim, 1, 1))

    @staticmethod
    def per_head(layers: nn.ModuleList, labels: torch.Tensor) -> torch.Tensor:  # B C d -> B (h C) d
        return torch.cat([layer(labels) for layer in layers], dim=1) if len(layers) > 1 else layers[0](labels)

    def forward(self, visual: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dim, height, width = visual.shape[1:]
        classes = labels.shape[1]
        pixels = visual.reshape(-1, dim, height * width).transpose(1, 2)  # B HW d
        keys, values = self.per_head(self.keys, labels), self.per_head(self.values, labels)
        scores = torch.bmm(pixels, keys.transpose(1, 2)).reshape(-1, height * width, self.heads, classes)  # B HW h C
        attention = scores.softmax(dim=-1).reshape(-1, height * width, self.heads * classes)
        update = torch.bmm(values.transpose(1, 2), attention.transpose(1, 2))  # B d HW, summed over heads
        return update.reshape(-1, dim, height, width) + self.bias


class TokenFeedback(nn.Module):
    """The model's own VisualFeedback on the flattened map (the `attention` rewrite switched off)."""

    def __init__(self, feedback: VisualFeedback):
        super().__init__()
        self.feedback = feedback

    def forward(self, visual: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.feedback(visual.flatten(2).transpose(1, 2), labels, *visual.shape[-2:])


class ExportIVLABlock(nn.Module):
    """IVLABlock with its visual update, pre-norms and attention rewritten. `constant_labels` (C x d, stage
    1's first block): the label pre-norm, the query-key product and the language projection are constants.
    `pixel_side`: the attention's projections go onto the pixels (LabelAttention), the label pre-norm then
    applies its affine part itself."""

    def __init__(self, block: IVLABlock, rewrites: Rewrites, constant_labels: torch.Tensor | None = None,
                 pixel_side: bool = False):
        super().__init__()
        dim = block.cross_attention.query.in_features
        pixel_side = pixel_side and rewrites.attention and constant_labels is None
        self.visual = rewrite_visual(block.visual, rewrites)
        fold = rewrites.attention  # the model's own Attention needs the affine parts applied
        self.label_norm, label_affine = split_norm(block.label_norm, dim, False, rewrites, fold and not pixel_side)
        self.pixel_norm, pixel_affine = split_norm(block.token_norm, dim, True, rewrites, fold)
        self.constant_labels = constant_labels is not None
        if not rewrites.attention:
            self.cross_attention = TokenAttention(block.cross_attention)
        elif self.constant_labels:
            with torch.no_grad():
                if block.entry_norm is not None:
                    constant_labels = block.entry_norm(constant_labels)
                queries = block.label_norm(constant_labels)  # C d
                self.register_buffer("labels", constant_labels.detach().clone())
                self.register_buffer("language", block.language_proj(queries).detach())  # C d
            keys = queries.detach().expand(block.cross_attention.num_heads, -1, -1)
            self.cross_attention = LabelAttention(block.cross_attention, label_affine, pixel_affine, keys)
        else:
            self.cross_attention = LabelAttention(block.cross_attention, label_affine, pixel_affine,
                                                  pixel_side=pixel_side)
        self.language_proj = None if self.constant_labels else nn.Sequential(
            fold_input_affine(block.language_proj[0], *label_affine), block.language_proj[1])
        self.multimodal_proj = block.multimodal_proj
        self.language_gate = None if block.language_gate is None else block.language_gate.deployable(rewrites)
        self.entry_norm = None  # folded into the constants of stage 1's first block
        if block.entry_norm is not None and not self.constant_labels:
            self.entry_norm, _ = split_norm(block.entry_norm, dim, False, rewrites, fold=False)
        self.feedback, self.pixel_affine = None, None
        if block.feedback is not None and rewrites.attention:
            self.feedback = PixelAttention(block.feedback.attention, label_affine)
            weight, bias = pixel_affine  # the feedback's queries are the normalised pixels, affine included
            self.pixel_affine = nn.ParameterList([constant(weight.view(1, dim, 1, 1)),
                                                  constant(bias.view(1, dim, 1, 1))])
        elif block.feedback is not None:
            self.feedback = TokenFeedback(block.feedback)

    def forward(self, visual: torch.Tensor, labels: torch.Tensor | None):
        visual = self.visual(visual)  # B d H W
        pixels = self.pixel_norm(visual)
        if self.constant_labels:
            attended, attention = self.cross_attention(None, pixels)  # B C d, B C h HW
            labels, language = self.labels, self.language
        else:
            if self.entry_norm is not None:
                labels = self.entry_norm(labels)
            queries = self.label_norm(labels)
            attended, attention = self.cross_attention(queries, pixels)
            language = self.language_proj(queries)
        multimodal = self.multimodal_proj(language * attended)  # B C d
        if self.language_gate is not None:
            labels = self.language_gate(labels, multimodal)
        if self.feedback is not None:
            if self.pixel_affine is not None:
                pixels = pixels * self.pixel_affine[0] + self.pixel_affine[1]
            visual = visual + self.feedback(pixels, self.label_norm(labels))
        return visual, labels, multimodal, attention
