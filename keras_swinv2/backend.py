"""Every backend-specific kernel of the package, each beside its portable fallback.

Layers and models call the functions below and never branch on
`keras.backend.backend()` themselves. Each function documents what its
backend-specific path buys (measured on a 2-core CPU, SwinV2-T, batch 8) and
falls back to plain `keras.ops` everywhere else.

Private APIs used here, each checked by `tests/test_backend.py`:

- `torch._softmax_backward_data` (checked with torch 2.13.0): the softmax
  gradient from the softmax output, used by the flushed softmax.
- Keras names the state variable of a `keras.random.SeedGenerator`
  `"seed_generator_state"` (checked with Keras 3.15.1); `seed_generator_states`
  finds them by that name to save and restore dropout randomness on resume.
- `keras.layers.Layer._flatten_layers` (checked with Keras 3.15.1): the
  sublayers of a layer, for freezing all but the attention (`sublayers`).
"""

import functools
import math

import keras
from keras import ops

# float32's smallest normal number; softmax outputs below it are denormals.
FLOAT32_TINY = 1.1754944e-38
# Tokens per window from which torch's fused attention is faster (inference).
FUSED_ATTENTION_MIN_TOKENS = 256
# Versions the private APIs above were checked with.
PRIVATE_API_VERSIONS = {"torch": "2.13.0", "keras": "3.15.1"}


