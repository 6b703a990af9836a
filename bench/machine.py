"""How busy the machine is: CPU seconds of everything and of this process, to flag noisy runs."""
from __future__ import annotations

import os
from pathlib import Path


def busy_cpu_s() -> float | None:
    """CPU seconds all processes on the machine have used since boot (Linux), to spot a busy neighbour."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and of the children it has waited for (all of them, at the end)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds one running process (all its threads) has used so far (Linux), to cost a step per item."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes_cpu_s(pids: dict[str, int]) -> dict[str, float | None]:
    """`process_cpu_s` of each named process."""
    return {name: process_cpu_s(pid) for name, pid in pids.items()}


def cpu_used_since(before: dict[str, float | None], pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds each named process has used since `before` (from `processes_cpu_s`); unreadable ones left out."""
    now = processes_cpu_s(pids)
    return {name: now[name] - before[name] for name in pids if before.get(name) is not None and now[name] is not None}


def closed_loop_mean_floor_ms(cpu_s: float, requests: int, in_flight: int, cores: int) -> float:
    """The least mean latency `in_flight` clients that each send again as soon as answered can see, when every
    request costs `cpu_s / requests` of CPU (all processes together): at best the `cores` do nothing else, so
    requests are answered at most `cores / cost` a second, and by Little's law the mean latency is at least
    `in_flight * cost / cores`."""
    return in_flight * cpu_s / requests / cores * 1000
