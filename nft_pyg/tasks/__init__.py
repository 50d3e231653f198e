"""Tasks on neural-network weights: INR classification, generalization
prediction, INR editing; the trainer (plain PyTorch, DDP under torchrun),
run folders and result tables."""
from .models import TASK_MODELS, build_model
from .results import collect_runs, results_table, summarize
from .runner import TASKS, generalization_prediction, inr_classification, inr_editing, run_task
from .trainer import ShardedBatchSampler, TaskSpec, TrainConfig, Trainer, init_distributed

__all__ = ["TASKS", "TASK_MODELS", "build_model", "run_task", "inr_classification",
           "generalization_prediction", "inr_editing", "Trainer", "TrainConfig", "TaskSpec",
           "ShardedBatchSampler", "init_distributed", "collect_runs", "summarize",
           "results_table"]
