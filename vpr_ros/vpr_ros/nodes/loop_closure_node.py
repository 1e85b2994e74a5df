"""``loop_closure_node``: camera images in, vpr_ros_msgs/LoopClosure out.

A thin layer over :class:`vpr_ros.core.detector.LoopClosureDetector`: callbacks only enqueue
messages; the frame pipeline (nodes/frame_pipeline.py) converts them, runs the model on one thread
while the previous frame is verified on another (``pipeline``), and hands each result back here to
publish. When the model is slower than the camera the bounded queue drops its oldest frame (counted
in diagnostics), so the newest view of the world is always the next one processed and no callback
ever blocks.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray
from vpr_ros_msgs.msg import LoopClosure as LoopClosureMsg
from vpr_ros_msgs.srv import MapIO

from vpr_ros.core.matching import mnn_batched
from vpr_ros.core.detector import LoopClosureDetector, StepResult
from vpr_ros.core.errors import ConfigError, InputError, VprError
from vpr_ros.core.pipeline import fix_mmap_threshold
from vpr_ros.nodes import conversions as conv
from vpr_ros.nodes.debug_view import DebugView
from vpr_ros.nodes.fleet import FLEET_COUNTERS, Fleet, FleetLink
from vpr_ros.nodes.extractors import ExtractorFactory, default_extractor, load_extractor_factory
from vpr_ros.nodes.frame_pipeline import FramePipeline
from vpr_ros.nodes.geometry_inputs import GEOMETRY_INPUT_COUNTERS
from vpr_ros.nodes.input_watch import InputWatch, run_node
from vpr_ros.nodes.keyframe_announce import KeyframeAnnouncer
from vpr_ros.nodes.map_services import MapKeeper, MapResult
from vpr_ros.nodes.odom_buffer import ODOM_COUNTERS, OdomBuffer
from vpr_ros.nodes.optimized_poses import OptimizedPoseSink
from vpr_ros.nodes.markers import MarkerTrail
from vpr_ros.nodes.params import declare_and_read, image_qos
from vpr_ros.nodes.place_services import PlaceServices
from vpr_ros.nodes.relocalization import NodeRelocalization
from vpr_ros.nodes.stats import NodeStats
from vpr_ros.nodes.tf_frames import BaseFrameInputs

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
        if self.config.text.fused_weight > 0:  # evaluated offline only (docs/place_text.md)
            raise ConfigError("text.fused_weight > 0 (the text-aware fused descriptor) runs in vpr-ros replay/demo "
                              "only; the node computes the plain image descriptor: set text.fused_weight to 0")
        detector_is_default = detector is None and extractor_factory is None and not self.settings.extractor_factory
        if detector is None:
            factory = extractor_factory or (load_extractor_factory(self.settings.extractor_factory)
                                            if self.settings.extractor_factory else default_extractor)
            from vpr_ros.models.backends.mnn_screen import configured_screen  # torch, like the extractor

            detector = LoopClosureDetector(self.config, factory(self.config),
                                           configured_screen(self.config.verify.mnn_screen))
        self.detector = detector
        if self.config.verify.method != "global":  # compile/load the MNN kernels now, not at the first loop
            secs = mnn_batched.warm(getattr(detector, "mnn_gemm", None))
            self.get_logger().debug(f"MNN kernels ready in {secs:.2f} s")
        # What diagnostics call the backend: the model's own word when it has one (injected models).
        self.backend = str(getattr(detector.model, "backend", None) or (
            self.config.model.backend if detector_is_default else "custom"))
        fleet_on = self.settings.fleet_enabled or fleet_factory is not None
        fleet_counters = tuple(f"fleet.{c}" for c in FLEET_COUNTERS) if fleet_on else ()
        odom_counters = ODOM_COUNTERS if self.settings.odom_enabled else ()
        self.stats = NodeStats(GEOMETRY_INPUT_COUNTERS + odom_counters + fleet_counters)
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
        # Odometry by stamp: waits odom.wait_sec for an image's own odometry, interpolates (nodes/odom_buffer.py).
        self._odom = OdomBuffer(self.settings.odom_max_age_sec, self.settings.odom_wait_sec, count=self.stats.count)
        # global_pose, ~/relocalize, the trigger, map -> odom; the camera's pose on the robot (nodes/relocalization.py).
        self.reloc = NodeRelocalization(self, self.detector, self._detector_lock, self.config, self.settings,
                                        self._warn)
        self._inputs = BaseFrameInputs(self.settings, self.stats.count, self._warn, mount=self.reloc.mount)
        self._pipeline = FramePipeline(self.detector, self._detector_lock, self.settings, self.stats, self._inputs,
                                       publish=self._publish, between_frames=self._between_frames,
                                       before_frame=self._drain_fleet, pose_at=self._pose_at, bad=self._bad,
                                       warn=self._warn)
        self._debug = self.settings.debug_image
        self._last_warn: dict[str, float] = {}

        sensor_qos = qos or image_qos(self.settings)
        image_type = CompressedImage if self.settings.image_compressed else Image
        self._watch = InputWatch(self, image_type, self.settings, self._warn)  # missing, lossy or refused input
        self._watch.attach(self.create_subscription(image_type, "image", self._on_image, sensor_qos,
                                                    event_callbacks=self._watch.event_callbacks()))
        if self.settings.odom_enabled:
            self.create_subscription(Odometry, "odom", self._on_odom, sensor_qos)
        self._inputs.subscribe(self, sensor_qos)  # camera_info, depth, right/image, right/camera_info
        self._loop_pub = self.create_publisher(LoopClosureMsg, "loop_closures", 100)
        # pose_graph_node's input (keyframes) and output (optimised poses into the map; docs/pose_graph.md)
        self._keyframe_pub = KeyframeAnnouncer(self, self.config.frames.odom_frame, self.config.detector.map_frame,
                                               self.detector, self._detector_lock)  # + loaded maps' keyframes
        self._optimized = OptimizedPoseSink(self, self.detector, self._detector_lock, self._warn)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self._markers = MarkerTrail(self.config.verify.min_matches)  # in the odometry's frame, see _on_odom
        self._marker_pub = self.create_publisher(MarkerArray, "markers", 2)
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
                                   self._warn, self._loop_pub, self.config.frames.base_frame)
        # Labels, text queries, the `place` topic and OCR of keyframes (issue 13).
        self.places = PlaceServices(self, self.detector, self._detector_lock, self.config, self._warn,
                                    self.maps.changed)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._pipeline.start()
        self.get_logger().info(
            f"ready: model {self.detector.model_id} ({self.backend}), "
            f"{self.detector.num_keyframes} keyframes, subscribed to {self.resolve_topic_name('image')}, "
            f"pipeline {'on' if self._pipeline.pipelined else 'off'}, threads: model {self.config.model.threads}, "
            + ", ".join(f"{lib} {n}" for lib, n in self._pipeline.threads.items()))

    # -- callbacks (never block) -----------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._watch.frame(msg.header.stamp)
        self.reloc.mount.saw_image(msg.header.frame_id)
        self._pipeline.put(msg)

    def _on_odom(self, msg: Odometry) -> None:
        self.stats.count("odometry_received")
        try:
            pose = conv.odometry_to_pose(msg)
        except InputError as exc:
            self._bad("nan_odometry", exc)
            return
        self._odom.add(conv.stamp_to_ns(msg.header.stamp), pose)
        self._markers.odometry_frame(msg.header.frame_id)  # keyframe positions live in this frame

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        for p in params:
            if p.name == "debug.image":
                self._debug = bool(p.value)
        return SetParametersResult(successful=True)

    # -- hooks of the frame pipeline (its processing threads) --------------------------------
    def _between_frames(self) -> None:
        self._autosave()  # between frames, so image callbacks never wait for a save
        self._drain_fleet()

    def _drain_fleet(self) -> None:
        if self.fleet is not None:  # other robots' keyframes join the index before the next frame
            self.fleet.drain()

    def _autosave(self) -> None:
        self.maps.retry_store()  # keyframes waiting for a full disk
        result = self.maps.autosave()
        if result is None:
            return
        if result.success:
            self.get_logger().info(f"autosave: {result.message}")
        else:
            self._warn("autosave", f"autosave failed (will retry in {self.config.map.autosave_sec:g} s): "
                                   f"{result.message}")

    def _publish(self, result: StepResult, image: Any) -> None:
        if result.keyframe is None:
            return
        self.stats.count("keyframes")
        self.stats.geometry(result)
        kf = result.keyframe
        self.maps.added(kf)
        self._keyframe_pub.announce(kf)  # before its loops
        self.places.keyframe(result, image)
        self._markers.add(kf, result.loop_closures)
        if self._debug:
            self._debug_view.remember(kf, image)
        for loop in result.loop_closures:
            # relative_pose is between the two keyframes' base frames, not a pose in the map frame
            self._loop_pub.publish(conv.loop_closure_to_msg(loop, self.config.frames.base_frame))
            self.stats.count("loop_closures")
            if self._debug:
                ident = (loop.match_robot_id, loop.match_session_id, loop.match_id)
                # A live map keeps local features on disk: hand the view the match with them read back.
                self._debug_view.show(loop, kf, image, [self.detector.keyframe_with_local(k) for k, m in
                                                        enumerate(self.detector.keyframes)
                                                        if (m.robot_id, m.session_id, m.id) == ident])
        self._watch.loops(result.loop_closures)
        if self.fleet is not None:
            self.fleet.keyframe(kf)
            self.fleet.loops(result.loop_closures)
        self.reloc.step(result)

    def _pose_at(self, stamp_ns: int) -> Any:
        return self._odom.pose_at(stamp_ns) if self.settings.odom_enabled else None

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
        if result.success and not save:
            self.reloc.map_changed()  # the loaded keyframes' poses in the map frame
            self._keyframe_pub.announce_map()  # on map_keyframes, for pose_graph_node
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
            self.reloc.session_reset()
        return self._respond(response, result)

    def _publish_diagnostics(self) -> None:
        extra = {"queue_depth": str(self._pipeline.depth), "queue_size": str(self.settings.queue_size),
                 "pipeline": "on" if self._pipeline.pipelined else "off",
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
        store, store_warning = self.maps.store_status()
        extra.update(store)
        watched, input_problems = self._watch.diagnostics()
        extra.update(watched)
        reloc, reloc_warnings = self.reloc.diagnostics()
        extra.update(reloc)
        # positions are odometry poses: frames.odom_frame when the odometry messages name no frame
        markers = self._markers.message(self.config.frames.odom_frame, self.get_clock().now().nanoseconds)
        if markers is not None:  # keyframe positions need odometry; without it nothing is drawn
            self._marker_pub.publish(markers)
        self._diag_pub.publish(self.stats.to_msg(
            self.get_clock().now().to_msg(), f"{self.get_name()}: loop closure",
            self.config.detector.robot_id, extra,
            warnings=[w for w in (over, store_warning) if w] + input_problems + reloc_warnings))

    def close(self) -> None:
        """Stop the processing threads and save the map when ``map.save_path`` is set."""
        if not self._pipeline.stop(timeout=10.0):
            self.get_logger().error("the processing threads did not stop within 10 s")
        self.places.close()
        if self.config.map.save_path:
            result = self.maps.save(self.config.map.save_path)
            if result.success:
                self.get_logger().info(f"{result.message} at shutdown")
            else:
                self.get_logger().error(f"at shutdown: {result.message}")
        self.maps.close()


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run vpr_ros loop_closure_node``); non-zero exit on a startup failure (a missing
    --params-file, a bad parameter, model or map: one line saying what to do, not a traceback)."""
    fix_mmap_threshold()  # as in replay: RSS grows by what the map keeps, not by heap fragmentation
    # close() saves the map; MapKeeper turns every failure into a logged message
    return run_node(LoopClosureNode, "loop_closure_node", args, before_destroy=LoopClosureNode.close)


if __name__ == "__main__":
    sys.exit(main())
