"""Static checks of launch/node.launch.py, config/params.yaml and config/fastdds_shm.xml (no ROS launch).

The launch file cannot be executed here (launch/launch_ros are not installable from PyPI), so its
structure is checked from its syntax tree; params.yaml is checked against the parameters the node
really declares; the Fast DDS profile against the 2.14 XML schema elements it uses.
"""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "node.launch.py"


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name
    ]  # fmt: skip


def test_launch_file_defines_the_documented_interface():
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    arguments = {c.args[0].value for c in calls(tree, "DeclareLaunchArgument")}
    assert {
        "params_file",
        "image_topic",
        "namespace",
        "model_file",
        "backend",
        "network_height",  # sizes a checkpoint / the untrained model (an export brings its own)
        "network_width",
        "use_shm_transport",
        "image_transport",  # raw | compressed, forwarded to the node's parameter of the same name
    } <= arguments
    (node_function,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_node"]
    forwarded = {
        element.value
        for loop in ast.walk(node_function)
        if isinstance(loop, ast.For) and isinstance(loop.iter, ast.Tuple)
        for element in loop.iter.elts
    }
    assert {"model_file", "backend", "device", "image_transport"} <= forwarded
    constants = {
        target.id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
        for target in n.targets
    }

    def value(node):
        return constants[node.id] if isinstance(node, ast.Name) else ast.literal_eval(node)

    (node,) = calls(tree, "Node")
    keywords = {k.arg: k.value for k in node.keywords}
    assert value(keywords["package"]) == "mtl_perception"
    assert value(keywords["executable"]) == "mtl_perception_node"
    assert value(keywords["name"]) == "mtl_perception"
    assert {"namespace", "parameters", "remappings", "output"} <= set(keywords)
    (env,) = calls(tree, "SetEnvironmentVariable")
    assert env.args[0].value == "FASTRTPS_DEFAULT_PROFILES_FILE"
    assert any(k.arg == "condition" for k in env.keywords)
    assert calls(tree, "get_package_share_directory")


def test_params_yaml_matches_the_declared_parameters():
    node = pytest.importorskip("mtl_perception.ros.node", reason="needs rclpy")
    data = yaml.safe_load((REPO / "config" / "params.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    from rclpy.parameter import Parameter

    # the model's input contract decides the unset ones: listing one here would override every model
    unset = {name for name, (default, _) in node.PARAMETERS.items() if isinstance(default, Parameter.Type)}
    assert {"flow.levels", "flow.confidence", "flow_dt", "flow.gaussian"} <= unset
    assert set(flat) == set(node.PARAMETERS) - unset
    for name, value in flat.items():
        default = node.PARAMETERS[name][0]
        assert type(value) is type(default), (name, value, default)
        if not isinstance(default, float):
            assert value == default, (name, value, default)
        else:
            assert value == pytest.approx(default), name


def test_fastdds_profile_gives_shm_a_64mb_segment_and_loopback_udp():
    root = ET.parse(REPO / "config" / "fastdds_shm.xml").getroot()
    ns = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    descriptors = {
        d.findtext("f:transport_id", namespaces=ns): d for d in root.iterfind(".//f:transport_descriptor", ns)
    }
    types = {tid: d.findtext("f:type", namespaces=ns) for tid, d in descriptors.items()}
    assert sorted(types.values()) == ["SHM", "UDPv4"]
    shm = next(d for d in descriptors.values() if d.findtext("f:type", namespaces=ns) == "SHM")
    assert int(shm.findtext("f:segment_size", namespaces=ns)) == 64 * 1024 * 1024
    udp = next(d for d in descriptors.values() if d.findtext("f:type", namespaces=ns) == "UDPv4")
    assert [a.text for a in udp.iterfind("f:interfaceWhiteList/f:address", ns)] == ["127.0.0.1"]
    participant = root.find(".//f:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind("f:rtps/f:userTransports/f:transport_id", ns)]
    assert sorted(used) == sorted(descriptors)
    assert participant.findtext("f:rtps/f:useBuiltinTransports", namespaces=ns) == "false"


def test_every_pipeline_setting_is_a_node_parameter_with_the_config_default():
    """PipelineConfig holds the one default of each pipeline setting; the node declares it from there."""
    from dataclasses import fields

    node = pytest.importorskip("mtl_perception.ros.node", reason="needs rclpy")
    from rclpy.parameter import Parameter

    from mtl_perception.pipeline_config import PipelineConfig, parameter_name

    for field in fields(PipelineConfig):
        default, descriptor = node.PARAMETERS[parameter_name(field.name)]
        if field.default is None:  # the model's value: declared unset, with a type
            assert isinstance(default, Parameter.Type), field.name
            assert "the model's own value" in descriptor.description, field.name
        else:
            assert default == field.default and type(default) is type(field.default), field.name
