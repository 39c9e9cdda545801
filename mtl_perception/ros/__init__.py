"""ROS 2 glue: the node, the bag player, Image conversions, and the harness and replay evaluation that drive
the node from outside (the only place that talks to rclpy).

Importing this package does not import rclpy; ``node`` does, the others only when they are used.
"""
