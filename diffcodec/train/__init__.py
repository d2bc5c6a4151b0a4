"""Training: objectives (NELBO, progressive code length), options and config files, the
trainer, crop sampling and NELBO evaluation. The coders import nothing from here."""

from .evaluation import NelboReport, image_nelbo, mean_report
from .options import TrainOptions, resolve_options
from .trainer import Trainer

__all__ = ["NelboReport", "TrainOptions", "Trainer", "image_nelbo", "mean_report", "resolve_options"]
