"""ZeRO stage 1 on the JAX backend: optimizer state sharded across the data-parallel devices.

Under `keras.distribution.DataParallel` every device holds a full copy of the
parameters and, by default, of the optimizer state: Keras creates each slot
(Adam's moments, EMA copies, gradient accumulators) with the layout of its
variable (`add_variable_from_reference`). `shard_optimizer_state` gives the
slots a layout sharded along the data-parallel mesh axis instead. The jitted
train step keeps that sharding (`out_shardings`), so XLA updates each slice of
the state on its own device and all-gathers the updated parameters, which stay
replicated; the result equals unsharded training.

A slot is sharded along the first of its variable's dimensions that is not
already sharded and whose size the number of data-parallel devices divides;
slots of variables without one (e.g. `logit_scale` of shape `(3, 1, 1)` on 2
devices) and scalar state (step count, learning rate) stay replicated.

JAX only (`keras.distribution` shards on no other backend); importing this
module needs only Keras.
"""

import collections

import keras

from keras_swinv2 import backend
from keras.distribution import TensorLayout


def slot_layout(variable, axis_name=None, distribution=None):
    """The sharded `TensorLayout` of an optimizer slot of `variable`, or None to keep its own.

    Args:
        variable: the model variable the slot mirrors (same shape).
        axis_name: str, the mesh axis to shard along; defaults to the
            distribution's `batch_dim_name` (the data-parallel axis).
        distribution: a `keras.distribution.Distribution`; defaults to the
            current one.

    Returns:
        The variable's layout with `axis_name` on its first unsharded
        dimension divisible by the size of that mesh axis, or None when there
        is no distribution, no such dimension, the axis has one device, or
        the variable is already sharded along it.
    """
    distribution = distribution or keras.distribution.distribution()
    if distribution is None:
        return None
    layout = distribution.get_variable_layout(variable)
    if not isinstance(layout, TensorLayout):
        return None
    axis_name = axis_name or distribution.batch_dim_name
    mesh = layout.device_mesh
    used = {name for axis in layout.axes if axis is not None for name in ((axis,) if isinstance(axis, str) else axis)}
    size = dict(zip(mesh.axis_names, mesh.shape))[axis_name]
    if size == 1 or axis_name in used:
        return None
    axes = list(layout.axes)
    for i, dim in enumerate(variable.shape):
        if axes[i] is None and dim % size == 0:
            axes[i] = axis_name
            return TensorLayout(axes, mesh)
    return None


def shard_optimizer_state(optimizer, axis_name=None):
    """Makes `optimizer` keep its per-variable state sharded across the data-parallel devices.

    Works with any Keras optimizer (e.g. `keras.optimizers.AdamW`,
    `keras_swinv2.swinv2_adamw(...)`, a `LossScaleOptimizer`), which keeps its
    class and config: a `.keras` file reloads it unsharded. The layouts are
    chosen when the optimizer is built (by `fit`, or `optimizer.build`), from
    the distribution current then; build and train under the same
    `keras.distribution.set_distribution(...)`. Without a distribution the
    optimizer behaves as before.

    Args:
        optimizer: a `keras.optimizers.Optimizer`, not built yet.
        axis_name: str, mesh axis to shard the state along; defaults to the
            distribution's data-parallel axis (`"batch"` for `DataParallel`).

    Returns:
        `optimizer`, changed in place.

    Example:

    >>> keras.distribution.set_distribution(keras.distribution.DataParallel())
    >>> model = keras_swinv2.SwinV2Tiny(classes=10)
    >>> optimizer = shard_optimizer_state(keras_swinv2.swinv2_adamw(model, 1e-3))
    >>> model.compile(optimizer, loss="sparse_categorical_crossentropy")
    """
    backend.require("jax", "shard_optimizer_state (keras.distribution shards only on JAX)")
    target = getattr(optimizer, "inner_optimizer", optimizer)
    if target.built:
        raise ValueError("shard_optimizer_state needs an optimizer that is not built yet (call it before `fit`).")
    add_replicated = target.add_variable_from_reference

    def add_variable_from_reference(reference_variable, name=None, initializer="zeros"):
        layout = slot_layout(reference_variable, axis_name)
        if layout is None:
            return add_replicated(reference_variable, name=name, initializer=initializer)
        return target.add_variable(
            shape=reference_variable.shape,
            initializer=initializer,
            dtype=reference_variable.dtype,
            name=f"{reference_variable.path.replace('/', '_')}_{name or 'var'}",
            layout=layout,
        )

    target.add_variable_from_reference = add_variable_from_reference
    return optimizer


def bytes_per_device(variables):
    """Bytes of `variables` held by each local device, read from their JAX arrays' shards.

    Args:
        variables: iterable of Keras variables (e.g. `optimizer.variables`).

    Returns:
        dict, `str(device)` -> bytes, in device order.
    """
    held = collections.Counter()
    for variable in variables:
        for shard in variable.value.addressable_shards:
            held[shard.device] += shard.data.nbytes
    return {str(device): held[device] for device in sorted(held, key=lambda d: d.id)}
