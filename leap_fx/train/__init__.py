"""Stage 2 for trained methods: the loop (``loop.py``), its checkpoints (``checkpoint.py``), DDP
(``distributed.py``), validation (``validation.py``), the dense teacher (``teacher.py``) and the Hugging Face
``Trainer`` driving any method's protocol (``hf.py``). The objectives are ``leap_fx.objectives``'; the
loop's settings are ``leap_fx.spec.TrainConfig``."""
from leap_fx.train.distributed import Dist, init_from_env
from leap_fx.train.validation import accuracy, predict_logits
from leap_fx.train.loop import TrainResult, evaluate, train
from leap_fx.train.schedules import lr_scheduler, warmup_linear
from leap_fx.train.setup import total_steps

__all__ = ["Dist", "init_from_env", "accuracy", "predict_logits", "TrainResult", "evaluate", "total_steps", "train",
           "lr_scheduler", "warmup_linear"]
