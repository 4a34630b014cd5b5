"""The backend module: private APIs it relies on, and the package's layering rules."""

import ast
import pathlib

import numpy as np
import pytest

import keras

import keras_swinv2
from keras_swinv2 import backend

PACKAGE = pathlib.Path(keras_swinv2.__file__).parent
BACKEND = keras.backend.backend()

# Import layers, lowest first: a module may import only from its own layer or below.
LAYERS = [
    {"version", "io_utils", "backend", "export"},
    {"layers", "data", "metrics"},
    {"weights"},
    {"models"},
    {"tasks"},
    {"applications"},
    {"training"},
    {"simmim", "distribute"},
    {"cli", "__init__"},
]


def _rank(module):
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"keras_swinv2.{top} is in no layer of this test; add it to LAYERS")


def _package_imports():
    """`{module: {imported keras_swinv2 modules}}` for every module, top-level and lazy imports alike."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_swinv2"):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names if a.name.startswith("keras_swinv2"))
        graph[module] = imported
    return graph


def test_imports_point_down_only():
    """layers / data / metrics <- weights <- models <- tasks <- applications <- training <- simmim /
    distribute <- cli."""
    upward = []
    for module, imported in _package_imports().items():
        if module == "keras_swinv2":
            continue
        for target in imported:
            if target == "keras_swinv2":
                continue
            if _rank(target) > _rank(module):
                upward.append(f"{module} imports {target}")
    # the two `from_preset` class methods of the backbone reach the presets of their own package
    assert upward == [], upward


def test_no_import_cycles():
    graph = _package_imports()
    modules = set(graph)

    def resolve(name):
        return name if name in modules else None

    seen, stack = set(), []

    def visit(module):
        if module in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(module) :] + [module]))
        if module in seen:
            return
        stack.append(module)
        for target in graph.get(module, ()):
            if resolve(target) and target != "keras_swinv2":
                visit(target)
        stack.pop()
        seen.add(module)

    for module in sorted(modules):
        if module != "keras_swinv2":
            visit(module)


def test_only_the_backend_module_branches_on_the_backend():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "backend.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("keras.backend.backend", "backend.name"):
                # the CLI prints the backend's name; export.py's subject is which backend exports what
                if path.name not in ("cli.py", "export.py"):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == [], offenders


@pytest.mark.skipif(BACKEND != "torch", reason="a torch private API")
def test_torch_softmax_backward_data_still_exists():
    """`backend.softmax` (flushed, on torch) calls torch's private softmax gradient."""
    import torch

    assert hasattr(torch, "_softmax_backward_data"), (
        f"torch {torch.__version__} has no torch._softmax_backward_data (checked with "
        f"{backend.PRIVATE_API_VERSIONS['torch']}): rewrite backend._FlushedSoftmax.backward"
    )
    logits = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 5, dtype=torch.float64)
    (expected,) = torch.autograd.grad(torch.softmax(logits, -1), logits, grad)
    got = torch.autograd.grad(backend.softmax(logits), logits, grad)[0]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-12)


def test_keras_private_apis_still_exist():
    """`seed_generator_states` finds Keras seed generators by their state variable's name;
    `sublayers` uses `Layer._flatten_layers` (both checked with Keras 3.15.1)."""
    layer = keras.layers.Dropout(0.5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), layer])
    states = backend.seed_generator_states(model)
    assert len(states) == 1 and states[0] is layer.seed_generator.state, (
        f"Keras {keras.__version__} renamed the SeedGenerator state variable (checked with "
        f"{backend.PRIVATE_API_VERSIONS['keras']}): update backend.seed_generator_states"
    )
    block = keras_swinv2.layers.SwinV2Block(8, 2, window_size=4)
    block.build((1, 8, 8, 8))
    children = backend.sublayers(block)
    assert block.attn in children and block.mlp in children
    assert block.attn.qkv in backend.sublayers(block, recursive=True)


@pytest.mark.skipif(BACKEND != "torch", reason="the in-place path is eager torch inference only")
def test_torch_overwrite_is_in_place_only_without_autograd():
    """`gelu` and `add_shared_bias` write into a given-up input under no_grad, never when autograd
    records (the input is needed for the gradient); the values are those of the plain ops."""
    import torch

    x = torch.randn(4, 6)
    bias = torch.randn(1, 6)
    expected_gelu, expected_sum = torch.nn.functional.gelu(x), x + bias
    with torch.no_grad():
        a, b = x.clone(), x.clone()
        assert backend.gelu(a, overwrite=True) is a
        assert backend.add_shared_bias(b, bias, overwrite=True) is b
        torch.testing.assert_close(a, expected_gelu, rtol=0, atol=0)
        torch.testing.assert_close(b, expected_sum, rtol=0, atol=0)
        c = x.clone()
        assert backend.gelu(c, overwrite=False) is not c  # not given up: left alone
    leaf = x.clone().requires_grad_()
    y = leaf * 1.0
    out = backend.gelu(y, overwrite=True)
    assert out is not y
    out.sum().backward()
    assert torch.isfinite(leaf.grad).all()


@pytest.mark.skipif(BACKEND != "torch", reason="the in-place path is eager torch inference only")
def test_torch_inference_without_autograd_gives_the_same_logits():
    """A model under no_grad (in-place GELU and bias) equals the same model with autograd on."""
    import torch

    from helpers import SMALL

    model = keras_swinv2.SwinV2(input_shape=(32, 32, 3), classes=5, **SMALL)
    images = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32"))
    recorded = model(images, training=False).detach()
    with torch.no_grad():
        in_place = model(images, training=False)
    torch.testing.assert_close(in_place, recorded, rtol=0, atol=0)
