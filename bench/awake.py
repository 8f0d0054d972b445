"""Every CPU kept from halting while idle, for one diagnostic: what this VM's wake-ups add.

At concurrency 1 a request through a gateway crosses CPUs four times (client to gateway to
upstream and back), and each time it wakes a CPU that sat idle. On a VM an idle CPU halts, and
waking it goes through the hypervisor. DIRECT pays none of this: its client and upstream share a
CPU, so one simply hands that CPU to the other. A PM QoS request for zero wake-up latency
(``/dev/cpu_dma_latency``, as cyclictest and tuned's latency-performance profile make it) leaves
idle CPUs in the kernel's polling state instead, for as long as the file is held open. Rows
measured so show the gateway's own added latency.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")


def unavailable() -> str | None:
    """Why CPUs cannot be kept awake here, or None."""
    if not CPU_DMA_LATENCY.exists():
        return f"{CPU_DMA_LATENCY} does not exist"
    if not os.access(CPU_DMA_LATENCY, os.W_OK):
        return f"{CPU_DMA_LATENCY} is not writable (root only)"
    return None


@contextlib.contextmanager
def cpus_kept_awake(device: Path = CPU_DMA_LATENCY) -> Iterator[None]:
    """Ask for zero wake-up latency while the block runs; the request ends when the file
    closes, so nothing outlives the bench, not even a crash."""
    fd = os.open(device, os.O_WRONLY)
    try:
        # The device takes the latency in microseconds as a native 32-bit integer.
        os.write(fd, struct.pack("i", 0))
        yield
    finally:
        os.close(fd)
