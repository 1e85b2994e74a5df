"""Float descriptors on demand for the hash first pass (issue 23, docs/fleet.md "Hashes"): a mixin of FleetLink.

A robot searching hashes first (``index.first_pass: hash``) indexes other robots' keyframes from their
64-byte hashes; when some are among the Hamming candidates of a new keyframe, the detector asks for
their float descriptors (``LoopClosureDetector.fetch_global`` -> :meth:`FleetFloatsMixin.fetch_global`)
with a GetKeyframeFeatures request of ``global_only`` true, answered from the owner's keyframes in
memory (no local features read). Every service call of the link goes through :meth:`_call_features`.
Uses FleetLink's ``robot_id``, ``_node``, ``_detector``, ``_settings``, ``_servers``, ``_clients``,
``_mutex``, ``_own``, ``_bucket``, ``_count``, ``_warn``, ``_refuse`` and ``_sent``.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Sequence

from rclpy.serialization import serialize_message
from vpr_ros_msgs.srv import GetKeyframeFeatures

from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import ConfigError, FleetError
from vpr_ros.core.fleet.bandwidth import TokenBucket
from vpr_ros.core.fleet.remote_keyframes import decode_globals, encode_globals
from vpr_ros.core.fleet.validation import Refused, check_ids
from vpr_ros.core.hash_index import HASH_PRESETS
from vpr_ros.core.types import Keyframe
from vpr_ros.nodes.settings import NodeSettings

__all__ = ["FleetFloatsMixin", "FLOAT_COUNTERS"]

#: Counters of the float descriptors fetched for the hash first pass (``fleet.<name>``).
FLOAT_COUNTERS = ("globals_requested", "globals_received", "bytes_received.globals", "bytes_sent.globals")


class FleetFloatsMixin:
    """Fetches and answers float descriptors of keyframes (see the module docstring)."""

    robot_id: str
    _node: Any
    _detector: LoopClosureDetector
    _settings: NodeSettings
    _servers: dict[tuple[str, str], str]
    _clients: dict[str, Any]
    _mutex: threading.Lock
    _own: dict[tuple[str, int], int]
    _bucket: TokenBucket
    _count: Callable[[str, int], None]
    _warn: Callable[[str, str], None]
    _refuse: Callable[..., None]
    _sent: Callable[[str, int], None]

    def _check_send_mode(self) -> str:
        """``fleet.send_descriptors``; ConfigError at startup when it is ``hash`` and the model gives none."""
        mode = self._settings.fleet_send_descriptors
        if mode == "hash" and not getattr(self._detector.model, "hash_bits", 0):
            raise ConfigError(f"fleet.send_descriptors=hash sends keyframes' binary hashes, but model "
                              f"{self._detector.model_id!r} gives none: set model.preset to "
                              f"{' or '.join(HASH_PRESETS)}, or fleet.send_descriptors float16")
        return mode

    @property
    def _first_pass(self) -> str:
        """What the own detector searches first (``index.first_pass``): decides which batches it can index."""
        return self._detector.config.index.first_pass

    @property
    def hash_bytes(self) -> int:
        """Bytes of the own model's hash (0: none): what peers' hashes must have."""
        return int(getattr(self._detector.model, "hash_bits", 0)) // 8

    def _call_features(self, robot: str, session: str, ids: list[int], global_only: bool = False) -> Any:
        """GetKeyframeFeatures of the peer ``(robot, session)`` for ``ids``; the successful response, or
        FleetError (service missing, no answer within fleet.request_timeout_sec, success false)."""
        with self._mutex:
            service = self._servers.get((robot, session), "")
        client = self._clients.get(service)
        timeout = self._settings.fleet_request_timeout_sec
        if client is None or not client.wait_for_service(timeout_sec=timeout):
            raise FleetError(f"its features service {service or '(unknown)'} is not available; is it running?")
        done = threading.Event()
        future = client.call_async(GetKeyframeFeatures.Request(
            robot_id=robot, session_id=session, descriptor_model=self._detector.model_id, keyframe_ids=ids,
            global_only=global_only))
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            raise FleetError(f"no answer from {service} within {timeout:g} s (fleet.request_timeout_sec)")
        response = future.result()
        if not response.success:
            raise FleetError(response.message[:200])
        return response

    def fetch_global(self, keyframes: Sequence[Keyframe]) -> None:
        """Detector hook (processing thread): fill ``global_`` of other robots' keyframes known by their
        hash only, one request per owner; a keyframe its owner does not answer usably stays without
        (the hash first pass leaves it out of this query) and is asked for again when next a candidate."""
        groups: dict[tuple[str, str], list[Keyframe]] = collections.defaultdict(list)
        for kf in keyframes:
            groups[(kf.robot_id, kf.session_id)].append(kf)
        dim = self._detector.model.global_dim
        for (robot, session), kfs in groups.items():
            self._count("fleet.globals_requested", len(kfs))
            try:
                response = self._call_features(robot, session, [kf.id for kf in kfs], global_only=True)
                got_ids = check_ids([int(i) for i in response.keyframe_ids], "float descriptor answer ids")
                if not set(got_ids) <= {kf.id for kf in kfs}:
                    raise Refused("id", "float descriptor answer holds keyframes that were not asked for")
                self._count("fleet.bytes_received.globals", len(response.global_descriptors))
                got = decode_globals(got_ids, bytes(response.global_descriptors), dim)
            except Exception as exc:  # noqa: BLE001 - a peer's answer must never cost the frame
                if isinstance(exc, Refused):
                    self._refuse(robot, session, exc.reason, f"float descriptor answer: {exc}")
                self._count("fleet.fetch_failures", len(kfs))
                self._warn("fleet_fetch", f"fleet: no float descriptors from robot {robot!r}: {exc}")
                continue
            for kf in kfs:
                if kf.id in got:
                    kf.global_ = got[kf.id]
            self._count("fleet.globals_received", len(got))

    def _answer_globals(self, request: Any, response: Any, keys: Sequence[int | None]) -> Any:
        """A ``global_only`` request: the float descriptors of the requested own keyframes still held,
        read from memory (the features stay on disk)."""
        kept: list[Keyframe] = []
        for key, kid in zip(keys, request.keyframe_ids):
            try:
                kf = self._detector.keyframe(key) if key is not None else None
            except IndexError:  # the map was reset since
                kf = None
            if (kf is not None and request.robot_id == self.robot_id
                    and (kf.session_id, kf.id) == (request.session_id, int(kid))):
                kept.append(kf)
        response.keyframe_ids = [kf.id for kf in kept]
        response.global_descriptors = encode_globals(kept)
        response.success = True
        response.message = f"{len(kept)} of {len(request.keyframe_ids)} float descriptors"
        size = len(serialize_message(response))
        self._bucket.spend(size, time.monotonic())  # a peer's search waits: answered at once, like features
        self._sent("globals", size)
        return response
