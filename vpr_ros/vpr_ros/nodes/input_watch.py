"""The node says when its camera input is missing, lossy or refused (issue 18), and logs its loops.

One :class:`InputWatch` per node watches the ``image`` subscription:

- no image ``input.timeout_sec`` after start (WARN, throttled log naming the resolved topic, its
  expected type, the image topics that have publishers and the likely fix); a stream that stops for
  that long afterwards is a WARN too, logged once per stall;
- frames lost before the node (``input.frames_lost``, from header stamp gaps against the typical
  period, input_health.StampGaps): WARN while the recent loss share exceeds ``input.max_loss_ratio``;
- publishers whose QoS the subscription cannot accept (rclpy's incompatible-QoS event): counted, WARN
  naming the policy;
- every published loop closure, summarised in at most one INFO line per second.

Its own timer checks; the diagnostics timer reads :meth:`InputWatch.diagnostics`.
:func:`init_rclpy` is the nodes' ``rclpy.init`` that turns a missing or broken ``--params-file`` into
one line and exit code 2 (issue 20) instead of an RCLError traceback.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import qos_policy_name_from_kind

from vpr_ros.core.errors import VprError
from vpr_ros.core.types import LoopClosure
from vpr_ros.nodes.input_health import IMAGE_TYPES, LoopReport, StampGaps, no_input_hint, params_file_problem
from vpr_ros.nodes.settings import NodeSettings

__all__ = ["InputWatch", "init_rclpy"]

_TICK_SEC = 0.25
_LISTED = 12  # image topics named in the no-input warning
_GRAPH_SEC = 1.0  # how often the no-input check asks the graph


class InputWatch:
    """See the module docstring. ``warn(key, text)`` is the node's throttled warning."""

    def __init__(self, node: Node, image_type: type, settings: NodeSettings,
                 warn: Callable[[str, str], None]) -> None:
        self._node, self._warn, self._settings = node, warn, settings
        self.type_name = IMAGE_TYPES[1] if image_type.__name__ == "CompressedImage" else IMAGE_TYPES[0]
        self.topic = node.resolve_topic_name("image")
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_frame: float | None = None
        self._stall_logged = False
        self._gaps = StampGaps()
        self._report = LoopReport(1.0)
        self._incompatible, self._policy = 0, ""
        self._problems: list[str] = []
        self._graph: dict[str, str] = {}
        self._graph_asked: tuple[float, dict[str, list[str]], list[str]] = (-1e18, {}, [])
        node.create_timer(_TICK_SEC, self.tick)

    def event_callbacks(self) -> SubscriptionEventCallbacks:
        """For the image subscription: count and report publishers with incompatible QoS."""
        return SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)

    def attach(self, subscription: Any) -> None:
        """The image subscription, for its fully resolved topic name (remappings applied)."""
        self.topic = subscription.topic_name

    # -- events ------------------------------------------------------------------------------
    def frame(self, stamp: Any) -> None:
        """An image arrived (callback thread): its header stamp feeds the loss estimate."""
        with self._lock:
            self._last_frame = time.monotonic()
            self._stall_logged = False
        self._gaps.add(int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec))

    def loops(self, loops: Sequence[LoopClosure]) -> None:
        """Loops just published (processing thread); logged in the next summary line."""
        if loops:
            last = loops[-1]
            self._report.add(len(loops), f"keyframe {last.query_id} ({last.query_robot_id}) -> "
                                         f"{last.match_id} ({last.match_robot_id}), score {last.score:.3g}, "
                                         f"{last.local_matches} local matches")
            self._log_loops()

    def _on_incompatible_qos(self, event: QoSRequestedIncompatibleQoSInfo) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        with self._lock:
            self._incompatible, self._policy = int(event.total_count), policy
        self._warn("incompatible_qos", f"a publisher on {self.topic} offers QoS incompatible with this "
                                       f"subscription ({policy}; qos.reliability is "
                                       f"{self._settings.qos_reliability}): no image from it will arrive")

    def _log_loops(self) -> None:
        line = self._report.due(time.monotonic())
        if line is not None:
            self._node.get_logger().info(line)

    # -- checks (timer) ------------------------------------------------------------------------
    def tick(self) -> None:
        self._log_loops()
        now = time.monotonic()
        timeout = self._settings.input_timeout_sec
        with self._lock:
            last, incompatible, policy = self._last_frame, self._incompatible, self._policy
        problems: list[str] = []
        graph: dict[str, str] = {}
        if timeout > 0 and now - (last or self._start) >= timeout:
            problem, graph = self._no_input(now - (last or self._start), last is None)
            problems.append(problem)
        lost, recent = self._gaps.recent()
        if recent and lost / (lost + recent) > self._settings.input_max_loss_ratio:
            period = self._gaps.period_ns() or 0.0
            text = (f"about {lost} of the last {lost + recent} frames on {self.topic} were lost before reaching "
                    f"the node ({100.0 * lost / (lost + recent):.0f}%, from header stamp gaps against a "
                    f"{period / 1e6:.1f} ms period): the link or the publisher drops them (best-effort QoS "
                    "does so silently); use qos.reliability reliable, or a lower rate or resolution")
            problems.append(text)
            self._warn("frames_lost", text)
        if incompatible:
            problems.append(f"{incompatible} publisher(s) on {self.topic} with incompatible QoS ({policy})")
        with self._lock:
            self._problems, self._graph = problems, graph

    def _image_topics(self) -> tuple[dict[str, list[str]], list[str]]:
        """Image topics with publishers -> their types, and the types published on ``self.topic``;
        outputs of vpr nodes (debug_image) are no cameras. Asked of the graph at most once a second."""
        now = time.monotonic()
        if now - self._graph_asked[0] >= _GRAPH_SEC:
            published: dict[str, list[str]] = {}
            for name, types in self._node.get_topic_names_and_types():
                if set(types) & set(IMAGE_TYPES):
                    infos = [i for i in self._node.get_publishers_info_by_topic(name) if i.topic_type in IMAGE_TYPES]
                    if any(i.node_name != self._node.get_name() for i in infos):
                        published[name] = sorted({i.topic_type for i in infos})
            own = sorted({info.topic_type for info in self._node.get_publishers_info_by_topic(self.topic)})
            self._graph_asked = (now, published, own)
        return self._graph_asked[1], self._graph_asked[2]

    def _no_input(self, silent: float, never: bool) -> tuple[str, dict[str, str]]:
        published, own = self._image_topics()
        names = sorted(published)
        listed = ", ".join(f"{name} ({'/'.join(published[name])})" for name in names[:_LISTED]) or "none"
        if len(names) > _LISTED:
            listed += f" and {len(names) - _LISTED} more"
        when = "since start" if never else "since the last one"
        text = (f"no image on {self.topic} ({self.type_name}) for {silent:.1f} s {when}; "
                f"image topics with publishers: {listed}; "
                + no_input_hint(self.type_name, own, published, self.topic))
        if never:  # throttled; at once when the graph changed (a camera topic appeared)
            self._warn(f"no_input {listed}", text)
        else:
            with self._lock:
                logged, self._stall_logged = self._stall_logged, True
            if not logged:
                self._node.get_logger().warning(text)
        return text, {"input.image_topics": listed}

    def diagnostics(self) -> tuple[dict[str, str], list[str]]:
        """(key/values, warnings) for the diagnostics message (see docs/ros2.md)."""
        now = time.monotonic()
        with self._lock:
            last, problems, graph = self._last_frame, list(self._problems), dict(self._graph)
            incompatible, policy = self._incompatible, self._policy
        lost, recent = self._gaps.recent()
        period = self._gaps.period_ns()
        values = {"input.topic": self.topic, "input.type": self.type_name,
                  "input.since_last_image_sec": f"{now - (last or self._start):.1f}",
                  "input.frames_lost": str(self._gaps.lost),
                  "input.loss_ratio": f"{lost / (lost + recent):.3f}" if recent else "0.000",
                  "input.stamp_period_ms": f"{period / 1e6:.2f}" if period else "",
                  "input.incompatible_qos": str(incompatible), "input.incompatible_qos_policy": policy, **graph}
        return values, problems


