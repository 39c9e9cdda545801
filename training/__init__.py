"""The training scripts (``python training/<script>.py``; installed as ``mtl_perception_training``).

What they import lives in :mod:`mtl_perception.learning`; nothing here is imported by the runtime.
"""
