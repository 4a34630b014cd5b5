"""Data-parallel training with `tf.distribute` (TensorFlow backend).

`DistributedTrainer` is a training loop that runs under any strategy: the
default one, `MirroredStrategy` (N devices, one process) and a real
multi-worker `MultiWorkerMirroredStrategy`, where `model.fit` fails
(keras-team/keras#20585). Each replica's gradients are summed over replicas
once, by the loop, before the optimizer sees them, so the optimizer's
`global_clipnorm` clips the global gradient exactly as on one device (Keras'
own `tf.distribute` path clips each replica's partial gradient before the sum).

`ShardedOptimizer` is ZeRO stage 1: parameters stay replicated while each
replica keeps, and updates, only its 1/N slice of the optimizer state.
"""

import contextlib
import itertools
import math

import numpy as np
import tensorflow as tf

import keras
from keras_swinv2.io_utils import atomic_write


def _override(optimizer, **methods):
    """Sets methods on an optimizer instance and its inner one; returns a function undoing it.

    Not thread-safe: MirroredStrategy runs replicas in threads, so override
    around `strategy.run`, never inside it.
    """
    optimizers = [o for o in (optimizer, getattr(optimizer, "inner_optimizer", None)) if o is not None]
    for o in optimizers:
        for name, method in methods.items():
            object.__setattr__(o, name, method)  # bypasses Keras' attribute tracking

    def undo():
        for o in optimizers:
            for name in methods:
                object.__delattr__(o, name)

    return undo


@contextlib.contextmanager
def _overridden(optimizer, **methods):
    """`_override` for the duration of the block."""
    undo = _override(optimizer, **methods)
    try:
        yield
    finally:
        undo()


def _summed(grads_and_vars):
    """Stands in for Keras' `_all_reduce_sum_gradients`: our gradients arrive summed."""
    return grads_and_vars