def init_rclpy(args: list[str] | None, prog: str) -> int | None:
    """``rclpy.init(args=args)``; on a missing, unreadable or unparsable parameter file (or other bad
    ROS arguments) print one line naming it and return 2 (the exit code), else None."""
    problem = params_file_problem(sys.argv if args is None else args)
    if problem is None:
        try:
            rclpy.init(args=args)
            return None
        except _rclpy.RCLError as exc:
            problem = f"{exc}; check the --ros-args (docs/ros2.md)".replace("\n", " ")
    print(f"{prog}: startup failed: {problem}", file=sys.stderr)
    return 2


def run_node(factory: Callable[[], Node], prog: str, args: Sequence[str] | None = None,
             before_destroy: Callable[[Any], None] | None = None) -> int:
    """``main()`` of a node: :func:`init_rclpy`, build the node, spin. Exit 2 with one line on a startup
    failure (bad parameter, model, map, missing peer package), 0 after Ctrl-C or shutdown.
    before_destroy: called with the node before it is destroyed (e.g. to save its map)."""
    failed = init_rclpy(None if args is None else list(args), prog)
    if failed is not None:
        return failed
    node = None
    try:
        node = factory()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except VprError as exc:  # the message says what to do
        print(f"{prog}: startup failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            if before_destroy is not None:
                before_destroy(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
