"""Private network namespaces for anything that opens a DDS participant in tests and benchmarks.

DDS discovery multicasts on every interface; inside ``unshare -rn`` with only loopback up nothing
can leave the machine. ROS-free (no rclpy import).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["in_isolated_netns", "netns_argv"]


def in_isolated_netns() -> bool:
    """True when this process's network namespace has no interface but loopback."""
    # /proc/self/net follows this process's namespace; /sys/class/net shows the namespace sysfs
    # was mounted in, so it would still list the host's interfaces after unshare.
    try:
        lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return {line.split(":", 1)[0].strip() for line in lines} == {"lo"}


def netns_argv(argv: list[str]) -> list[str]:
    """Wrap ``argv`` so it runs in a private network namespace with loopback up (already isolated:
    only bring ``lo`` up)."""
    if in_isolated_netns():
        return ["sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh", *argv]
    return ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]
