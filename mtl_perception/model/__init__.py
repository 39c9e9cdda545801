"""The two-stream multi-task network (TI edgeai-torchvision design), its checkpoints and complexity."""

from .checkpoint import CheckpointError, load_checkpoint, open_checkpoint, save_checkpoint
from .config import PRESETS, TASK_NAMES, ModelConfig, Normalization, preset_config
from .contract import ContractError, FlowContract, InputContract
from .net import MultiTaskNet, build_model, check_input

__all__ = [
    "PRESETS",
    "TASK_NAMES",
    "CheckpointError",
    "ContractError",
    "FlowContract",
    "InputContract",
    "ModelConfig",
    "MultiTaskNet",
    "Normalization",
    "build_model",
    "check_input",
    "load_checkpoint",
    "open_checkpoint",
    "preset_config",
    "save_checkpoint",
]
