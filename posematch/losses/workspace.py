"""Scratch tensors of the matching loss kept from one call to the next, one set per thread.

On a CPU a freshly allocated block of a few MB or more is not free: the allocator hands the pages
back to the system when it is freed and faults them in again on first touch, and the first passes
over new memory run slower (on this machine up to 3x for the first ~10 passes over 27 MB). The
loss's (P, M, N) tensors are pure scratch (nothing the caller receives or autograd saves points
into them), so each call reuses the previous call's blocks, grown when a call needs more. CUDA's
caching allocator already does this: there ``scratch`` is a plain ``torch.empty``.
"""

from __future__ import annotations

import threading

import torch


class _Blocks(threading.local):
    def __init__(self) -> None:
        self.blocks: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}


_BLOCKS = _Blocks()


def scratch(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` with ``like``'s dtype and device, the same memory as
    the previous call's ``name`` (per thread, on a CPU). Its contents are garbage; the next call
    with this name overwrites them, so nothing that outlives the call may point into it."""
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    numel = 1
    for size in shape:
        numel *= size
    key = (name, like.dtype, like.device)
    block = _BLOCKS.blocks.get(key)
    if block is None or block.numel() < numel:
        block = _BLOCKS.blocks[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
    return block[:numel].view(shape)


def release() -> None:
    """Free this thread's blocks (they come back on the next call)."""
    _BLOCKS.blocks.clear()
