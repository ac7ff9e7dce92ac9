"""Training throughput of the local FM engine, printed as one JSON line.

For a MovieLens-100k-sized (943 users × 1682 items, 100k ratings) and a 5M-interaction synthetic
data set (25k users × 30k items): samples per second over whole implicit-mode epochs (positives
plus 4 sampled negatives each), with and without side features, at the default hyperparameters.

    python bench/train.py [--sizes 100k,5M] [--epochs 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from batch.config import DataConfig, FMHyperparameters
from batch.data import load_dataset
from batch.data.synth import generate
from batch.features.design import build_design
from batch.train.local import LocalFMTrainer, import_torch
from batch.train.samples import training_source

SIZES = {"100k": (943, 1682, 100_000), "5M": (25_000, 30_000, 5_000_000)}


def bench_size(name: str, workdir: Path, epochs: int) -> dict:
    users, items, interactions = SIZES[name]
    data = workdir / f"synthetic-{name}"
    started = time.perf_counter()
    if not (data / "ua.test").exists():
        generate(data, users=users, items=items, interactions=interactions, seed=0)
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    dataset = load_dataset(DataConfig(path=str(data)))
    ingest_s = time.perf_counter() - started
    result = {"users": users, "items": items, "interactions": interactions,
              "synth_seconds": round(generate_s, 2), "ingest_seconds": round(ingest_s, 2)}
    for features in (False, True):
        design = build_design(dataset, use_features=features)
        source = training_source(dataset, "implicit", threshold=4, negatives=4, seed=0)
        hp = FMHyperparameters(epochs=epochs)
        fit = LocalFMTrainer("auto").fit(design, source, None, hp, "binary_classifier")
        result["with_features" if features else "ids_only"] = {
            "feature_dim": design.layout.feature_dim, "epochs": epochs,
            "samples_per_s": fit.details["samples_per_s"], "seconds": fit.details["seconds"],
            "device": fit.details["device"]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,5M")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="keep generated data here (default: a temp dir)")
    args = parser.parse_args()
    torch = import_torch()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        report = {"benchmark": "train", "python": platform.python_version(), "torch": torch.__version__,
                  "threads": torch.get_num_threads(), "batch_size": FMHyperparameters().mini_batch_size}
        for name in args.sizes.split(","):
            report[name] = bench_size(name, workdir, args.epochs)
            print(f"{name}: done", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
