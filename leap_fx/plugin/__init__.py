"""Every method as a plugin on any model: ``Pruner`` (``pruner.py``) drives a registered method with the
user's model, batches and ``loss_fn(model, batch)`` (and optionally a teacher), in a loop of the user's own
(``step``), a ready loop (``fit``), the library's loop (``train``) or one-shot (``calibrate``); the job's
safeguards (``safeguards.py``: a mask learning rate sized to the declared steps, a ``PruningWarning`` at
``fold`` / ``strip`` when the target was missed or nothing was removed) hold for all of them.
``capture.py`` records the forward the loss ran (for distillation); ``tokens.py`` the length a FLOPs
target is counted at."""
from leap_fx.plugin.pruner import Pruner
from leap_fx.plugin.safeguards import PruningWarning, achieved, check_mask_lr, fold, strip, target_check
from leap_fx.plugin.tokens import tokens_per_example

__all__ = ["Pruner", "PruningWarning", "achieved", "check_mask_lr", "fold", "strip", "target_check",
           "tokens_per_example"]
