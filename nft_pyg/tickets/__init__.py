"""Winning tickets: batched IMP with rewinding (:mod:`.imp`) and the task of
predicting IMP masks from initialisations (:mod:`.task`). See ``docs/tickets.md``."""
from .imp import (IMPConfig, StackedCNN, StackedMLP, StackedNet, TrainConfig, digits_split,
                  masked_accuracy, run_imp, train_masked)
from .task import TicketsConfig, add_arguments, format_results, main, run_tickets

__all__ = ["IMPConfig", "TrainConfig", "StackedNet", "StackedMLP", "StackedCNN", "digits_split",
           "run_imp", "train_masked", "masked_accuracy", "TicketsConfig", "run_tickets",
           "add_arguments", "main", "format_results"]
