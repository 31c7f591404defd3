"""Export-time rewrites: a trained HSVLT -> a new module tree computing the same function with operators that
the XNNPACK delegate runs whole (and that Core ML and int8 quantisation take). `hsvlt.deploy.wrapper.for_export`
applies them, so the exporters and the quantiser trace the same graph; the trained model is not changed.

Each rewrite keeps the math (same outputs up to float rounding, tests/export/test_rewrites.py) and was kept
because it measured better (`python export/bench.py --ablation`, docs/EXPORT.md). At 224 px with 80 labels
the plain wrapper (hsvlt.deploy.wrapper.DeployableHSVLT) lowers to 40 XNNPACK subgraphs with 90 operators left
outside for hsvlt_nano (49 expand copies, 40 LayerNorms, 1 sum) and 14 / 26 for hsvlt_lite0; with the
rewrites, both lower to one subgraph with nothing outside it.

    normalisation    The input normalisation (x - mean) / std folded into the stem's conv where it does not pad
                     (ConvNeXt's 4 x 4 patchify; EfficientNet-Lite0's padded stem keeps it, zero padding would
                     change meaning): one subtract and one divide over the image fewer, ~0.02 ms of
                     hsvlt_nano's 15 by the operator profile, below the benchmark's noise.
    batch_norm       BatchNorm folded into the conv before it (EfficientNet-Lite0).
    layer_norm       XNNPACK 1.5 delegates no LayerNorm. Channel statistics are computed by a 1 x 1 conv with
                     weights 1/C (mean.dim is delegated only over H and W), the rest is sub, mul and rsqrt;
                     the variance is clamped to eps before rsqrt (a no-op in float, where the conv adds eps;
                     int8 rounds small variances to 0, and rsqrt(0) made QAT's loss NaN);
                     the affine part folds into the next 1 x 1 / unpadded conv, the layer scale into the last
                     one. The ConvNeXt block runs channels-first with 1 x 1 convs (no permutes).
    depthwise        XNNPACK's fast depthwise kernels take at most 25 taps; a 7 x 7 one (49) falls to a slow
                     path (56 x 56 x 48 map, one core: 3.2 ms, 0.67 ms split as here). The 7 x 7 kernel is
                     split by rows into three dilated kernels with symmetric padding, rows {0, 3, 6}, {1, 5}
                     and {2, 4} (21 + 14 + 14 taps), summed.
    attention        Label-to-pixel attention with its projections reassociated onto the label side:
                     scores = (L Wq' Wk) V^T and out = (A V) Wv' Wo' + b, where V are the raw pixel features.
                     Exact, and C x d^2 instead of HW x d^2 multiply-adds per projection (C labels, HW pixels).
                     Where the map has fewer pixels than there are labels (80 labels on hsvlt_nano's 7 x 7 map
                     at 224 px) and one head, the products go onto the pixel side instead: keys P QK^T and
                     values P VO, two 1 x 1 convs. Written with 3-D bmm: 4-D matmul leaves undelegated expand
                     copies.
    label_constants  Whatever depends on the labels only is computed once: stage 1's label tokens, the first
                     block's query-key product (its attention scores become a 1 x 1 conv of the image
                     features) and its language projection GELU(W_l L).
    head             CSA's per-class dot product as mul + a linear layer of ones (aten.sum is not delegated).
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hsvlt.models.convnext import ConvNeXtBlock, DropPath, LayerNorm2d
from hsvlt.models.csa import CrossScaleAggregation
from hsvlt.models.efficientnet_lite import fold_batch_norm
from hsvlt.models.hsvlt import HSVLT
from hsvlt.models.ivla import Attention, IVLABlock, VisualFeedback


@dataclass(frozen=True)
class Rewrites:
    """Which rewrites to apply (all by default; switching one off is for measuring it, or, for batch_norm,
    for quantisation-aware training, which simulates the folding itself)."""

    normalisation: bool = True
    batch_norm: bool = True
    layer_norm: bool = True
    depthwise: bool = True
    attention: bool = True
    label_constants: bool = True
    head: bool = True


def constant(tensor: torch.Tensor) -> nn.Parameter:
    """A detached copy as a parameter (trainable by quantisation-aware training, a constant once exported)."""
    return nn.Parameter(tensor.detach().clone())


# ---- normalisation ---------------------------------------------------------------------------------------


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of B x C x H x W without native_layer_norm: the mean and the variance
    are 1 x 1 convolutions with weights 1/C. The affine part is optional (often folded into the next layer)."""

    def __init__(self, width: int, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("average", torch.full((1, width, 1, 1), 1.0 / width))
        self.register_buffer("eps", torch.full((1,), eps))  # added as the variance conv's bias
        self.min_variance = eps
        self.weight = None if weight is None else constant(weight.view(1, width, 1, 1))
        self.bias = None if bias is None else constant(bias.view(1, width, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B C H W -> B C H W
        centred = x - F.conv2d(x, self.average)
        x = centred * torch.rsqrt(F.conv2d(centred * centred, self.average, self.eps).clamp(min=self.min_variance))
        return x if self.weight is None else x * self.weight + self.bias


def conv_after_affine(weight: torch.Tensor, bias: torch.Tensor, conv: nn.Conv2d) -> nn.Conv2d:
    """conv(weight * x + bias) (per input channel) as one conv; exact for a conv that does not pad."""
    folded = copy.deepcopy(conv)
    with torch.no_grad():
        shift = (conv.weight * bias.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        folded.weight.mul_(weight.view(1, -1, 1, 1))
        if folded.bias is None:
            folded.bias = constant(shift)
        else:
            folded.bias.add_(shift)
    return folded


def pointwise(weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A Linear's weight (out x in) and bias as a 1 x 1 conv."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1)
    conv.weight, conv.bias = constant(weight[:, :, None, None]), constant(bias)
    return conv


class SplitDepthwise7(nn.Module):
    """A 7 x 7 depthwise conv (padding 3) as the sum of three row-dilated depthwise convs of at most 25 taps
    (XNNPACK's fast kernels): kernel rows {0, 3, 6} (dilation 3), {1, 5} (dilation 4), {2, 4} (dilation 2)."""

    ROWS = ((0, 3, 6), (1, 5), (2, 4))
    DILATIONS = (3, 4, 2)

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.groups = conv.groups
        self.weights = nn.ParameterList(constant(conv.weight[:, :, list(rows)]) for rows in self.ROWS)
        self.bias = constant(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for weight, dilation, rows in zip(self.weights, self.DILATIONS, self.ROWS):
            part = F.conv2d(x, weight, self.bias if out is None else None, padding=(3 - rows[0], 3),
                            dilation=(dilation, 1), groups=self.groups)
            out = part if out is None else out + part
        return out


def splittable(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.groups == conv.in_channels == conv.out_channels
            and conv.kernel_size == (7, 7) and conv.padding == (3, 3) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.bias is not None)


class ExportConvNeXtBlock(nn.Module):
    """ConvNeXt block, channels-first: depthwise conv, ChannelNorm (affine folded into the first 1 x 1 conv),
    1 x 1 conv, GELU, 1 x 1 conv (layer scale folded in), residual."""

    def __init__(self, block: ConvNeXtBlock, rewrites: Rewrites):
        super().__init__()
        dim = block.dwconv.in_channels
        self.dwconv = SplitDepthwise7(block.dwconv) if rewrites.depthwise and splittable(block.dwconv) else block.dwconv
        w1, b1 = block.pwconv1.weight.detach(), block.pwconv1.bias.detach()
        if rewrites.layer_norm:
            self.norm = ChannelNorm(dim, block.norm.eps)
            w1, b1 = w1 * block.norm.weight.detach(), b1 + w1 @ block.norm.bias.detach()
        else:
            self.norm = LayerNorm2d(dim, eps=block.norm.eps)
            self.norm.load_state_dict(block.norm.state_dict())
        gamma = block.gamma.detach()
        self.pwconv1 = pointwise(w1, b1)
        self.act = nn.GELU()
        self.pwconv2 = pointwise(block.pwconv2.weight.detach() * gamma[:, None], block.pwconv2.bias.detach() * gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B d H W -> B d H W
        return x + self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))


def rewrite_visual(module: nn.Module, rewrites: Rewrites) -> nn.Module:
    """Stems, downsampling layers and visual updates: ConvNeXt blocks and LayerNorm2d are rewritten (a
    LayerNorm2d's affine part folds into an unpadded conv right after it); anything else is kept."""
    if isinstance(module, ConvNeXtBlock):
        return ExportConvNeXtBlock(module, rewrites)
    if isinstance(module, LayerNorm2d) and rewrites.layer_norm:
        return ChannelNorm(module.normalized_shape[0], module.eps, module.weight, module.bias)
    if not isinstance(module, nn.Sequential):
        return module
    children, layers = list(module), []
    for i, child in enumerate(children):
        following = children[i + 1] if i + 1 < len(children) else None
        if (rewrites.layer_norm and isinstance(child, LayerNorm2d) and isinstance(following, nn.Conv2d)
                and following.padding == (0, 0)):
            layers.append(ChannelNorm(child.normalized_shape[0], child.eps))
            children[i + 1] = conv_after_affine(child.weight.detach(), child.bias.detach(), following)
        else:
            layers.append(rewrite_visual(child, rewrites))
    return nn.Sequential(*layers)


# ---- attention -------------------------------------------------------------------------------------------


class TokenNorm(nn.Module):
    """LayerNorm over the last axis without native_layer_norm: the statistics are linear layers with weights
    1/d. The affine part is optional (often folded into the next layer)."""

    def __init__(self, width: int, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("average", torch.full((1, width), 1.0 / width))
        self.register_buffer("eps", torch.full((1,), eps))  # added as the variance layer's bias
        self.min_variance = eps
        self.weight = None if weight is None else constant(weight)
        self.bias = None if bias is None else constant(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # ... d -> ... d
        centred = x - F.linear(x, self.average)
        x = centred * torch.rsqrt(F.linear(centred * centred, self.average, self.eps).clamp(min=self.min_variance))
        return x if self.weight is None else x * self.weight + self.bias


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


def fold_input_affine(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """linear(weight * x + bias) as one Linear."""
    folded = nn.Linear(linear.in_features, linear.out_features)
    shift = linear.weight.detach() @ bias
    folded.weight = constant(linear.weight * weight)
    folded.bias = constant(shift if linear.bias is None else linear.bias + shift)
    return folded


def linear_from(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = constant(weight)
    if bias is not None:
        layer.bias = constant(bias)
    return layer


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
        self.language_gate = block.language_gate
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
            queries = self.label_norm(labels)
            attended, attention = self.cross_attention(queries, pixels)
            language = self.language_proj(queries)
        multimodal = self.multimodal_proj(language * attended)  # B C d
        if self.language_gate is not None:
            labels = self.language_gate(labels + multimodal)
        if self.feedback is not None:
            if self.pixel_affine is not None:
                pixels = pixels * self.pixel_affine[0] + self.pixel_affine[1]
            visual = visual + self.feedback(pixels, self.label_norm(labels))
        return visual, labels, multimodal, attention


class ExportHead(nn.Module):
    """CSA's per-class scores <w_c, s_c> + b_c as mul and a linear layer of ones."""

    def __init__(self, head: CrossScaleAggregation):
        super().__init__()
        self.weight, self.bias = constant(head.weight), constant(head.bias)
        self.register_buffer("ones", torch.ones(1, head.weight.shape[1]))

    def forward(self, multimodal: list[torch.Tensor]) -> torch.Tensor:
        features = torch.cat(multimodal, dim=-1)  # B C sum(d_i)
        return F.linear(features * self.weight, self.ones).reshape(-1, self.bias.shape[0]) + self.bias  # B C


class ExportHSVLT(nn.Module):
    """The deployable model after the rewrites: images in [0, 1] (B x 3 x H x W) -> probabilities B x C, and
    with `attention_stage` also that stage's label-to-pixel attention B x C x h x w (mean over heads), the
    contract of hsvlt.deploy.wrapper.DeployableHSVLT."""

    def __init__(self, model: HSVLT, attention_stage: int | None = None, rewrites: Rewrites = Rewrites(),
                 logits: bool = False):
        super().__init__()
        stages = len(model.stages)
        if attention_stage is not None and not 0 <= attention_stage < stages:
            raise ValueError(f"attention_stage must be 0..{stages - 1}, got {attention_stage}")
        self.logits = logits
        model = fold_batch_norm(model) if rewrites.batch_norm else copy.deepcopy(model).eval()
        for parent in list(model.modules()):  # stochastic depth is the identity at inference
            for name, child in parent.named_children():
                if isinstance(child, DropPath):
                    setattr(parent, name, nn.Identity())
        self.config, self.attention_stage = model.config, attention_stage
        self.register_buffer("pixel_mean", model.pixel_mean.clone())
        self.register_buffer("pixel_std", model.pixel_std.clone())
        with torch.no_grad():
            self.register_buffer("label_tokens", model.encode_labels().detach().clone())  # C d1
        self.downsample = nn.ModuleList(rewrite_visual(stage.downsample, rewrites) for stage in model.stages)
        self.normalise = not (rewrites.normalisation and self.fold_normalisation(self.downsample[0]))
        self.stages = nn.ModuleList()
        self.constant_labels = rewrites.label_constants and rewrites.attention  # folded into LabelAttention
        classes = self.label_tokens.shape[0]
        for i, (stage, pixels) in enumerate(zip(model.stages, self.map_pixels(model))):
            pixel_side = model.config.num_heads == 1 and pixels < classes
            self.stages.append(nn.ModuleList(
                ExportIVLABlock(block, rewrites, self.label_tokens if self.constant_labels and i == j == 0 else None,
                                pixel_side)
                for j, block in enumerate(stage.blocks)))
        self.language_projections = nn.ModuleList(list(model.language_projections)[1:])
        self.head = ExportHead(model.head) if rewrites.head else model.head

    @staticmethod
    def map_pixels(model: HSVLT) -> list[int]:
        """Pixels of each stage's map at the model's input size, read from one forward pass."""
        size = model.config.img_size
        with torch.no_grad():
            _, maps = model(torch.zeros(1, 3, size, size), return_attention=True)  # B h C H_i W_i
        return [attention.shape[-2] * attention.shape[-1] for attention in maps]

    def fold_normalisation(self, stem: nn.Module) -> bool:
        """conv((x - mean) / std) as one conv, where the stem starts with a conv that does not pad."""
        first = stem[0] if isinstance(stem, nn.Sequential) else None
        if not isinstance(first, nn.Conv2d) or first.padding != (0, 0):
            return False
        stem[0] = conv_after_affine(1 / self.pixel_std.flatten(), -(self.pixel_mean / self.pixel_std).flatten(), first)
        return True

    def forward(self, image: torch.Tensor):
        visual = (image - self.pixel_mean) / self.pixel_std if self.normalise else image
        labels = None if self.constant_labels else self.label_tokens.expand(image.shape[0], -1, -1)
        multimodal, maps = [], []
        for i, (downsample, blocks) in enumerate(zip(self.downsample, self.stages)):
            visual = downsample(visual)
            if i > 0:
                labels = self.language_projections[i - 1](labels)
            for block in blocks:
                visual, labels, features, attention = block(visual, labels)
            multimodal.append(features)
            maps.append((attention, visual.shape[-2:]))
        scores = self.head([multimodal[i] for i in self.config.aggregate_stages])  # B C logits
        if not self.logits:
            scores = torch.sigmoid(scores)
        if self.attention_stage is None:
            return scores
        return scores, self.mean_over_heads(*maps[self.attention_stage])  # B C, B C h w

    @staticmethod
    def mean_over_heads(attention: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """B C heads HW -> B C h w. With several heads the mean is an average pooling over the heads axis
        (mean.dim over heads is not delegated)."""
        classes, heads = attention.shape[1:3]
        if heads > 1:
            attention = F.avg_pool2d(attention, (heads, 1))  # B C 1 HW
        return attention.reshape(-1, classes, *size)
