"""Tasks on neural-network weights: INR classification, generalization
prediction, INR editing; the trainer (PyTorch Lightning: devices, DDP),
run folders and result tables."""
from .models import TASK_MODELS, build_model
from .results import collect_runs, results_table, summarize
from .runner import TASKS, generalization_prediction, inr_classification, inr_editing, run_task
from .trainer import ConfigurationError, TaskSpec, TrainConfig, Trainer

__all__ = ["TASKS", "TASK_MODELS", "build_model", "run_task", "inr_classification",
           "generalization_prediction", "inr_editing", "Trainer", "TrainConfig", "TaskSpec",
           "ConfigurationError", "collect_runs", "summarize",
           "results_table"]
