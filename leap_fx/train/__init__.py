"""Stage 2 for trained methods: the loop (``loop.py``), objectives (``objective.py``: logit KD, layer
KD; ``distill.py``: TinyBERT's; ``layer_match.py``: CoFi's learned map + re-chosen layer matches), checkpoints,
DDP, the dense teacher (``teacher.py``) and the HF Trainer integration (``hf.py``)."""
from leap_fx.train.config import TrainConfig
from leap_fx.train.distill import TinyBertKD
from leap_fx.train.distributed import Dist, init_from_env
from leap_fx.train.evaluate import accuracy, predict_logits
from leap_fx.train.layer_match import MatchedLayerKD
from leap_fx.train.loop import TrainResult, evaluate, total_steps, train
from leap_fx.train.objective import LayerKD, LogitKD, Outputs, kd_loss, objective
from leap_fx.train.schedules import lr_scheduler, warmup_linear

__all__ = ["TrainConfig", "Dist", "init_from_env", "accuracy", "predict_logits", "TrainResult", "evaluate",
           "total_steps", "train", "LayerKD", "MatchedLayerKD", "LogitKD", "Outputs", "kd_loss", "objective",
           "lr_scheduler", "warmup_linear", "TinyBertKD"]