def name():
    """The Keras backend in use: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


if name() == "torch":
    # At module level, not in a factory: torch.compile cannot trace a class definition.
    import torch

    class _FlushedSoftmax(torch.autograd.Function):
        """Softmax over the last axis, probabilities below `FLOAT32_TINY` set to 0 (see `softmax`)."""

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


def require(backend, feature):
    """Raises `ValueError` unless the Keras backend is `backend`.

    Args:
        backend: str, the backend `feature` needs.
        feature: str, what needs it (for the message).
    """
    if name() != backend:
        raise ValueError(f"{feature} needs the {backend} backend (KERAS_BACKEND={backend}); the backend is {name()!r}.")


# === Constants ===


def constant(array):
    """Holds a numpy constant the way the backend traces best.

    TensorFlow and JAX embed numpy arrays into their graphs as they are. On
    torch, a numpy attribute read inside `forward` stops `torch.compile`'s
    tracer (one graph break per layer, each resumed frame recompiled per
    layer instance), so the array becomes a torch tensor on Keras' device.
    """
    if name() == "torch":
        return ops.convert_to_tensor(array)
    return array


# === Elementwise and reductions ===


def _torch_eager_inference(x):
    """Whether `x` is an eager torch tensor computed without autograd (in-place ops are safe)."""
    if name() != "torch" or torch.is_grad_enabled() or x.requires_grad:
        return False
    exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()
    return not (exporting or torch.compiler.is_compiling())


def gelu(x, overwrite=False):
    """Exact GELU, `x * Phi(x)` with `Phi` the standard normal CDF; any shape.

    With `overwrite=True` the caller gives up `x`: eager torch inference then
    writes the result into it (the stage-1 MLP's hidden activations of a
    SwinV2-T batch of 8 are 50 MB; a fresh buffer that large is mapped anew
    and page-faulted on every call).

    The formulation differs per backend so that every exporter can map it:
    - TensorFlow: `0.5 * x * (1 + erf(x / sqrt(2)))`, op for op the pattern
      ONNX Runtime fuses into one `Gelu` kernel. TensorFlow's own `gelu` goes
      through `erfc`, which has no ONNX operator (tf2onnx writes an invalid
      `Erfc` node); XLA's `erf` expansion is also the cheaper one.
    - JAX: `jax.nn.gelu`, through `erfc`. `lax.erf` lowers to a StableHLO
      `composite` that TensorFlow's `XlaCallModule` (the JAX SavedModel
      export) cannot read; `erf` would be ~3% faster (docs/performance.md).
    - PyTorch: the fused `gelu` kernel (ONNX `Gelu`).
    """
    if name() == "tensorflow":
        return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))
    if overwrite and _torch_eager_inference(x):
        return torch.ops.aten.gelu_(x)
    return keras.activations.gelu(x, approximate=False)


def l2_normalize(x, epsilon=1e-12):
    """`x / max(||x||_2, epsilon)` over the last axis (PyTorch's F.normalize).

    On torch: one norm kernel and one divide in eager mode, not five
    elementwise passes. Elsewhere `1 / max(||x||, eps)` is computed as
    `rsqrt(max(||x||^2, eps^2))`, a multiply instead of a divide.
    """
    if name() == "torch":
        import torch.nn.functional as F

        return F.normalize(ops.convert_to_tensor(x), dim=-1, eps=epsilon)
    x = ops.convert_to_tensor(x)
    squared = ops.sum(x * x, axis=-1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared, epsilon * epsilon))


def add_shared_bias(logits, bias, overwrite=False):
    """`logits + bias`, with one `bias` shared by every row of `logits`.

    Args:
        logits: tensor `(rows, ...)`.
        bias: tensor `(1, ...)` with the same trailing shape.
        overwrite: whether the caller gives up `logits`: eager torch inference
            then adds in place (see `gelu`).

    Returns:
        `logits + bias`, shaped like `logits`.

    On JAX the gradient of `bias`, the incoming gradient summed over the rows,
    is computed as a product with a ones vector: XLA's CPU reduction over the
    leading axis ran at ~0.5 GB/s, and summing the attention-bias gradients
    took 0.24 s of SwinV2-T's 2.35 s forward + backward (2.26 s after).
    """
    if overwrite and _torch_eager_inference(logits):
        return logits.add_(bias)
    if name() != "jax":
        return logits + bias
    return _jax_add_shared_bias()(logits, bias)


@functools.cache
def _jax_add_shared_bias():
    import jax

    @jax.custom_vjp
    def add(logits, bias):
        return logits + bias

    def forward(logits, bias):
        return logits + bias, None

    def backward(_, grad):
        rows = grad.shape[0]
        bias_grad = ops.ones((1, rows), grad.dtype) @ ops.reshape(grad, (rows, -1))
        return grad, ops.reshape(bias_grad, (1, *grad.shape[1:]))

    add.defvjp(forward, backward)
    return add


def softmax(logits):
    """Softmax over the last axis of float32 `logits`, any shape.

    On the torch backend, probabilities below float32's smallest normal number
    (1.2e-38) are set to 0, and the gradient is the softmax's with that output.
    Behind the shifted-window mask (-100) a masked token's probability is often
    near e^-100, a denormal, and eager torch's CPU matrix products slow down
    ~40x on denormal inputs: the attention-times-values product of SwinV2-T's
    shifted blocks took 63 ms of 70, 1.6 ms per call once flushed. XLA (TF jit,
    JAX) flushes denormals already. Elsewhere: `ops.softmax`.

    While torch traces or exports the model (`torch.jit.trace`, the ONNX and
    OpenVINO exporters, `torch.export`) the flush is written out as a `where`,
    without the custom gradient: exporters cannot inline an autograd Function.
    """
    if name() != "torch":
        return ops.softmax(logits, axis=-1)
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
        probs = torch.softmax(logits, dim=-1)
        return torch.where(probs > FLOAT32_TINY, probs, 0.0)
    return _FlushedSoftmax.apply(logits)


# === Attention ===


def cosine_query_key(qkv, q, k, num_heads, scale, epsilon=1e-12):
    """The queries and keys of cosine attention: `q * scale / ||q||`, `k / ||k||`, float32.

    Args:
        qkv: tensor `(windows, N, 3 * C)`, the fused projection `q`, `k` and
            `v` were split from.
        q: tensor `(windows, num_heads, N, C // num_heads)`, the queries.
        k: tensor of the same shape, the keys.
        num_heads: int.
        scale: float32 tensor `(num_heads, 1, 1)`, the attention temperature.
        epsilon: float, lower bound of the norms.

    Returns:
        `(q, k)`, each float32 `(windows, num_heads, N, C // num_heads)`.

    On torch the norms are taken on the contiguous `qkv`, not on the strided
    per-head views, and `scale` is folded into the queries' reciprocal norms:
    eager SwinV2-T's first-stage normalization 16.5 -> 9 ms per block. The
    reciprocal norms are made contiguous `(windows, heads, N, 1)` and come
    first in the products, so torch lays q and k out head-major: the batched
    products read them without a copy (stage 1, normalization plus `q k^T`:
    17.7 -> 9.9 ms per block).
    """
    if name() != "torch":
        # 1 / max(||x||, eps) as rsqrt(max(||x||^2, eps^2)); the temperature joins the queries'
        # (windows, heads, N, 1) reciprocal norms, not the whole queries (a pass fewer when unfused)
        q, k = ops.cast(q, "float32"), ops.cast(k, "float32")
        q_inv, k_inv = (
            ops.rsqrt(ops.maximum(ops.sum(t * t, axis=-1, keepdims=True), epsilon * epsilon)) for t in (q, k)
        )
        return q * (q_inv * scale), k * k_inv
    import torch

    windows, n, channels = qkv.shape
    qk = qkv.view(windows, n, 3, num_heads, channels // (3 * num_heads))[:, :, :2].float()
    inverse = torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min(epsilon).reciprocal()
    qk, inverse = qk.permute(2, 0, 3, 1, 4), inverse.permute(2, 0, 3, 1, 4)
    # an elementwise result takes the memory order of its first operand
    return (inverse[0] * scale).contiguous() * qk[0], inverse[1].contiguous() * qk[1]


_FUSED_ATTENTION = {"forced": None}


def set_fused_attention(enabled):
    """Forces the attention kernel: True fused, False plain, None automatic (the default).

    The choice is read when a layer is called (traced), so set it before building or
    compiling the model you time. Dropout on the attention probabilities always takes
    the plain path in training (`keras.ops.dot_product_attention` has no dropout).

    Args:
        enabled: True (always `ops.dot_product_attention`), False (never), or
            None (`use_fused_attention`'s automatic choice).
    """
    if enabled not in (True, False, None):
        raise ValueError(f"set_fused_attention takes True, False or None; got {enabled!r}.")
    _FUSED_ATTENTION["forced"] = enabled


@functools.lru_cache(maxsize=None)
def _accelerator():
    """Whether TensorFlow or JAX places work on a GPU or TPU (torch asks each tensor)."""
    if name() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    if name() == "jax":
        import jax

        return jax.default_backend() != "cpu"
    return False


def on_accelerator(x):
    """Whether tensor `x` is computed on an accelerator (GPU, TPU, MPS), not the CPU."""
    if name() == "torch":
        return x.device.type not in ("cpu", "meta")  # "meta": Keras' symbolic shape inference
    return _accelerator()


def use_fused_attention(accelerated, tokens, training, dropout):
    """Whether `attention` should call `ops.dot_product_attention` for windows of `tokens`.

    On an accelerator, always (with dropout only at inference): the backends
    hand the product to their fused kernels there (cuDNN / flash attention
    through JAX and torch, with the position bias and shift mask as its
    `bias`); the plain path writes the (windows, heads, N, N) probabilities
    to memory. On a CPU only torch at inference for windows of 16 x 16
    tokens and up: torch's fused `scaled_dot_product_attention` in float32
    took SwinV2-B 384/24 inference from 0.67 to 0.84 images/s; on 8 x 8
    windows it is slower (SwinV2-T 256/8 7.6 -> 5.7). Not in CPU training:
    with a bias that needs a gradient torch falls back to an unfused kernel
    slower than the plain path (a SwinV2-B step 9.4 s vs 7.9 s). Keras'
    version on TF and JAX CPUs is written out like the plain path and
    measured a little slower. `set_fused_attention` overrides the choice.

    Args:
        accelerated: whether the attention runs on an accelerator
            (`on_accelerator` of one of its tensors).
        tokens: tokens per window.
        training: whether the call trains.
        dropout: whether attention dropout is on (rate > 0).
    """
    if training and dropout:
        return False
    forced = _FUSED_ATTENTION["forced"]
    if forced is not None:
        return forced
    if accelerated:
        return True
    return name() == "torch" and not training and tokens >= FUSED_ATTENTION_MIN_TOKENS


# === Linear layers ===


def dense(layer, inputs, bias, dense_call):
    """The forward pass of `keras_swinv2.layers.Linear`.

    Args:
        layer: the `Linear` layer (a `keras.layers.Dense`).
        inputs: tensor `(..., input_dim)`.
        bias: None or a tensor `(units,)` added at call time (layers without
            their own bias and activation).
        dense_call: `keras.layers.Dense.call` bound to `layer`, the portable path.

    Returns:
        tensor `(..., units)`.

    On torch (without LoRA or quantization) one `torch.nn.functional.linear`
    (one `addmm`, ~11% of SwinV2-T inference saved over matmul + add); under
    mixed precision its cast kernel is made a row-major `(units, input_dim)`
    copy: on a CPU without bfloat16 instructions torch's bfloat16 product with
    the transposed view took 151 ms for `(8192, 96) @ (96, 288)`, with the copy
    42 ms (SwinV2-T batch-1 bfloat16 forward 6.9 -> 1.0 s).

    On JAX and TensorFlow, inputs of rank 3 and up are multiplied as one
    `(rows, input_dim)` matrix, bias added before the reshape back: the kernel
    gradient of the product on `(..., input_dim)` contracts several leading
    axes, and XLA's CPU compiler transposes a whole activation to do that
    (JAX SwinV2-T forward + backward 2.73 -> 2.35 s); and in an exported graph
    a 2-D product followed by its bias is one `Gemm` for ONNX Runtime (Keras'
    TensorFlow `Dense` adds the bias after reshaping back).
    """
    backend = name()
    if backend == "torch" and not layer.lora_enabled and layer.quantization_mode is None:
        import torch.nn.functional as F

        kernel = ops.transpose(layer.kernel)
        if keras.backend.standardize_dtype(kernel.dtype) != layer.kernel.dtype:  # autocast: a new tensor anyway
            kernel = kernel.contiguous()
        if bias is not None:
            bias = ops.cast(bias, kernel.dtype)
        elif layer.bias is not None:
            bias = layer.bias.value
        x = F.linear(inputs, kernel, bias)
        return layer.activation(x) if layer.activation is not None else x
    shape = ops.shape(inputs)
    if backend in ("jax", "tensorflow") and len(shape) > 2:
        x = dense_call(ops.reshape(inputs, (-1, shape[-1])))
        if bias is not None:
            x, bias = x + ops.cast(bias, x.dtype), None
        x = ops.reshape(x, (*shape[:-1], layer.units))
    else:
        x = dense_call(inputs)
    return x if bias is None else x + ops.cast(bias, x.dtype)


def layer_norm(layer, inputs, norm_call):
    """The forward pass of `keras_swinv2.layers.LayerNorm` (over the last axis).

    Args:
        layer: the `LayerNorm` layer (a `keras.layers.LayerNormalization`).
        inputs: tensor `(..., width)`.
        norm_call: `keras.layers.LayerNormalization.call` bound to `layer`.

    As in Keras, it computes in at least float32.

    On torch, `torch.nn.functional.layer_norm` with the normalized shape
    `(width,)` taken from the layer's weights, a Python int: Keras takes it
    from `inputs.shape`, which TorchScript's ONNX export traces as a dynamic
    value and then refuses as an argument ("Failed to export ... because it
    is not constant").

    On TensorFlow, the textbook form `(x - mean) / sqrt(var + eps) * gamma +
    beta`, op for op the pattern ONNX Runtime and OpenVINO fuse into one
    layer-norm kernel; Keras' own form (`x * inv + (beta - mean * inv)`) is
    left as a dozen elementwise ops in an exported graph. XLA fuses either.
    """
    backend = name()
    if backend == "jax" or not (layer.center and layer.scale) or layer.rms_scaling:
        return norm_call(inputs)
    if backend == "torch":
        import torch
        import torch.nn.functional as F

        x = inputs if inputs.dtype in (torch.float32, torch.float64) else inputs.float()
        width = (int(layer.gamma.shape[-1]),)
        out = F.layer_norm(x, width, layer.gamma.value.to(x.dtype), layer.beta.value.to(x.dtype), layer.epsilon)
        return ops.cast(out, layer.compute_dtype)
    x = ops.cast(inputs, "float32") if inputs.dtype in ("float16", "bfloat16") else inputs
    # the axis as a 1-D list: OpenVINO's layer-norm (MVN) fusion fails on a scalar axes constant
    centered = x - ops.mean(x, axis=[-1], keepdims=True)
    variance = ops.mean(ops.power(centered, 2.0), axis=[-1], keepdims=True)
    out = centered / ops.sqrt(variance + layer.epsilon) * ops.cast(layer.gamma, x.dtype) + ops.cast(layer.beta, x.dtype)
    return ops.cast(out, layer.compute_dtype)


# === Gathers ===


def take_columns(table, index):
    """`table[:, index]` for a 2-D `table` and a 1-D integer `index`.

    On torch, `index_select` on the columns directly: Keras' `ops.take` first
    flattens the index with `ravel`, which the ONNX exporter does not know.
    """
    if name() != "torch":
        return ops.take(table, index, axis=1)
    import torch

    return torch.index_select(table, 1, index.long())


# === Control flow ===


def resize_like(images, reference, interpolation):
    """Resizes `images` (batch, h, w, c) to the height and width of `reference`, without
    antialiasing (half-pixel sampling, PyTorch's `align_corners=False`).

    On TensorFlow the size is read from `reference` in the graph: a model built for any input
    size has no Python ints for it (which `keras.ops.image.resize` needs), and tf2onnx turns a
    constant size into ONNX `scales`, which onnxruntime rounds down (3 * 5/3 -> 4 rows).
    """
    if name() == "tensorflow":
        import tensorflow as tf

        resized = tf.image.resize(images, tf.shape(reference)[1:3], method=interpolation)
        resized = tf.cast(resized, images.dtype)
        static = reference.shape[1:3]
        return tf.ensure_shape(resized, [images.shape[0], *static, images.shape[3]])
    size = (ops.shape(reference)[1], ops.shape(reference)[2])
    return ops.image.resize(images, size, interpolation=interpolation, antialias=False)


def map_sequentially(function, elements):
    """`keras.ops.map` with one iteration at a time on every backend.

    TensorFlow's `map_fn` (behind `ops.map`) runs up to 10 iterations in
    parallel, which would keep 10 chunks' buffers alive at once.
    """
    if name() != "tensorflow":
        return ops.map(function, elements)
    import tensorflow as tf

    first = tf.nest.map_structure(lambda x: x[0], elements)
    signature = tf.TensorSpec.from_tensor(function(first))
    return tf.map_fn(function, elements, fn_output_signature=signature, parallel_iterations=1)


def remat(function):
    """Wraps `function` so its activations are recomputed in the backward pass.

    On TensorFlow and PyTorch this is `keras.remat` (`tf.recompute_grad`,
    `torch.utils.checkpoint`). On JAX, `jax.checkpoint` saves the right
    residuals, but XLA's CPU pipeline drops its optimisation barriers, merges
    the recomputation back into the forward pass and keeps every activation
    (jax-ml/jax#19822; measured: a 48-layer chain needs *more* temporary memory
    with it, 605 MB vs 412 MB). Here the backward pass recomputes inside a
    `lax.cond` whose predicate reads the incoming cotangent, so the
    recomputation can neither be hoisted before it nor merged with the
    forward pass (the same chain: 220 MB). Both branches are the same
    recompute-and-VJP; the predicate only creates the data dependency.

    `function` must take and return tensors only and must not draw random
    numbers (a recomputed draw would differ); draw masks outside and pass
    them in.

    Args:
        function: callable `(*tensors) -> tensor`.

    Returns:
        A callable with the same signature.
    """
    if name() != "jax":
        return keras.remat(function)

    import jax

    def wrapped(*args):
        # Closed-over variable values (tracers under `stateless_call`) become explicit
        # inputs, so custom_vjp can return their gradients.
        converted, constants = jax.closure_convert(function, *args)

        @jax.custom_vjp
        def run(*inputs):
            return converted(*inputs)

        def forward(*inputs):
            return converted(*inputs), inputs

        def backward(inputs, cotangent):
            def recompute_and_vjp(operands):
                inputs, cotangent = operands
                return jax.vjp(converted, *inputs)[1](cotangent)

            first = jax.tree_util.tree_leaves(cotangent)[0].ravel()[0]
            return jax.lax.cond(first == first, recompute_and_vjp, recompute_and_vjp, (inputs, cotangent))

        run.defvjp(forward, backward)
        return run(*args, *constants)

    return wrapped


# === Private Keras state ===


def seed_generator_states(model):
    """The state variables of every `keras.random.SeedGenerator` in `model`, in order."""
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def sublayers(layer, recursive=False):
    """The layers `layer` tracks (its direct children, or all descendants), in order.

    Keras 3 has no public API for the children of a plain `Layer`; this uses
    its private `Layer._flatten_layers` (checked with Keras 3.15.1).
    """
    return list(layer._flatten_layers(include_self=False, recursive=recursive))
