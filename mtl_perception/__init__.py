"""mtl_perception: camera -> Farnebäck flow -> two-stream multi-task network -> depth, semantic, motion.

The runtime library (everything but ``mtl_perception.ros``) imports without ROS.
"""

__version__ = "0.1.0"
