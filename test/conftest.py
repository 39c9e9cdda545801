"""Test-run wide settings: an isolated ROS 2 domain per run, DDS kept on loopback."""

import logging
import os
import random

import pytest

# Set before anything imports rclpy, and inherited by every child process the tests start,
# so that parallel test runs on one machine never see each other's topics.
if "MTL_TEST_ROS_DOMAIN_ID" in os.environ:
    os.environ["ROS_DOMAIN_ID"] = os.environ["MTL_TEST_ROS_DOMAIN_ID"]
else:
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture(scope="module")
def torch_one_thread():
    """Pin torch to one thread for a module (two OpenMP threads thrash on a loaded 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def inference_caplog(caplog):
    """caplog that sees ``mtl_perception.inference`` also on a sourced ROS, where it would not propagate.

    There the launch_pytest plugin imports ``launch`` in every run, and launch installs a logger class
    (``LaunchLogger`` in launch/logging/__init__.py) that makes every logger created afterwards
    non-propagating, so its records would never reach caplog's handler on the root logger.
    """
    logger = logging.getLogger("mtl_perception.inference")
    propagate, logger.propagate = logger.propagate, True
    yield caplog
    logger.propagate = propagate