class ShardedOptimizer:
    """ZeRO stage 1 in `tf.distribute`: optimizer state split across replicas.

    Wraps a Keras optimizer whose update is elementwise (SGD, Adam, AdamW,
    `SwinV2AdamW`, Lion, ...; a `LossScaleOptimizer` around one). Each
    trainable variable of `n` elements is flattened, zero-padded to
    `N * ceil(n / N)` elements and cut in `N` equal slices, one per replica.
    The wrapped optimizer is built on per-replica "shard" variables of
    `ceil(n / N)` elements, synchronised on read (each device holds only its
    own), named with the variable's path (so per-path learning-rate
    multipliers and no-decay lists apply) and its slots are made the same
    way: every device stores 1/N of the optimizer state.

    `apply`, per step and replica, with gradients already summed over
    replicas: clip by the global norm of the full gradients, copy this
    replica's slice of each variable and gradient, run the wrapped
    optimizer's own `apply` on the slices, all-gather the updated slices and
    write the full variables on every replica. With loss scaling, a step is
    skipped on every replica when any full gradient is not finite.

    The optimizer's `global_clipnorm` and `clipnorm` are taken over by the
    wrapper (they need the full gradients) and set to None on the optimizer.

    Args:
        optimizer: the Keras optimizer to shard, created under
            `strategy.scope()` and not yet built.
        variables: list of the model's trainable variables (one dtype).
        strategy: a `tf.distribute.Strategy`; defaults to the current one.
    """

    def __init__(self, optimizer, variables, strategy=None):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.optimizer = optimizer
        self.trainable_variables = list(variables)
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        if optimizer.built:
            raise ValueError("ShardedOptimizer needs an optimizer that is not built yet.")
        if inner.use_ema or inner.gradient_accumulation_steps:
            raise ValueError("ShardedOptimizer does not support `use_ema` or `gradient_accumulation_steps`.")
        if getattr(inner, "_exclude_from_weight_decay", None):
            raise ValueError("Exclude variables from weight decay by name (`var_names=`), not `var_list=`.")
        if len({v.dtype for v in self.trainable_variables}) > 1:
            raise ValueError("ShardedOptimizer needs trainable variables of one dtype.")
        self.global_clipnorm, self.clipnorm = inner.global_clipnorm, inner.clipnorm
        inner.global_clipnorm = inner.clipnorm = None
        self.num_replicas = self.strategy.num_replicas_in_sync
        self._sizes = [math.prod(v.shape) for v in self.trainable_variables]
        self._shard_sizes = [-(-n // self.num_replicas) for n in self._sizes]
        with self.strategy.scope():
            self.shards = [self._shard_variable(v, s) for v, s in zip(self.trainable_variables, self._shard_sizes)]
            self._build_optimizer()
        # Keras would sum the replicas' (different) slices: the optimizer is this wrapper's now.
        _override(optimizer, _all_reduce_sum_gradients=_summed)

    def _shard_variable(self, variable, size):
        parent, _, name = variable.path.rpartition("/")
        scope = contextlib.nullcontext()
        if parent:
            grandparent, _, parent = parent.rpartition("/")
            scope = keras.name_scope(parent, override_parent=grandparent)
        with scope:
            return keras.Variable(
                initializer="zeros",
                shape=(size,),
                dtype=variable.dtype,
                trainable=False,
                synchronization="on_read",
                aggregation="none",
                name=name,
            )

    def _build_optimizer(self):
        # Slots copy their reference's synchronisation: on read, like the shards.
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        add_slot = inner.add_variable_from_reference
        shard_index = {id(s): i for i, s in enumerate(self.shards)}
        slot_of = {}

        def add_sharded_slot(reference_variable, name=None, initializer="zeros"):
            def on_read(next_creator, **kwargs):
                kwargs["synchronization"] = tf.VariableSynchronization.ON_READ
                return next_creator(**kwargs)

            with tf.variable_creator_scope(on_read):
                slot = add_slot(reference_variable, name=name, initializer=initializer)
            slot_of[id(slot)] = shard_index[id(reference_variable)]
            return slot

        with _overridden(inner, add_variable_from_reference=add_sharded_slot):
            self.optimizer.build(self.shards)
        # Optimizer variable index -> trainable variable index, for its sharded slots.
        self._sharded = {k: slot_of[id(v)] for k, v in enumerate(self.optimizer.variables) if id(v) in slot_of}

    def _slice(self, value, index, replica_id):
        """This replica's slice of the flattened, padded `value` of variable `index`."""
        n, size = self._sizes[index], self._shard_sizes[index]
        flat = tf.pad(tf.reshape(value, [-1]), [[0, size * self.num_replicas - n]])
        return tf.gather(tf.reshape(flat, [self.num_replicas, size]), replica_id)

    def _all_gather(self, context, slices, indices):
        """Full values of variables `indices` from every replica's `slices` of them: one all-gather."""
        # A list of tensors fails in MultiWorkerMirroredStrategy ("destinations can not be empty").
        gathered = tf.reshape(context.all_gather(tf.concat(slices, axis=0), axis=0), [self.num_replicas, -1])
        pieces = tf.split(gathered, [self._shard_sizes[i] for i in indices], axis=1)
        shapes = [self.trainable_variables[i].shape for i in indices]
        return [tf.reshape(tf.reshape(p, [-1])[: math.prod(s)], s) for p, s in zip(pieces, shapes)]

    def scale_loss(self, loss):
        return self.optimizer.scale_loss(loss)

    @property
    def iterations(self):
        return self.optimizer.iterations

    def apply(self, grads):
        """One update from gradients summed over replicas; call it in replica context.

        Args:
            grads: list of full gradients (loss-scaled when the optimizer is
                a `LossScaleOptimizer`), one per variable, equal on every
                replica.
        """
        context = tf.distribute.get_replica_context()
        replica_id = context.replica_id_in_sync_group
        loss_scale = getattr(self.optimizer, "dynamic_scale", None)
        scale = 1.0 if loss_scale is None else tf.convert_to_tensor(loss_scale)
        # Clipping scaled gradients at `clipnorm * scale` equals clipping unscaled ones:
        # the scale is a power of two.
        if self.clipnorm:
            grads = [tf.clip_by_norm(g, self.clipnorm * scale) for g in grads]
        if self.global_clipnorm:
            grads, _ = tf.clip_by_global_norm(grads, self.global_clipnorm * scale)
        grad_slices = [self._slice(g, i, replica_id) for i, g in enumerate(grads)]
        if loss_scale is not None:
            # The optimizer tests its replica's slices for finiteness: make them all agree.
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            poison = tf.where(finite, 0.0, float("nan"))
            grad_slices = [g + tf.cast(poison, g.dtype) for g in grad_slices]
        for i, (variable, shard) in enumerate(zip(self.trainable_variables, self.shards)):
            shard.assign(self._slice(variable, i, replica_id))
        self.optimizer.apply(grad_slices, self.shards)
        shards = [tf.convert_to_tensor(s) for s in self.shards]
        values = self._all_gather(context, shards, range(len(shards)))
        context.merge_call(_assign_all, args=(self.trainable_variables, values))

    def gather_state(self):
        """The full optimizer state, as an unsharded optimizer would hold it.

        All replicas (all workers) must call it: it all-gathers the slots.

        Returns:
            A list of numpy arrays in the order of `optimizer.variables`;
            slots have their variable's shape, so an unsharded optimizer built
            on the same variables takes them (`load_own_variables`).
        """

        def gather():
            slots = [tf.convert_to_tensor(self.optimizer.variables[k]) for k in self._sharded]
            return self._all_gather(tf.distribute.get_replica_context(), slots, list(self._sharded.values()))

        full = {}
        if self._sharded:
            gathered = tf.function(lambda: self.strategy.run(gather))()
            full = dict(zip(self._sharded, (self.strategy.experimental_local_results(g)[0] for g in gathered)))
        return [np.asarray(full.get(k, v)) for k, v in enumerate(self.optimizer.variables)]

    def load_state(self, values):
        """Sets the optimizer state from full values (`gather_state`), re-sharding the slots.

        The state may come from any number of replicas, or from an unsharded
        optimizer on the same variables (`optimizer.variables`).

        Args:
            values: list of arrays in the order of `optimizer.variables`.
        """
        variables = self.optimizer.variables
        for k, value in enumerate(values):
            if k not in self._sharded:
                variables[k].assign(value)
        sharded = [tf.convert_to_tensor(values[k]) for k in self._sharded]

        def scatter(sharded):
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            for (k, i), value in zip(self._sharded.items(), sharded):
                variables[k].assign(self._slice(value, i, replica_id))

        tf.function(lambda sharded: self.strategy.run(scatter, args=(sharded,)))(sharded)

    def state_bytes_per_device(self):
        """Bytes of optimizer state on each of this worker's devices, from the variables' components.

        Not counted: the shard variables (`shards`), a copy of 1/N of the
        parameters on each device.

        Returns:
            A dict, device name -> bytes.
        """
        sizes = {}
        for variable in self.optimizer.variables:
            for component in self.strategy.experimental_local_results(variable.value):
                nbytes = component.shape.num_elements() * component.dtype.size
                sizes[component.device] = sizes.get(component.device, 0) + nbytes
        return sizes


def _assign_all(strategy, variables, values):
    """Cross-replica: each replica's copy of each variable gets that replica's value."""
    for variable, value in zip(variables, values):
        strategy.extended.update(variable.value, lambda v, x: v.assign(x), args=(value,), group=False)


def _savez(path, arrays):
    with open(path, "wb") as f:  # a file object: `np.savez` would append ".npz" to a name
        np.savez(f, **arrays)


class DistributedTrainer:
    """A data-parallel training loop for any `tf.distribute` strategy.

    Per step and replica: forward pass, per-example losses summed and
    divided by the global batch size (plus the model's own losses divided
    by the number of replicas), gradients of the (loss-scaled) loss, one
    all-reduce (sum), then the optimizer applies the summed gradients. The
    result equals training on one device with the global batch. The model
    and the optimizer must be created under `strategy.scope()`.

    Args:
        model: a Keras model with one output tensor.
        optimizer: a Keras optimizer, or a `LossScaleOptimizer` for
            `mixed_float16` (its dynamic loss scale is applied and updated;
            non-finite steps are skipped).
        loss: a loss name or callable `(y_true, y_pred) -> per-example
            losses`, e.g. `"sparse_categorical_crossentropy"` or
            `keras.losses.CategoricalCrossentropy(reduction=None)`.
        strategy: a `tf.distribute.Strategy`; defaults to the current one.
        shard_optimizer_state: bool, ZeRO stage 1 (`ShardedOptimizer`).

    Example:

    >>> strategy = tf.distribute.MirroredStrategy()
    >>> with strategy.scope():
    ...     model = keras_swinv2.SwinV2Tiny(classes=10, input_shape=(224, 224, 3), window_size=7)
    ...     optimizer = keras_swinv2.swinv2_adamw(model, 1e-3, global_clipnorm=5.0)
    >>> trainer = DistributedTrainer(model, optimizer, "sparse_categorical_crossentropy")
    >>> history = trainer.fit(dataset, epochs=10)  # dataset batched at the global batch size
    """

    def __init__(self, model, optimizer, loss, strategy=None, shard_optimizer_state=False):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.model = model
        self.loss = keras.losses.get(loss)
        if shard_optimizer_state:
            self.optimizer = ShardedOptimizer(optimizer, model.trainable_variables, self.strategy)
        else:
            self.optimizer = optimizer
            if not optimizer.built:
                with self.strategy.scope():
                    optimizer.build(model.trainable_variables)
        self._train_step = tf.function(self._distributed_step)

    def _replica_step(self, x, y):
        context = tf.distribute.get_replica_context()
        batch_size = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], "float32")
        global_batch_size = context.all_reduce("sum", batch_size)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            y_pred = tf.cast(self.model(x, training=True), "float32")
            per_example = self.loss(y, y_pred)
            if per_example.shape.rank == 0:
                raise ValueError("`loss` must return per-example losses (e.g. a Loss with `reduction=None`).")
            loss = tf.reduce_sum(tf.cast(per_example, "float32")) / global_batch_size
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / context.num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = context.all_reduce("sum", tape.gradient(scaled_loss, variables))
        if isinstance(self.optimizer, ShardedOptimizer):
            self.optimizer.apply(grads)
        else:
            self.optimizer.apply(grads, variables)
        return loss

    def _distributed_step(self, batch):
        summed = contextlib.nullcontext()  # ShardedOptimizer has its own override
        if not isinstance(self.optimizer, ShardedOptimizer):
            summed = _overridden(self.optimizer, _all_reduce_sum_gradients=_summed)
        with summed:
            losses = self.strategy.run(self._replica_step, args=batch)
        return self.strategy.reduce("sum", losses, axis=None)

    def fit(self, dataset, epochs=1, steps_per_epoch=None):
        """Trains the model.

        Args:
            dataset: a `tf.data.Dataset` of `(x, y)` batched at the global
                batch size (split across replicas, and sharded across
                workers by tf.data's auto-sharding), or a function
                `input_context -> dataset` batched at the per-replica size
                (`strategy.distribute_datasets_from_function`).
            epochs: int.
            steps_per_epoch: int, or None to run each epoch to the end of
                the dataset. With it, one iterator continues across epochs
                (repeat the dataset).

        Returns:
            A dict, `{"loss": [mean training loss of each epoch]}`.
        """
        if callable(dataset):
            distributed = self.strategy.distribute_datasets_from_function(dataset)
        else:
            distributed = self.strategy.experimental_distribute_dataset(dataset)
        history = {"loss": []}
        iterator = None
        for _ in range(epochs):
            if iterator is None or steps_per_epoch is None:
                iterator = iter(distributed)
            losses = [float(self._train_step(batch)) for batch in itertools.islice(iterator, steps_per_epoch)]
            history["loss"].append(float(np.mean(losses)))
        return history

    def _optimizer_state(self):
        if isinstance(self.optimizer, ShardedOptimizer):
            return self.optimizer.gather_state()
        return [np.asarray(v) for v in self.optimizer.variables]

    def save(self, path):
        """Writes the model weights and the full optimizer state to one `.npz` file, atomically.

        All replicas (all workers) must call it; the chief worker writes.
        Keys: `model/<i>` (`model.weights` order) and `optimizer/<i>` (the
        unsharded `optimizer.variables` order).

        Args:
            path: str, the file to write.
        """
        arrays = {f"model/{i}": np.asarray(v) for i, v in enumerate(self.model.weights)}
        arrays.update({f"optimizer/{i}": v for i, v in enumerate(self._optimizer_state())})
        if self.strategy.extended.should_checkpoint:
            atomic_write(path, lambda tmp: _savez(tmp, arrays))

    def load(self, path):
        """Restores `save`'s file, on any number of replicas, sharded or not.

        Args:
            path: str.
        """
        with np.load(path) as f:
            model = [f[f"model/{i}"] for i in range(len(self.model.weights))]
            optimizer = [f[f"optimizer/{i}"] for i in range(sum(k.startswith("optimizer/") for k in f.files))]
        expected = self.optimizer.optimizer if isinstance(self.optimizer, ShardedOptimizer) else self.optimizer
        if len(optimizer) != len(expected.variables):
            raise ValueError(
                f"{path} holds {len(optimizer)} optimizer variables; this optimizer has "
                f"{len(expected.variables)}: another optimizer type or model?"
            )
        self.model.set_weights(model)
        if isinstance(self.optimizer, ShardedOptimizer):
            self.optimizer.load_state(optimizer)
        else:
            self.optimizer.load_own_variables({str(i): v for i, v in enumerate(optimizer)})
