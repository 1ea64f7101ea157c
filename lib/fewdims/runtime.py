"""Process settings for training and analysis passes: the accelerator, bf16 support, the allocator, progress bars.

Training runs on `accelerate`: on a CPU in-process (bf16 autocast where the CPU supports it); on one or several
GPUs the same code runs under `accelerate launch`. Note: a bare `accelerate launch` on a CPU sets one thread per
process; pass `--cpu --num_processes 1` (or just call `train` in-process) to use every core.
"""
from __future__ import annotations

import functools
import os
import sys

import torch

from .errors import FewdimsError


def show_progress() -> bool:
    """Bars on a terminal only: papermill kernels have no tty, and their logs would flood."""
    env = os.environ.get("FEWDIMS_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "")
    return sys.stderr.isatty() and "ipykernel" not in sys.modules


def bf16_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@functools.cache  # process-wide and not undoable: decided once, on the first run
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    By default every tensor above ~128 KB-32 MB is a fresh mmap, and unmapped again when freed: each training
    step then page-faults its activations in anew, and the kernel zeroes every page. Measured on a 2-core CPU:
    on a quiet machine fewdims gains little from it (it already reuses its big buffers; bench, one run each:
    0.97x on SST-2, within noise, 1.12x on RTE), but while another process shares the cores, page faults stall
    both threads and SST-2 runs trained 2-5x faster with it (alternating runs beside the cpu grid). The Trainer,
    which allocates more per step, gained 23 % on a quiet machine (bench, tuned_kept_memory). Only where memory
    comes from; the arithmetic is unchanged (tested). Linux/glibc only; FEWDIMS_KEEP_FREED_MEMORY=0 turns it off
    (for side-by-side measurements). Returns whether it is on."""
    if os.environ.get("FEWDIMS_KEEP_FREED_MEMORY", "1") in ("0", "false", "") or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))


def make_accelerator(precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    keep_freed_memory()  # every training or analysis pass starts here

    # Each run may ask for a different precision; accelerate keeps a process-wide singleton state.
    AcceleratorState._reset_state(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_available(device))
    if use_bf16 and not bf16_available(device):
        raise FewdimsError("precision='bf16' is not supported on this device; use precision='auto' or 'fp32'")
    return Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=device.type == "cpu")
