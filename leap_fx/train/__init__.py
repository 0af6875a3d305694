"""Training: LEAP objective (Eq. 8) with KD, the plain-PyTorch loop, baselines, teacher, HF Trainer glue."""
from .distill import kd_loss, objective
from .distributed import Dist, init_from_env
from .evaluate import accuracy, onnx_accuracy, onnx_predict_logits, predict_logits
from .loop import TrainResult, evaluate, total_steps, train
from .schedules import cubic_density, lr_scheduler, warmup_linear
from .state import TrainConfig, load_checkpoint, save_checkpoint

__all__ = ["kd_loss", "objective", "Dist", "init_from_env", "accuracy", "onnx_accuracy", "onnx_predict_logits", "predict_logits",
           "TrainResult", "evaluate", "total_steps", "train", "cubic_density", "lr_scheduler",
           "warmup_linear", "TrainConfig", "load_checkpoint", "save_checkpoint"]
