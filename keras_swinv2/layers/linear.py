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

    Under mixed precision on torch, the cast kernel is made a row-major
    `(units, input_dim)` copy, the layout of a `torch.nn.Linear` weight. On a CPU
    without bfloat16 instructions (AVX2), torch's bfloat16 product with the
    transposed `(input_dim, units)` view took 151 ms for `(8192, 96) @ (96, 288)`,
    with the row-major copy 42 ms (float32: 5.5 ms either way); SwinV2-T's
    batch-1 bfloat16 forward went from 6.9 to 1.0 s.

    On JAX, inputs of rank 3 and up are multiplied as one `(rows, input_dim)`
    matrix. The kernel gradient of the product on `(..., input_dim)` contracts
    several leading axes, and XLA's CPU compiler transposes a whole activation
    to do that (SwinV2-T batch 8: 0.3 s of a 2.7 s forward + backward); with
    one leading axis it needs no copy (2.73 -> 2.35 s).

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
        if not fused:
            shape = ops.shape(inputs)
            if keras.backend.backend() == "jax" and len(shape) > 2:
                # one (rows, input_dim) product: see the class docstring
                x = super().call(ops.reshape(inputs, (-1, shape[-1])), training=training)
                x = ops.reshape(x, (*shape[:-1], self.units))
            else:
                x = super().call(inputs, training=training)
            return x if bias is None else x + ops.cast(bias, x.dtype)
        import torch.nn.functional as F

        kernel = ops.transpose(self.kernel)
        if kernel.dtype != self.kernel.dtype:
            # cast by mixed precision: `(units, input_dim)` row-major, see the class docstring
            kernel = kernel.contiguous()
        if bias is not None:
            bias = ops.cast(bias, kernel.dtype)
        elif self.bias is not None:
            bias = self.bias.value
        x = F.linear(inputs, kernel, bias)
        return self.activation(x) if self.activation is not None else x
