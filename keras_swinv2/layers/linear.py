"""Dense and LayerNormalization with one forward path per backend (keras_swinv2.backend)."""

import keras

from keras_swinv2 import backend


@keras.saving.register_keras_serializable(package="keras_swinv2")
class Linear(keras.layers.Dense):
    """`keras.layers.Dense` (same weights, config and results) that stays one fused GEMM.

    The forward pass is `keras_swinv2.backend.dense`: on torch one
    `torch.nn.functional.linear` (matmul and bias in one kernel), on JAX inputs
    of rank 3 and up multiplied as one matrix; elsewhere, and with LoRA or
    quantization, plain Dense.

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
        return backend.dense(self, inputs, bias, lambda x: keras.layers.Dense.call(self, x, training=training))


@keras.saving.register_keras_serializable(package="keras_swinv2")
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` (same weights, config and results) over the last axis.

    The forward pass is `keras_swinv2.backend.layer_norm`: on torch one
    `layer_norm` kernel whose normalized shape is the layer's static width
    (Keras reads it from the input's shape, which the TorchScript ONNX
    exporter records as a dynamic value and then cannot export); elsewhere
    plain LayerNormalization.
    """

    def call(self, inputs):
        return backend.layer_norm(self, inputs, lambda x: keras.layers.LayerNormalization.call(self, x))
