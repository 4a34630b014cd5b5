"""Gradient checkpointing that also saves memory under XLA on CPU."""

import keras


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
    if keras.backend.backend() != "jax":
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
