"""The node's default DDS transport: a Fast DDS profile applied to its own process before rclpy starts.

A camera driver with default Fast DDS settings sends its frames to a process on the same host over the
builtin shared-memory transport. Its segment (owned by the *publisher*, 512 KiB by default) is much smaller
than one camera frame, so every frame travels as many fragments through it; a best-effort reader (the
node's input QoS, which every camera can match) loses a frame whenever it falls behind the writer by a few
fragments, and a reliable writer does not repair anything for a best-effort reader. Measured: 0-22 of 60
frames from 640x480 to 2048x1024 (docs/benchmarks.md). The node cannot change the camera's segment, but it
can leave shared memory out of its own participant: then the camera's frames reach it over UDP, where the
kernel socket buffer (4 MiB here, capped by ``net.core.rmem_max``) holds the fragments until it reads them.

:func:`apply_default_profile` does that through the environment of the node's own process (Fast DDS reads
``FASTRTPS_DEFAULT_PROFILES_FILE`` when rclpy creates the participant), and only when the user has not
chosen a profile or another middleware. ``MTL_PERCEPTION_FASTDDS_PROFILE=none`` keeps the middleware's
defaults; ``=<file>`` uses that file instead. Plain Python, no rclpy import.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent / "fastdds"
UDP_PROFILE = PROFILES_DIR / "node_udp.xml"
UDP_LOCALHOST_PROFILE = PROFILES_DIR / "node_udp_localhost.xml"
#: the user's own choice of a Fast DDS profile file (either name is read by Fast DDS 2.14)
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
OVERRIDE_VARIABLE = "MTL_PERCEPTION_FASTDDS_PROFILE"
FASTDDS_RMWS = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def _localhost_range(environ: MutableMapping[str, str]) -> bool:
    """Whether rcl will give this process the LOCALHOST discovery range (also the deprecated variable)."""
    return environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "") == "LOCALHOST" or (
        environ.get("ROS_LOCALHOST_ONLY", "") == "1"
    )


def apply_default_profile(environ: MutableMapping[str, str] | None = None) -> str:
    """Point Fast DDS at the node's UDP profile in ``environ`` (os.environ) unless the user chose otherwise.

    Call before ``rclpy.init``. Returns one line saying which transport configuration the node runs with
    (the node logs it). With the LOCALHOST discovery range the range is set to SUBNET and the localhost
    profile reproduces LOCALHOST discovery, because rmw_fastrtps would otherwise add its shared-memory
    transport back (see ``fastdds/node_udp_localhost.xml``). Raises FileNotFoundError naming a missing
    ``MTL_PERCEPTION_FASTDDS_PROFILE`` file.
    """
    environ = os.environ if environ is None else environ
    override = environ.get(OVERRIDE_VARIABLE, "")
    for name in PROFILE_VARIABLES:
        if environ.get(name):
            return f"Fast DDS profile from {name}={environ[name]} (set by the user)"
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw not in FASTDDS_RMWS:
        return f"{rmw} defaults (the node's Fast DDS profile does not apply)"
    if override.lower() == "none":
        return f"Fast DDS defaults ({OVERRIDE_VARIABLE}=none)"
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"{OVERRIDE_VARIABLE}={override}: no such Fast DDS profile file")
        environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = override
        return f"Fast DDS profile {override} ({OVERRIDE_VARIABLE})"
    if _localhost_range(environ):
        environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
        environ.pop("ROS_LOCALHOST_ONLY", None)
        environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(UDP_LOCALHOST_PROFILE)
        return f"UDPv4 only, 4 MiB socket buffers, localhost discovery ({UDP_LOCALHOST_PROFILE})"
    environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(UDP_PROFILE)
    return f"UDPv4 only, 4 MiB socket buffers ({UDP_PROFILE})"


def socket_buffer_limits() -> dict[str, int]:
    """The host's ``net.core.rmem_max`` / ``wmem_max`` in bytes (they cap the profile's 4 MiB buffers)."""
    limits = {}
    for name in ("rmem_max", "wmem_max"):
        try:
            limits[name] = int(Path(f"/proc/sys/net/core/{name}").read_text().strip())
        except (OSError, ValueError):
            continue
    return limits
