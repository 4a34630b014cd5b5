"""A Dense layer that stays one fused GEMM on the torch backend."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_swinv2")
class Linear(keras.layers.Dense):
    """`keras.layers.Dense` (same weights, config and results) with a torch fast path.

    Keras' Dense computes `matmul(x, kernel)` and then adds the bias as a separate
    op. XLA (TensorFlow, JAX) fuses the two; eager torch does not, and the extra
    pass over every activation cost ~11% of SwinV2-T inference on CPU. On the
    torch backend this layer calls `torch.nn.functional.linear` (one `addmm`)
    instead; everywhere else, and with LoRA or quantization, it is plain Dense.

    A layer built with `use_bias=False` and no activation also takes a bias
    at call time (`layer(x, bias=b)`), for biases assembled per call such as
    SwinV2's q/v biases around a zero key bias: on torch it joins the GEMM.

    Call arguments:
        inputs: tensor `(..., input_dim)`.
        bias: optional tensor `(units,)`, only for a layer without its own
            bias and activation.

    Output shape: `(..., units)`.
    """

    def call(self, inputs, training=None, bias=None):
        if bias is not None and (self.use_bias or self.activation is not keras.activations.linear):
            raise ValueError(
                "A bias at call time needs a Linear layer without bias and activation; got "
                f"use_bias={self.use_bias}, activation={self.activation.__name__}."
            )
        fused = (
            keras.backend.backend() == "torch"
            and not self.lora_enabled
            and self.quantization_mode is None
        )
        if not fused or (bias is None and self.bias is None):
            x = super().call(inputs, training=training)
            return x if bias is None else x + ops.cast(bias, x.dtype)
        import torch.nn.functional as F

        kernel = ops.transpose(self.kernel)
        bias = self.bias.value if bias is None else ops.cast(bias, kernel.dtype)
        x = F.linear(inputs, kernel, bias)
        return self.activation(x) if self.activation is not None else x
