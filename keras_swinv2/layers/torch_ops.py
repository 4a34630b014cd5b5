"""Autograd functions for the torch backend (imported only there)."""

import torch

# float32's smallest normal number; softmax outputs below it are denormals.
FLOAT32_TINY = 1.1754944e-38


class FlushedSoftmax(torch.autograd.Function):
    """Softmax over the last axis, probabilities below `FLOAT32_TINY` set to 0.

    The backward pass is the softmax's, computed from the flushed output, so
    neither direction hands denormals to the matrix products that follow.
    See `keras_swinv2.layers.attention.softmax`.
    """

    @staticmethod
    def forward(ctx, logits):
        probs = torch.softmax(logits, dim=-1)
        torch.threshold_(probs, FLOAT32_TINY, 0.0)
        ctx.save_for_backward(probs)
        return probs

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved_tensors
        return torch._softmax_backward_data(grad, probs, -1, probs.dtype)


def cosine_query_key(qkv, num_heads, scale, epsilon=1e-12):
    """The queries and keys of cosine attention, normalized, from the fused projection.

    Returns `q * scale / max(||q||, eps)` and `k / max(||k||, eps)` (norms over
    the head channels), in float32. The norms are taken on the contiguous
    `qkv`, not on the strided per-head views, and `scale` is folded into the
    queries' reciprocal norms: eager SwinV2-T's first-stage normalization
    16.5 -> 9 ms per block (batch 8).

    Args:
        qkv: tensor `(windows, N, 3 * C)`, queries, keys and values side by side.
        num_heads: int, heads; `C` must be divisible by it.
        scale: float32 tensor `(num_heads, 1, 1)`, the attention temperature.
        epsilon: float, lower bound of the norms.

    Returns:
        `(q, k)`, each float32 `(windows, num_heads, N, C // num_heads)`.
    """
    windows, n, channels = qkv.shape
    qk = qkv.view(windows, n, 3, num_heads, channels // (3 * num_heads))[:, :, :2].float()
    norms = torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min(epsilon)
    qk, norms = qk.permute(2, 0, 3, 1, 4), norms.permute(2, 0, 3, 1, 4)
    return qk[0] * (scale / norms[0]), qk[1] / norms[1]
