"""Training: one loop (`Trainer`) for every sparsification method, with checkpoints and DDP."""

from iee_deploy.train.config import TrainConfig
from iee_deploy.train.trainer import Trainer, train_step

__all__ = ["TrainConfig", "Trainer", "train_step"]
