"""Fine-tuning recipes on the offline dataset: full vs attention-only vs linear probe.

A small SwinV2 is pre-trained with SimMIM on scikit-learn's digits (labels
unused), then fine-tuned three ways from the same encoder; a from-scratch run
is the baseline. Prints a markdown table and writes JSON.

    KERAS_BACKEND=tensorflow python benchmarks/recipes.py --output runs/recipes
"""

import argparse
import json
import math
import os
import time

from keras_swinv2.simmim import PretrainConfig, pretrain
from keras_swinv2.training import FinetuneConfig, finetune

ARCH = {"embed_dim": 32, "depths": (2, 2, 2), "num_heads": (2, 4, 8)}
AUG = {"crop_scale": (0.6, 1.0), "flip": False, "erasing": None, "mixup": None, "cutmix": None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/recipes")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    import keras

    t = time.time()
    pre = os.path.join(args.output, "simmim")
    _, history = pretrain(
        PretrainConfig(
            data="digits",
            model="tiny",
            architecture=ARCH,
            image_size=32,
            window_size=4,
            mask_patch_size=8,
            epochs=args.pretrain_epochs,
            warmup_epochs=2,
            batch_size=32,
            drop_path_rate=0.0,
        ),
        pre,
        verbose=2,
    )
    rows = [
        {
            "run": "SimMIM pre-training",
            "epochs": args.pretrain_epochs,
            "result": f"L1 loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}",
            "seconds": round(time.time() - t),
        }
    ]
    encoder = os.path.join(pre, "encoder.keras")
    runs = [
        ("from scratch, full", dict(model="tiny", architecture=ARCH, learning_rate=2e-3)),
        ("SimMIM, full fine-tuning", dict(model=encoder, learning_rate=2e-3, layer_decay=0.85)),
        ("SimMIM, attention-only", dict(model=encoder, learning_rate=2e-3, mode="attention")),
        ("SimMIM, linear probe", dict(model=encoder, learning_rate=1e-2, mode="head", weight_decay=0.0)),
    ]
    for name, settings in runs:
        t = time.time()
        config = FinetuneConfig(
            data="digits",
            image_size=32,
            window_size=4,
            epochs=args.epochs,
            batch_size=32,
            drop_path_rate=0.0,
            augmentation=AUG,
            **settings,
        )
        model, data, history = finetune(
            config, os.path.join(args.output, name.replace(" ", "_").replace(",", "")), verbose=2
        )
        best = max(row["val_accuracy"] for row in history)
        trainable = sum(math.prod(v.shape) for v in model.trainable_variables)
        rows.append(
            {
                "run": name,
                "epochs": args.epochs,
                "result": f"val accuracy {best:.2%} (trainable params {trainable:,})",
                "seconds": round(time.time() - t),
            }
        )
    print(f"\nbackend {keras.backend.backend()}; digits: 1438 train / 359 validation images, 32 px\n")
    print("| run | epochs | result | wall s |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['epochs']} | {row['result']} | {row['seconds']} |")
    with open(os.path.join(args.output, "recipes.json"), "w") as f:
        json.dump({"backend": keras.backend.backend(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
