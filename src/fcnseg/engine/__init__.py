"""Training, evaluation and checkpoints.

``train(cfg)`` / ``train_staged(cfg)`` run a recipe (what ``fcnseg train`` runs);
``evaluate(model, dataset)`` scores a model with the paper's four metrics and Boundary IoU
(what ``fcnseg eval`` runs).
"""

from fcnseg.engine.evaluation import evaluate, evaluate_with_matrix
from fcnseg.engine.loss import SegmentationLoss, build_loss, median_frequency_weights
from fcnseg.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from fcnseg.engine.staged import train, train_staged
from fcnseg.engine.trainer import Trainer, TrainingDiverged

__all__ = [
    "SegmentationLoss",
    "Trainer",
    "TrainingDiverged",
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "evaluate_with_matrix",
    "lr_factor",
    "median_frequency_weights",
    "param_groups",
    "train",
    "train_staged",
]
