"""Training: one loop (`Trainer`) for every sparsification method, with checkpoints and DDP."""

from iee_deploy.train.config import TrainConfig, check_fits_data, minimum_resolution
from iee_deploy.train.trainer import Trainer, train_step

__all__ = ["TrainConfig", "Trainer", "check_fits_data", "minimum_resolution", "train_step"]
