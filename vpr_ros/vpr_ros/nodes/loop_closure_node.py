"""``loop_closure_node``: camera images in, vpr_ros_msgs/LoopClosure out.

A thin layer over :class:`vpr_ros.core.detector.LoopClosureDetector`: callbacks only enqueue
messages; one processing thread converts, runs the detector and publishes. When the model is slower
than the camera the bounded queue drops its oldest frame (counted in diagnostics), so the newest
view of the world is always the next one processed and no callback ever blocks.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Any, Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray
from vpr_ros_msgs.msg import LoopClosure as LoopClosureMsg
from vpr_ros_msgs.srv import MapIO

from vpr_ros.core.detector import LoopClosureDetector, StepResult
from vpr_ros.core.errors import InputError, StampOrderError, VprError
from vpr_ros.core.images import ImageTooLargeError
from vpr_ros.core.types import Frame
from vpr_ros.nodes import conversions as conv
from vpr_ros.nodes.debug_view import DebugView
from vpr_ros.nodes.fleet import FLEET_COUNTERS, Fleet, FleetLink
from vpr_ros.nodes.extractors import ExtractorFactory, default_extractor, load_extractor_factory
from vpr_ros.nodes.geometry_inputs import GEOMETRY_INPUT_COUNTERS, GeometryInputs
from vpr_ros.nodes.map_services import MapKeeper, MapResult
from vpr_ros.nodes.markers import MarkerTrail
from vpr_ros.nodes.params import declare_and_read, image_qos
from vpr_ros.nodes.place_services import PlaceServices
from vpr_ros.nodes.stats import NodeStats

__all__ = ["LoopClosureNode", "load_extractor_factory", "main"]


class LoopClosureNode(Node):
    """ROS 2 node around one LoopClosureDetector; see docs/ros2.md for topics and services.

    detector / extractor_factory / qos are injectable so tests can run a slowed or tiny model;
    by default the model comes from ``model.preset`` (or the hidden ``extractor_factory``
    parameter) and the image QoS from the ``qos.*`` parameters.
    """

    def __init__(self, *, detector: LoopClosureDetector | None = None,
                 extractor_factory: ExtractorFactory | None = None, qos: QoSProfile | None = None,
                 node_name: str = "loop_closure_node",
                 fleet_factory: Callable[[LoopClosureNode], Fleet] | None = None, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self.config, self.settings = declare_and_read(self)
        detector_is_default = detector is None and extractor_factory is None and not self.settings.extractor_factory
        if detector is None:
            factory = extractor_factory or (load_extractor_factory(self.settings.extractor_factory)
                                            if self.settings.extractor_factory else default_extractor)
            detector = LoopClosureDetector(self.config, factory(self.config))
        self.detector = detector
        # What diagnostics call the backend: the model's own word when it has one (injected models).
        self.backend = str(getattr(detector.model, "backend", None) or (
            self.config.model.backend if detector_is_default else "custom"))
        fleet_on = self.settings.fleet_enabled or fleet_factory is not None
        fleet_counters = tuple(f"fleet.{c}" for c in FLEET_COUNTERS) if fleet_on else ()
        self.stats = NodeStats(GEOMETRY_INPUT_COUNTERS + fleet_counters)
        self._detector_lock = threading.Lock()
        self.maps = MapKeeper(self.detector, self._detector_lock, self.config.map, self.get_logger(),
                              self.stats.count)
        for path in self.config.map.load_paths:
            loaded = self.maps.load(path)
            if not loaded.success:  # a map the user asked for must not be silently replaced by nothing
                raise VprError(f"map.load_path: {loaded.message}")
            self.get_logger().info(loaded.message)
        started = self.maps.start()  # a live map at save_path (map.append), or a checked snapshot target
        if not started.success:
            raise VprError(f"map.save_path: {started.message}")
        self._queue: collections.deque[tuple[Any, float]] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._odom: collections.deque[tuple[int, Any]] = collections.deque(maxlen=400)
        self._odom_lock = threading.Lock()
        self._inputs = GeometryInputs(self.settings, self.stats.count, self._warn)
        self._debug = self.settings.debug_image
        self._last_warn: dict[str, float] = {}

        sensor_qos = qos or image_qos(self.settings)
        image_type = CompressedImage if self.settings.image_compressed else Image
        self.create_subscription(image_type, "image", self._on_image, sensor_qos)
        if self.settings.odom_enabled:
            self.create_subscription(Odometry, "odom", self._on_odom, sensor_qos)
        self._inputs.subscribe(self, sensor_qos)  # camera_info, depth, right/image, right/camera_info
        self._loop_pub = self.create_publisher(LoopClosureMsg, "loop_closures", 100)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self._markers, self._marker_pub = MarkerTrail(), self.create_publisher(MarkerArray, "markers", 2)
        self._debug_view = DebugView(self.create_publisher(Image, "debug_image", 2).publish,
                                     self.config.detector.map_frame)
        self.create_service(MapIO, "~/save_map", self._on_save_map)
        self.create_service(MapIO, "~/load_map", self._on_load_map)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(self.settings.diagnostics_period_sec, self._publish_diagnostics)
        # Multi-robot: decentralised over DDS (fleet.enabled), or a factory (the central node's shared map).
        self.fleet: Fleet | None = None
        if fleet_factory is not None:
            self.fleet = fleet_factory(self)
        elif self.settings.fleet_enabled:
            self.fleet = FleetLink(self, self.detector, self._detector_lock, self.settings, self.stats.count,
                                   self._warn, self._loop_pub, self.config.detector.map_frame)
        # Labels, text queries, the `place` topic and OCR of keyframes (issue 13).
        self.places = PlaceServices(self, self.detector, self._detector_lock, self.config, self._warn,
                                    self.maps.changed)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._run, name="vpr_ros_processing", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: model {self.detector.model_id} ({self.backend}), "
            f"{self.detector.num_keyframes} keyframes, subscribed to {self.resolve_topic_name('image')}")

    # -- callbacks (never block) -----------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        self.stats.count("frames_received")
        with self._wake:
            if len(self._queue) >= self.settings.queue_size:
                self._queue.popleft()
                self.stats.count("frames_dropped")
            self._queue.append((msg, time.perf_counter()))
            self._wake.notify()

    def _on_odom(self, msg: Odometry) -> None:
        self.stats.count("odometry_received")
        try:
            pose = conv.odometry_to_pose(msg)
        except InputError as exc:
            self._bad("nan_odometry", exc)
            return
        with self._odom_lock:
            self._odom.append((conv.stamp_to_ns(msg.header.stamp), pose))

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        for p in params:
            if p.name == "debug.image":
                self._debug = bool(p.value)
        return SetParametersResult(successful=True)

    # -- processing thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._autosave()  # between frames, so image callbacks never wait for a save
            if self.fleet is not None:  # other robots' keyframes join the index before the next frame
                self.fleet.drain()
            with self._wake:
                while not self._queue and not self._stopping:
                    if not self._wake.wait(0.5):
                        break
                if self._stopping:
                    return
                if not self._queue:
                    continue
                msg, received = self._queue.popleft()
            if self.fleet is not None:
                self.fleet.drain()
            # Every frame taken from the queue ends in exactly one counter: frames_processed, a
            # bad_input.<kind> or frames_failed (processed + dropped + bad + failed == received).
            try:
                self._process(msg, received)
            except InputError as exc:  # the model's output for this image is unusable (all-zero, NaN)
                self._bad("unusable_image", exc)
            except VprError as exc:  # a core failure costs one frame, never the node
                self.stats.count("frames_failed")
                self._warn("core", f"frame dropped: {exc}")
            except Exception as exc:  # noqa: BLE001 - an unexpected bug must not kill the thread silently
                self.stats.count("frames_failed")
                self._warn("unexpected", f"frame dropped by an unexpected {type(exc).__name__}: {exc}")

    def _autosave(self) -> None:
        result = self.maps.autosave()
        if result is None:
            return
        if result.success:
            self.get_logger().info(f"autosave: {result.message}")
        else:
            self._warn("autosave", f"autosave failed (will retry in {self.config.map.autosave_sec:g} s): "
                                   f"{result.message}")

    def _process(self, msg: Image | CompressedImage, received: float) -> None:
        t0 = time.perf_counter()
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        max_pixels = self.settings.image_max_pixels
        try:
            image = (conv.compressed_msg_to_rgb(msg, max_pixels) if isinstance(msg, CompressedImage)
                     else conv.image_msg_to_rgb(msg, max_pixels))
        except ImageTooLargeError as exc:
            self._bad("too_large", exc)
            return
        except InputError as exc:
            self._bad(conv.classify_bad_image(msg), exc)
            return
        size = self._inputs.camera_size
        if size is not None and image.shape[:2] != size:
            self._bad("size_mismatch", InputError(f"image is {image.shape[1]}x{image.shape[0]}, "
                                                  f"camera_info says {size[1]}x{size[0]}"))
            return
        pose = self._pose_at(stamp_ns)
        inputs = self._inputs.frame_inputs(stamp_ns, image.shape[:2])
        t1 = time.perf_counter()
        with self._detector_lock:
            try:
                result = self.detector.process(Frame(stamp_ns, image, pose, **inputs))
            except StampOrderError as exc:
                self._bad("time_backwards", exc)
                return
            t2 = time.perf_counter()
            self._publish(result, image)
            t3 = time.perf_counter()
        self.stats.count("frames_processed")
        timings = {k: v for k, v in result.timings_ms.items() if k != "total"}
        timings.update(queue_wait=(t0 - received) * 1e3, convert=(t1 - t0) * 1e3,
                       detector=(t2 - t1) * 1e3, publish=(t3 - t2) * 1e3, total=(t3 - received) * 1e3)
        self.stats.latency(timings)

    def _publish(self, result: StepResult, image: Any) -> None:
        if result.keyframe is None:
            return
        self.stats.count("keyframes")
        self.stats.geometry(result)
        kf = result.keyframe
        self.maps.added(kf)
        self.places.keyframe(result, image)
        self._markers.add(kf, result.loop_closures)
        if self._debug:
            self._debug_view.remember(kf, image)
        for loop in result.loop_closures:
            self._loop_pub.publish(conv.loop_closure_to_msg(loop, self.config.detector.map_frame))
            self.stats.count("loop_closures")
            if self._debug:
                ident = (loop.match_robot_id, loop.match_session_id, loop.match_id)
                # A live map keeps local features on disk: hand the view the match with them read back.
                self._debug_view.show(loop, kf, image, [self.detector.keyframe_with_local(k) for k, m in
                                                        enumerate(self.detector.keyframes)
                                                        if (m.robot_id, m.session_id, m.id) == ident])
        if self.fleet is not None:
            self.fleet.keyframe(kf)
            self.fleet.loops(result.loop_closures)

    def _pose_at(self, stamp_ns: int) -> Any:
        with self._odom_lock:
            if not self._odom:
                return None
            t, pose = min(self._odom, key=lambda item: abs(item[0] - stamp_ns))
        return pose if abs(t - stamp_ns) <= self.settings.odom_max_age_sec * 1e9 else None

    # -- bad input -----------------------------------------------------------------------
    def _bad(self, kind: str, exc: Exception) -> None:
        self.stats.bad_input(kind)
        self._warn(kind, f"bad input ({kind}), frame ignored: {exc}")

    def _warn(self, key: str, text: str) -> None:
        # Throttled per kind by hand: a broken camera at 30 Hz must not flood the log.
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e9) >= self.settings.log_throttle_sec:
            self._last_warn[key] = now
            self.get_logger().warning(text)

    # -- services and diagnostics --------------------------------------------------------
    @staticmethod
    def _respond(response: Any, result: MapResult) -> Any:
        response.success, response.message = result.success, result.message
        if hasattr(response, "num_keyframes"):
            response.num_keyframes = result.num_keyframes
        return response

    def _map_io(self, response: MapIO.Response, path: str, save: bool) -> MapIO.Response:
        if not path:
            name = "map.save_path" if save else "map.load_path"
            return self._respond(response, MapResult(False, f"no path given and parameter {name} is empty"))
        result = self.maps.save(path) if save else self.maps.load(path)
        # Two call sites: rclpy refuses one call site logging at two severities.
        if result.success:
            self.get_logger().info(result.message)
        else:
            self.get_logger().warning(result.message)
        return self._respond(response, result)

    def _on_save_map(self, request: MapIO.Request, response: MapIO.Response) -> MapIO.Response:
        return self._map_io(response, request.path or self.config.map.save_path, save=True)

    def _on_load_map(self, request: MapIO.Request, response: MapIO.Response) -> MapIO.Response:
        for path in [request.path] if request.path else (self.config.map.load_paths or ("",)):
            response = self._map_io(response, path, save=False)
            if not response.success:
                break
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        result = self.maps.reset()
        with self._detector_lock:
            self._debug_view.clear()
        if result.success:
            self._markers.clear()
        return self._respond(response, result)

    def _publish_diagnostics(self) -> None:
        with self._wake:
            depth = len(self._queue)
        extra = {"queue_depth": str(depth), "queue_size": str(self.settings.queue_size),
                 "index_size": str(self.detector.num_keyframes), "model": self.detector.model_id,
                 "backend": self.backend, "robot_id": self.config.detector.robot_id}
        extra["map_memory_mb"] = f"{self.maps.map_bytes / 1e6:.2f}"
        extra["memory_budget_mb"] = f"{self.config.map.memory_budget_mb:g}"
        extra.update(self.places.diagnostics())
        if self.fleet is not None:
            extra.update(self.fleet.diagnostics())
        if self._inputs.camera_size is not None:
            extra["camera_size"] = f"{self._inputs.camera_size[1]}x{self._inputs.camera_size[0]}"
        over = self.maps.over_budget()
        markers = self._markers.message(self.config.detector.map_frame, self.get_clock().now().nanoseconds)
        if markers is not None:  # keyframe positions need odometry; without it nothing is drawn
            self._marker_pub.publish(markers)
        self._diag_pub.publish(self.stats.to_msg(
            self.get_clock().now().to_msg(), f"{self.get_name()}: loop closure",
            self.config.detector.robot_id, extra, warnings=[over] if over else []))

    def close(self) -> None:
        """Stop the processing thread and save the map when ``map.save_path`` is set."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._worker.join(timeout=10.0)
        self.places.close()
        if self.config.map.save_path:
            result = self.maps.save(self.config.map.save_path)
            if result.success:
                self.get_logger().info(f"{result.message} at shutdown")
            else:
                self.get_logger().error(f"at shutdown: {result.message}")
        self.maps.close()


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run vpr_ros loop_closure_node``); non-zero exit on a startup failure."""
    rclpy.init(args=args)
    node = None
    try:
        node = LoopClosureNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except VprError as exc:  # bad parameter, model or map: the message says what to do
        print(f"loop_closure_node: startup failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.close()  # saves the map; MapKeeper turns every failure into a logged message
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
