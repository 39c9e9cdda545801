"""Launch mtl_perception_node with the package's parameter file, a remappable input topic and overrides.

    ros2 launch mtl_perception node.launch.py image_topic:=/camera/image_raw
    ros2 launch mtl_perception node.launch.py image_topic:=/camera/image_raw image_transport:=compressed
    ros2 launch mtl_perception node.launch.py model_file:=/models/mtl.onnx backend:=onnxruntime \
        namespace:=front use_shm_transport:=true
    ros2 launch mtl_perception node.launch.py model_file:=/models/mtl.pt \
        network_height:=192 network_width:=384

    ros2 launch mtl_perception node.launch.py lifecycle:=true            # managed node, brought to active
    ros2 launch mtl_perception node.launch.py lifecycle:=true autostart:=false   # stays unconfigured

Launch arguments left empty keep the value from params_file. An .onnx / .engine model runs at the size it
was exported for; network_height / network_width only size a checkpoint or the untrained model.
"""

import os

import lifecycle_msgs.msg
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState

PACKAGE = "mtl_perception"


def _node(context, *args, **kwargs):
    """The node, with only the non-empty launch arguments turned into parameter overrides."""
    overrides = {}
    for name in ("model_file", "model_preset", "backend", "device", "image_transport"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    for name in ("network_height", "network_width"):  # integer parameters: a string would be refused
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = int(value)
    remappings = [
        ("image", LaunchConfiguration("image_topic")),
        ("camera_info", LaunchConfiguration("camera_info_topic")),
    ]
    if IfCondition(LaunchConfiguration("lifecycle")).evaluate(context):
        return _lifecycle_node(context, overrides, remappings)
    return [
        Node(
            package=PACKAGE,
            executable="mtl_perception_node",
            name="mtl_perception",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=remappings,
            output="screen",
            emulate_tty=True,
        )
    ]


def _lifecycle_node(context, overrides, remappings):
    """The managed node; with autostart, configure it and activate it once it is inactive."""
    node = LifecycleNode(
        package=PACKAGE,
        executable="mtl_perception_lifecycle_node",
        name="mtl_perception",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=remappings,
        output="screen",
        emulate_tty=True,
    )
    if not IfCondition(LaunchConfiguration("autostart")).evaluate(context):
        return [node]

    def transition(transition_id):
        return EmitEvent(
            event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id)
        )

    activate_when_inactive = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state="configuring",
            goal_state="inactive",
            entities=[transition(lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE)],
        )
    )
    return [node, activate_when_inactive, transition(lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE)]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "params.yaml"),
                description="YAML parameter file (/**: ros__parameters: ...)",
            ),
            DeclareLaunchArgument(
                "image_topic",
                default_value="/camera/image_raw",
                description="Input camera topic (image_transport compressed: '<image_topic>/compressed')",
            ),
            DeclareLaunchArgument(
                "image_transport",
                default_value="",
                description="raw (sensor_msgs/Image) | compressed (sensor_msgs/CompressedImage, JPEG / PNG) "
                "(empty: keep params_file)",
            ),
            DeclareLaunchArgument(
                "camera_info_topic",
                default_value="/camera/camera_info",
                description="Input sensor_msgs/CameraInfo topic",
            ),
            DeclareLaunchArgument(
                "namespace",
                default_value="mtl_perception",
                description="Namespace of the node and of its output topics",
            ),
            DeclareLaunchArgument(
                "model_file",
                default_value="",
                description="Checkpoint / ONNX / TensorRT engine (empty: keep params_file)",
            ),
            DeclareLaunchArgument(
                "backend",
                default_value="",
                description="auto | tensorrt | onnxruntime | torch (empty: keep params_file)",
            ),
            DeclareLaunchArgument(
                "device", default_value="", description="auto | cpu | cuda:N (empty: keep params_file)"
            ),
            DeclareLaunchArgument(
                "model_preset",
                default_value="",
                description="ti | lite, architecture of the untrained model (empty: keep params_file)",
            ),
            DeclareLaunchArgument(
                "network_height",
                default_value="",
                description="Input height of a checkpoint / untrained model, multiple of 16 (empty: keep "
                "params_file; an .onnx / .engine runs at its own size)",
            ),
            DeclareLaunchArgument(
                "network_width",
                default_value="",
                description="Input width of a checkpoint / untrained model, multiple of 16 (empty: keep "
                "params_file)",
            ),
            DeclareLaunchArgument(
                "lifecycle",
                default_value="false",
                description="Run mtl_perception_lifecycle_node (managed) instead of mtl_perception_node",
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                description="lifecycle:=true only: configure and activate the node at launch",
            ),
            DeclareLaunchArgument(
                "use_shm_transport",
                default_value="false",
                description="Use config/fastdds_shm.xml (64 MiB shared-memory segment) instead of the node's "
                "own UDP profile; give every process of the graph the same file",
            ),
            SetEnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE",
                os.path.join(share, "config", "fastdds_shm.xml"),
                condition=IfCondition(LaunchConfiguration("use_shm_transport")),
            ),
            OpaqueFunction(function=_node),
        ]
    )
