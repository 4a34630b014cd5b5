"""Reading PyTorch-side checkpoints into `{name: numpy array}` dicts."""

import os

import numpy as np

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Wrappers that training scripts put around the state dict.
WRAPPER_KEYS = ("model", "state_dict", "model_ema", "module")


def _unwrap(obj, path):
    while isinstance(obj, dict) and not any(hasattr(v, "shape") for v in obj.values()):
        key = next((k for k in WRAPPER_KEYS if k in obj), None)
        if key is None:
            raise ValueError(
                f"{path} holds no tensors at its top level and none of the usual wrappers "
                f"{WRAPPER_KEYS}; found keys {sorted(obj)[:10]}."
            )
        obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict; found {type(obj).__name__}.")
    return obj


def _is_low_precision_float(dtype):
    # ml_dtypes' bfloat16 (what safetensors.numpy returns) has kind "V", not "f".
    return (dtype.kind == "f" or dtype.name == "bfloat16") and dtype != np.float32


def read_state_dict(path):
    """Reads a checkpoint file as `{name: numpy array}`.

    `.safetensors` is read with `safetensors.numpy` (no torch needed);
    `.npz` with numpy; `.pth`/`.pt`/`.bin`/`.ckpt` with
    `torch.load(weights_only=True)`, which needs PyTorch. A `{"model": ...}`
    style wrapper is removed. bfloat16/float16 tensors are returned as
    float32.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            state = load_file(path)
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    elif lower.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
        except Exception as e:  # zipfile, pickle and format errors
            raise ValueError(f"{path} is not a readable .npz file: {e}") from e
    elif lower.endswith(TORCH_SUFFIXES):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"Reading {path} needs PyTorch (`pip install keras-swinv2[torch]`); or convert it to .safetensors."
            ) from e
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            with open(path, "rb") as f:
                head = f.read(12)
            found = (
                "a zip archive torch cannot read (damaged or cut short?)"
                if head.startswith(b"PK")
                else f"{os.path.getsize(path)} bytes starting with {head!r}, not a torch.save file"
            )
            raise ValueError(
                f"{path} is not a readable PyTorch checkpoint: expected a file written by torch.save, found "
                f"{found} (torch.load: {type(e).__name__}: {e})."
            ) from e
        state = {
            k: (v.float() if v.is_floating_point() else v).numpy()
            for k, v in _unwrap(obj, path).items()
            if isinstance(v, torch.Tensor)
        }
    else:
        raise ValueError(
            f"Unknown checkpoint format for {path!r}: expected .safetensors, .npz, "
            f"{', '.join(TORCH_SUFFIXES)}, .weights.h5 or .keras."
        )
    return {k: v.astype("float32") if _is_low_precision_float(v.dtype) else v for k, v in _unwrap(state, path).items()}


ALLOW_NONFINITE_ENV = "KERAS_SWINV2_ALLOW_NONFINITE"


def _allowed(allow_nonfinite):
    if allow_nonfinite is None:
        return os.environ.get(ALLOW_NONFINITE_ENV, "").lower() in ("1", "true", "yes")
    return bool(allow_nonfinite)


def check_finite(arrays, source, allow_nonfinite=None):
    """Raises if any floating-point array holds NaN or infinity.

    Args:
        arrays: iterable of `(name, array)` pairs.
        source: what the arrays come from (a path), for the message.
        allow_nonfinite: skip the check; None reads `$KERAS_SWINV2_ALLOW_NONFINITE`
            ("1" to allow).

    Raises:
        ValueError: naming each tensor (up to 20) with its count of NaN and
            infinite values, and the opt-out.
    """
    if _allowed(allow_nonfinite):
        return
    bad = []
    for name, array in arrays:
        array = np.asarray(array)
        if array.dtype.kind != "f" and array.dtype.name != "bfloat16":
            continue
        finite = np.isfinite(array)
        if not finite.all():
            nan = int(np.isnan(array).sum())
            bad.append(f"{name} {tuple(array.shape)}: {nan} NaN, {array.size - int(finite.sum()) - nan} infinite")
    if bad:
        shown = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise ValueError(
            f"{source} holds non-finite values in {len(bad)} tensor(s):\n  {shown}\n"
            f"A model loaded from it would output NaN. If this is intended, pass allow_nonfinite=True "
            f"or set ${ALLOW_NONFINITE_ENV}=1."
        )


def h5_arrays(path):
    """`(name, array)` for every dataset in an HDF5 file (`.weights.h5`), read one at a time."""
    import h5py

    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        for name in names:
            yield name, f[name][()]
