"""The node's default Fast DDS profile: when it applies (environment only, no DDS) and what the files say."""

import xml.etree.ElementTree as ET

import pytest

from mtl_perception.ros import transport

NS = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}


def test_default_is_the_udp_profile():
    env = {}
    line = transport.apply_default_profile(env)
    assert env == {"FASTRTPS_DEFAULT_PROFILES_FILE": str(transport.UDP_PROFILE)}
    assert "UDPv4 only" in line


@pytest.mark.parametrize(
    "start",
    [{"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}, {"ROS_LOCALHOST_ONLY": "1"}],
)
def test_localhost_range_runs_as_subnet_with_the_localhost_profile(start):
    """rmw_fastrtps would add its shared-memory transport back for LOCALHOST; the profile does its job."""
    env = dict(start)
    transport.apply_default_profile(env)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET" and "ROS_LOCALHOST_ONLY" not in env
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(transport.UDP_LOCALHOST_PROFILE)


@pytest.mark.parametrize(
    "env",
    [
        {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
        {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"},
        {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
        {"MTL_PERCEPTION_FASTDDS_PROFILE": "none", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
    ],
)
def test_a_choice_of_the_user_is_left_alone(env):
    before = dict(env)
    line = transport.apply_default_profile(env)
    assert env == before and line


def test_override_file(tmp_path):
    profile = tmp_path / "p.xml"
    profile.write_text("<dds/>")
    env = {"MTL_PERCEPTION_FASTDDS_PROFILE": str(profile)}
    transport.apply_default_profile(env)
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(profile)
    with pytest.raises(FileNotFoundError, match="nope.xml"):
        transport.apply_default_profile({"MTL_PERCEPTION_FASTDDS_PROFILE": str(tmp_path / "nope.xml")})


@pytest.mark.parametrize("path", [transport.UDP_PROFILE, transport.UDP_LOCALHOST_PROFILE])
def test_profiles_are_udp_only_with_4mib_buffers(path):
    root = ET.parse(path).getroot()
    (descriptor,) = root.iterfind(".//f:transport_descriptor", NS)
    assert descriptor.findtext("f:type", namespaces=NS) == "UDPv4"
    for name in ("sendBufferSize", "receiveBufferSize"):
        assert int(descriptor.findtext(f"f:{name}", namespaces=NS)) == 4 * 2**20
    (participant,) = root.iterfind(".//f:participant", NS)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind("f:rtps/f:userTransports/f:transport_id", NS)]
    assert used == [descriptor.findtext("f:transport_id", namespaces=NS)]
    assert participant.findtext("f:rtps/f:useBuiltinTransports", namespaces=NS) == "false"


def test_localhost_profile_discovers_like_rmw_localhost():
    participant = ET.parse(transport.UDP_LOCALHOST_PROFILE).getroot().find(".//f:participant", NS)
    peers = [a.text for a in participant.iterfind("f:rtps/f:builtin/f:initialPeersList//f:address", NS)]
    assert peers == ["127.0.0.1"]
    assert participant.find("f:rtps/f:builtin/f:metatrafficMulticastLocatorList", NS) is None
    assert participant.find("f:rtps/f:builtin/f:metatrafficUnicastLocatorList/f:locator", NS) is not None
