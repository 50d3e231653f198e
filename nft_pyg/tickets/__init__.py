"""Winning tickets: batched IMP with rewinding on stacks of small MLPs / CNNs
(:mod:`.imp`). The dataset built with it is
:class:`~nft_pyg.datasets.DigitsTickets`, the task of predicting IMP masks from
initialisations :mod:`nft_pyg.tasks.tickets`. See ``docs/tickets.md``."""
from .imp import (
                  IMPConfig,
                  StackedCNN,
                  StackedMLP,
                  StackedNet,
                  TrainConfig,
                  digits_split,
                  masked_accuracy,
                  run_imp,
                  train_masked,
)

__all__ = ["IMPConfig", "TrainConfig", "StackedNet", "StackedMLP", "StackedCNN", "digits_split",
           "run_imp", "train_masked", "masked_accuracy"]
