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
