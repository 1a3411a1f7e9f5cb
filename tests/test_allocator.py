"""keep_freed_memory: after it, a loop that allocates the same few-MiB tensors again and again (what batched
prediction does) reuses freed memory instead of faulting fresh pages in from the OS."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pykinml.allocator import keep_freed_memory

LOOP = """
import resource, sys, torch
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    from pykinml.allocator import keep_freed_memory
    assert keep_freed_memory()
def work():
    x = torch.rand(128, 600, 8)  # 2.5 MB, like one (B, slots, 8) array of a batch of C5H5 frames
    parts = [x * k for k in range(6)]
    return sum(p.sum() for p in parts)
work()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    work()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_keeping_freed_memory_cuts_page_faults_of_repeated_allocations():
    if not keep_freed_memory():
        pytest.skip("the C library is not glibc")
    default, kept = page_faults("default"), page_faults("keep")
    assert kept * 4 < default, (kept, default)
