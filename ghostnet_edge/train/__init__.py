"""Training: ``train(TrainConfig) -> TrainResult``, seed sweeps, evaluation of models and checkpoints."""

from ghostnet_edge.train.config import TrainConfig, TrainResult
from ghostnet_edge.train.evaluate import evaluate, evaluate_checkpoint
from ghostnet_edge.train.loop import train
from ghostnet_edge.train.schedule import lr_at, param_groups
from ghostnet_edge.train.seeds import SeedSweep, epoch_band, summarize_spread, train_seeds

__all__ = ["SeedSweep", "TrainConfig", "TrainResult", "epoch_band", "evaluate", "evaluate_checkpoint", "lr_at",
           "param_groups", "summarize_spread", "train", "train_seeds"]
