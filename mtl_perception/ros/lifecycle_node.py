"""``mtl_perception_lifecycle_node``: the node as a managed (lifecycle) node, as nav2 and yolo_ros run theirs.

Same parameters, topics and diagnostics as ``mtl_perception_node`` (one :class:`PerceptionCore`), driven
by the standard ``lifecycle_msgs`` services (``ros2 lifecycle set /mtl_perception configure``, a nav2
lifecycle manager, or the launch file with ``lifecycle:=true``):

* configure: read the parameters, load and warm the model (failure -> back to unconfigured, the cause
  logged);
* activate: create the publishers and the subscriptions, start the worker;
* deactivate: stop the worker (the frame in hand finishes), remove the topics; the model stays loaded;
* cleanup: drop the model; shutdown: from any state, stop everything.
"""

from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from mtl_perception.pipeline_config import ConfigError
from mtl_perception.ros.node import run
from mtl_perception.ros.node_core import PerceptionCore


class PerceptionLifecycleNode(LifecycleNode):
    """Unconfigured when created; the transitions build, start, stop and drop the pipeline."""

    def __init__(self, *, transport: str = "", **kwargs) -> None:
        super().__init__("mtl_perception", **kwargs)
        self.core = PerceptionCore(self, transport=transport)
        self._active = False

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.core.configure()
        except Exception as error:  # the parameters or the model: say why and stay unconfigured
            cause = error if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
            self.get_logger().error(f"configure failed: {cause}")
            self.core.cleanup()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.activate()
        self._active = True
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.core.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def _deactivate(self) -> None:
        if self._active:
            self.core.deactivate()
            self._active = False

    def stop(self) -> None:
        """The process is ending: stop the worker before the context goes (any state)."""
        self.core.stop_worker()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ros2 run mtl_perception mtl_perception_lifecycle_node``."""
    return run(lambda transport: PerceptionLifecycleNode(transport=transport), argv)


if __name__ == "__main__":
    sys.exit(main())
