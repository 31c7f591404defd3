"""Interactive Visual-Linguistic Attention (IVLA): one interaction step between image and label tokens.

Attention is written as matmul -> softmax -> matmul with separate q/k/v Linear layers on purpose:
F.scaled_dot_product_attention decomposes into ops XNNPACK does not delegate, and a packed in-projection
(nn.MultiheadAttention) breaks quantised lowering. See docs/DESIGN.md section 5.
"""

import torch
from torch import nn

from hsvlt.models.convnext import DropPath


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
    """L <- L + tanh(W2 ReLU(W1 L)) * L, the self-gated language update (no biases)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(dim, dim, bias=False), nn.ReLU(), nn.Linear(dim, dim, bias=False), nn.Tanh()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gate(x) * x


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
    cross-attention (and the language projection). The reference has none and relies on a tiny learning
    rate: trained from scratch without it, the gated residual lets L grow up to 2x per block and the loss
    spikes by orders of magnitude (measured on `shapes`, see README). With it, S no longer scales with |L|.
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
    ):
        super().__init__()
        self.visual = visual
        self.label_norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()
        self.token_norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()
        self.cross_attention = Attention(dim, num_heads)
        self.language_proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU())  # W_l
        self.multimodal_proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU())  # W_m
        self.language_gate = None if final else GatedResidual(dim)
        self.feedback = VisualFeedback(dim, num_heads) if visual_feedback and not final else None
        self.drop_path = DropPath(drop_path)

    def reset_residual_branches(self) -> None:
        """Close the language gate (tanh(0) = 0) and the visual feedback at initialisation: the block then
        starts as L <- L + S and V unchanged, and the gates open as training finds them useful."""
        if self.language_gate is not None:
            nn.init.zeros_(self.language_gate.gate[2].weight)
        if self.feedback is not None:
            nn.init.zeros_(self.feedback.attention.proj.weight)
            nn.init.zeros_(self.feedback.attention.proj.bias)

    def forward(
        self, visual: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        visual = self.visual(visual)  # B d H W
        tokens = self.token_norm(visual.flatten(2).transpose(1, 2))  # B HW d
        queries = self.label_norm(labels)  # B C d
        attended, attention = self.cross_attention(queries, tokens)  # B C d, B h C HW
        multimodal = self.multimodal_proj(self.language_proj(queries) * attended)  # B C d
        if self.language_gate is not None:
            labels = self.language_gate(labels + self.drop_path(multimodal))
        if self.feedback is not None:
            update = self.feedback(tokens, self.label_norm(labels), *visual.shape[-2:])
            visual = visual + self.drop_path(update)
        return visual, labels, multimodal, attention
