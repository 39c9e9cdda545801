"""ROS 2 glue: the node, the bag player and Image conversions (the only place that talks to rclpy).

Importing this package does not import rclpy; only ``node`` and ``play_bag`` do.
"""
