"""A memory cgroup for one benchmarked command: the kernel's own count of the memory its process tree holds (each
page once, shared memory included: Ray's object store is charged once, however many processes map it) and,
with a limit, a hard cap the command has to finish under (over it, the kernel reclaims the page cache and then
kills a process of the group: the command fails). Created where this process may (root, or a delegated
subtree), on cgroup v2 or v1's memory controller; elsewhere `MemoryGroup.create` says why not.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _counts(file: Path) -> dict[str, int]:
    """A cgroup file of `name value` lines (memory.stat, memory.events, memory.oom_control)."""
    return {k: int(v) for k, v in (line.split() for line in file.read_text().splitlines())}


@dataclass(frozen=True)
class MemoryGroup:
    path: Path
    version: int  # 2: the unified hierarchy; 1: the memory controller's own

    @classmethod
    def create(cls, limit_bytes: int | None = None, parent: Path = ROOT) -> MemoryGroup | str:
        """A new group under `parent` (the v2 root, or v1's `memory/`), capped at `limit_bytes` (None: no cap,
        counted only); a sentence saying why not where it cannot be made."""
        name = f"reranker-bench-{uuid.uuid4().hex[:8]}"
        if (parent / "cgroup.controllers").exists():
            version, base, limits = 2, parent, ["memory.max", "memory.swap.max"]
        elif (parent / "memory" / "memory.stat").exists():
            version, base = 1, parent / "memory"
            limits = [
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
            ]  # memsw: swap too (when accounted)
        else:
            return f"no cgroup memory controller under {parent}"
        if version == 2 and "memory" not in (parent / "cgroup.subtree_control").read_text().split():
            return f"the memory controller is not enabled for {parent}'s children"
        group = cls(base / name, version)
        try:
            group.path.mkdir()
            if limit_bytes is not None:
                for file in limits:
                    if (group.path / file).exists():
                        (group.path / file).write_text(str(int(limit_bytes)) if version == 1 or file == "memory.max"
                                                       else "0")  # fmt: skip
        except OSError as exc:
            group.close()
            return f"cannot create or cap a memory cgroup in {base}: {exc.strerror}"
        return group

    def enter(self) -> None:
        """Move the calling process into the group (a child's `preexec_fn`: what it starts is in the group too)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def resident(self) -> int:
        """Bytes held now that the kernel cannot drop: anonymous memory and shared memory (tmpfs, /dev/shm), each
        page once; not the page cache of files read or written, which it reclaims under the cap."""
        stat = _counts(self.path / "memory.stat")
        if self.version == 2:
            return stat["anon"] + stat["shmem"]
        return stat["total_rss"] + stat["total_shmem"]

    def oom_kills(self) -> int:
        """How many processes the kernel killed in the group for want of memory under its cap."""
        return _counts(self.path / ("memory.events" if self.version == 2 else "memory.oom_control")).get(
            "oom_kill", 0
        )

    def close(self) -> None:
        """Remove the group (its processes have exited; the charge of what they left in tmpfs moves up)."""
        if self.path.exists():
            os.rmdir(self.path)
