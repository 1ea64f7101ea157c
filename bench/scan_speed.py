"""Time fewdims.scan.scan_pairs over all 73,536 pairs of d=384 features (the BERT CLS size) on CPU.

Usage: .venv/bin/python bench/scan_speed.py [--threads 2] [--chunk 256] [--newton-steps 8]
Prints `pairs=73536 seconds=<t>`; the target is <= 60 s on 2 CPU cores.
"""
import argparse

import numpy as np
import torch

from fewdims.scan import scan_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--newton-steps", type=int, default=8)
    parser.add_argument("--dims", type=int, default=384)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n_train, n_dev, d = 2000, 872, args.dims
    # Random features with a few weakly informative dimensions, binary labels (SST-2-like sizes).
    x = rng.normal(size=(n_train + n_dev, d)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=n_train + n_dev) > 0).astype(np.int64)
    scan = scan_pairs(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                      chunk=args.chunk, newton_steps=args.newton_steps)
    print(f"pairs={len(scan.pairs)} seconds={scan.seconds:.1f}")
    print("top pairs:", [(i, j, round(s, 3)) for i, j, s in scan.top(3)])


if __name__ == "__main__":
    main()
