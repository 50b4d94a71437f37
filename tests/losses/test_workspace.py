"""The loss's scratch blocks: the same memory from call to call, grown on demand, per thread."""

from __future__ import annotations

import threading

import torch

from posematch.losses.workspace import release, scratch


def test_scratch_reuses_grows_and_is_per_thread():
    like = torch.zeros(1)
    first = scratch("test", (4, 8), like)
    smaller = scratch("test", (2, 3), like)
    assert smaller.shape == (2, 3) and smaller.data_ptr() == first.data_ptr()
    bigger = scratch("test", (16, 8), like)
    assert bigger.shape == (16, 8) and bigger.numel() == 128
    assert scratch("test", (16, 8), like).data_ptr() == bigger.data_ptr()
    assert scratch("other", (4, 8), like).data_ptr() != bigger.data_ptr()
    assert scratch("test", (4, 8), torch.zeros(1, dtype=torch.float64)).dtype == torch.float64

    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(scratch("test", (16, 8), like)))
    thread.start()
    thread.join()
    assert elsewhere[0].data_ptr() != bigger.data_ptr()  # another thread, other memory
    release()  # the blocks go; the next call makes new ones
