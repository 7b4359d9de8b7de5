"""The benchmarks' memory cgroup (`benchmarks.cgroup`): what the 10M session's memory claim rests on. It counts a
child's anonymous and shared memory once, and its cap kills a child that goes over it. Skipped where this process
may not create cgroups."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from benchmarks.cgroup import MemoryGroup

MB = 10**6

# a child that holds 200 MB of its own and writes 100 MB into a file in /dev/shm (what Ray's object store is), then
# waits until its stdin closes
HOLD = """
import mmap, sys
import numpy as np
own = np.ones(200 * 10**6 // 8)
with open(sys.argv[1], "w+b") as f:
    f.truncate(100 * 10**6)
    shared = mmap.mmap(f.fileno(), 100 * 10**6)
    for at in range(0, 100 * 10**6, 4096):
        shared[at] = 1
    print("holding", flush=True)
    sys.stdin.read()
"""


def _group(cap: int | None) -> MemoryGroup:
    group = MemoryGroup.create(cap)
    if isinstance(group, str):
        pytest.skip(group)
    return group


@pytest.fixture
def shm_file() -> Path:
    return Path("/dev/shm") / f"reranker-test-{uuid.uuid4().hex[:8]}"


def test_a_group_counts_a_child_s_own_and_shared_memory(shm_file: Path) -> None:
    group = _group(None)
    try:
        child = subprocess.Popen([sys.executable, "-c", HOLD, str(shm_file)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, preexec_fn=group.enter)  # fmt: skip
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        held = group.resident()
        child.communicate("")
        assert child.returncode == 0
        assert 300 * MB <= held <= 500 * MB  # 200 + 100, and the interpreter with numpy
        assert group.oom_kills() == 0
    finally:
        shm_file.unlink(missing_ok=True)  # its pages stay charged to the group while the file is there
        group.close()


def test_the_cap_kills_a_child_over_it(shm_file: Path) -> None:
    group = _group(250 * MB)
    try:
        child = subprocess.Popen([sys.executable, "-c", HOLD, str(shm_file)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, preexec_fn=group.enter)  # fmt: skip
        out, _ = child.communicate("")  # killed before it says it holds 300 MB
        assert "holding" not in out
        assert child.returncode == -9
        assert group.oom_kills() >= 1
    finally:
        shm_file.unlink(missing_ok=True)
        group.close()
