"""ament_python package definition; also installs with `pip install -e .` into a plain venv."""

import os
from glob import glob

from setuptools import find_packages, setup

package_name = "mtl_perception"

setup(
    name=package_name,
    version="0.1.0",
    # The top-level training/ scripts install as `mtl_perception_training` (never as a generic `training`
    # package that would collide with other software); what they import lives in mtl_perception.learning.
    # The two data folders are listed as packages (they hold no module): setuptools installs package data
    # only for listed packages, and warns that anything else is installed "as data" by a deprecated path.
    packages=find_packages(include=["mtl_perception", "mtl_perception.*"])
    + ["mtl_perception.model.weights", "mtl_perception.ros.fastdds", "mtl_perception_training"],
    package_dir={"mtl_perception_training": "training"},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        (os.path.join("share", package_name, "launch"), glob("launch/*launch.[pxy][yma]*")),
        (os.path.join("share", package_name, "config"), glob("config/*.yaml") + glob("config/*.xml")),
    ],
    # Package data, opened by path (never a zipped install): the node's own Fast DDS profiles
    # (mtl_perception/ros/transport.py finds them next to the module) and the shipped trained model
    # (mtl_perception.model.shipped), installed with the package, editable or not.
    package_data={
        "mtl_perception.ros.fastdds": ["*.xml"],
        "mtl_perception.model.weights": ["*.pt", "*.onnx", "*.json"],
    },
    include_package_data=True,
    install_requires=["setuptools"],
    zip_safe=False,  # the Fast DDS profiles and the shipped weights are read from the package directory
    maintainer="mtl_perception maintainers",
    maintainer_email="mtl-perception@example.com",
    description="Real-time multi-task depth, semantic and motion perception for ROS 2",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            # issue 2: flow
            "flow_tool = mtl_perception.flow.cli:main",
            # issue 3: model, complexity, export
            "model_complexity = mtl_perception.model.complexity:main",
            "export_model = mtl_perception.inference.export_cli:main",
            # issue 4: data
            "make_synthetic_cityscapes = mtl_perception.data.synthetic.cli:main",
            "cityscapes_to_bag = mtl_perception.data.bag:main",
            "play_bag = mtl_perception.ros.play_bag:main",
            "make_flow_dataset = mtl_perception_training.make_flow_dataset:main",
            # issue 21: motion ground truth from public Cityscapes
            "make_motion_labels = mtl_perception.data.motion_labels.cli:main",
            # issue 9: training (the scripts of training/, also run as python training/<script>.py)
            "mtl_train = mtl_perception_training.train:cli",
            "mtl_evaluate = mtl_perception_training.evaluate:main",
            "mtl_make_table = mtl_perception_training.make_table:main",
            # issue 22: the model on a video, an image folder or a bag, without ROS
            "mtl_infer = mtl_perception.infer:main",
            # issue 5: the node
            "mtl_perception_node = mtl_perception.ros.node:main",
            # issue 12: the managed (lifecycle) node
            "mtl_perception_lifecycle_node = mtl_perception.ros.lifecycle_node:main",
        ],
    },
)
