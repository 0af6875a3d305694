"""CoFi (Xia, Zhong, Chen: *Structured Pruning Learns Compact and Accurate Models*, ACL 2022).

Coarse- and fine-grained hard-concrete gates (``cofi_gates.py``: heads, whole attention sub-layers,
FFN neurons, whole FFN sub-layers, hidden dimensions), a target reached by a Lagrangian, layer-wise
distillation with learned matches (``leap_fx/train/layer_match.py``), then fine-tuning with the gates
frozen, all in one run of the loop. With ``s`` the expected sparsity ``1 - E[size] / size`` (Eq. 6) and
``t`` the target sparsity (rising linearly from 0 to ``1 - target_density`` over the target warm-up,
as the reference's ``lagrangian_warmup``), the penalty is (Eq. 5)::

    L_c = lambda_1 (s - t) + lambda_2 (s - t)^2

minimised over the gates' ``log_alpha`` and *maximised* over ``lambda_1, lambda_2`` (their optimiser
group has ``maximize=True``; both start at 0). Phases (fractions of the run): dense warm-up (gates all
1, no penalty: the reference's ``prepruning_finetune``), pruning (sampled gates + ``L_c``), fine-tune
(deterministic gates, frozen; the reference fine-tunes in a second run). ``finalize`` bakes the
deterministic gates (fold; the masked norms keep their kept set for strip) and strip removes heads,
neurons, hidden dimensions and whole sub-layers.

Targets (``leap_fx.costs``, as every method): ``density:`` is the kept fraction of the gated families'
parameters, ``flops:`` of their forward FLOPs at ``cost_seq`` tokens (the job sets the run's length).
Latency targets are not CoFi's (use a FLOPs target).

Deviations (short CPU runs: the reference trains 20 epochs at ``reg_learning_rate`` 0.01 and fine-tunes
20 more; our runs have a few hundred steps):

- ``gate_lr`` / ``lambda_lr`` default to a rate scaled to the run (``auto_gate_lr``): ``log_alpha``
  must cross its clamp range ``[log 0.01, log 100]`` (CoFi's ``constrain_parameters``) within the
  target warm-up, which 0.01 per step cannot do in ~100 steps (slower gates drift together instead
  of polarising, and the deterministic size then misses the expected one);
- ``lambda_1`` learns at a tenth of ``lambda_2``'s rate (``lambda1_lr_scale``): at equal rates ``lambda_1``
  winds up while the target ramps (the gap keeps one sign) and the expected size overshoots far below
  the target before it unwinds. On a toy (4-layer BERT gates, a random per-gate task pull, target 0.3;
  ``tests/test_cofi.py`` keeps a version) equal rates ended at expected density 0.008-0.02 in 48
  steps and dipped to 0.04-0.08 in 200; with 0.1 they end at 0.28-0.34 and dip no lower than 0.22;
- gates start nearly open (``drop_rate_init`` 0.01) for every granule (the reference opens heads and
  layers fully but FFN neurons at a 0.5 drop rate);
- layer gates do not scale the out / down bias (``cofi_gates.py``);
- the layer map's optimiser group uses the weights' learning rate, without weight decay.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from leap_fx.costs import cost_seq
from leap_fx.masks.hard_concrete import LOG_ALPHA_RANGE, HardConcrete
from leap_fx.masks.lifecycle import fold
from leap_fx.methods.base import LossTerms, TrainedMethod
from leap_fx.methods.cofi.config import CofiConfig
from leap_fx.methods.cofi.gates import ExpectedSize, install_gates
from leap_fx.methods.registry import register
from leap_fx.objectives.layer_match import MatchedLayerKD
from passes.strip import masked_norm

__all__ = ["Cofi", "auto_gate_lr", "PHASES"]

PHASES = ("dense", "prune", "finetune")
MISS = 0.05  # |kept - target| above which finalize warns


def auto_gate_lr(config: CofiConfig, total_steps: int) -> float:
    """A ``log_alpha`` rate that lets a gate cross its clamp range twice during the target warm-up
    (Adam moves it about one learning rate per step), never below the reference's 0.01."""
    span = LOG_ALPHA_RANGE[1] - LOG_ALPHA_RANGE[0]
    steps = max(1.0, config.target_warmup_ratio * total_steps)
    return max(0.01, 2.0 * span / steps)


@register(CofiConfig)
class Cofi(TrainedMethod):
    """CoFi: hard-concrete gates, Lagrangian target, matched layer distillation, frozen fine-tune."""

    log_keys = ("expected_density", "target_density", "lambda_1", "lambda_2", "lagrangian", "hidden_kept")
    progress_keys = ("expected_density",)

    def __init__(self, config, total_steps: int = 1, train_config=None, task_loss=None):
        super().__init__(config, total_steps, train_config, task_loss)
        self.lambdas = nn.ParameterList([nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))])
        self.gates, self.size, self.residual, self.phase = None, None, None, "dense"
        self.layers_alive = None

    def make_owner(self, shape, key, device=None) -> HardConcrete:
        return HardConcrete(shape, key, device, drop_rate=self.config.drop_rate_init)

    @property
    def unit(self) -> str:
        """What the expected size counts: ``params`` (a density target) or ``flops``."""
        return "flops" if self.config.goal.unit == "flops" else "params"

    # -- lifecycle -------------------------------------------------------------------------
    def prepare(self, model, plan):
        if plan is None:
            raise ValueError("cofi needs a Plan: plan = leap_fx.analyze(model, example_inputs, residual=True)")
        if self.config.prune_hidden and plan.residual is None:
            raise ValueError("cofi prune_hidden=True needs the residual stream in the Plan: "
                             "plan = passes.analyze.match(model, example_inputs, residual=True), or prune_hidden=False")
        dev = next(model.parameters()).device
        self.gates = install_gates(model, plan, lambda shape, key: self.make_owner(shape, key, dev),
                                   self.config.prune_layers, self.config.prune_hidden)
        seq = cost_seq(self.config) if self.unit == "flops" else 1
        self.size = ExpectedSize(model, plan, self.gates, self.unit, seq)
        self.residual = plan.residual
        self.lambdas.to(dev)
        fam = next(iter(plan.families.values()))
        width = plan.residual.width if plan.residual is not None else \
            model.get_parameter(fam.slices[0].weight_name).shape[1 - fam.slices[0].axis]
        if isinstance(self.objective_fn, MatchedLayerKD):
            self.objective_fn.build(width, dev)
        self.layers_alive = self._alive(plan)

    def _alive(self, plan):
        """Student blocks (in Plan order) with at least one sub-layer gate open in this forward."""
        by_layer: dict[int, list[HardConcrete]] = {}
        for key, fam in plan.families.items():
            if key in self.gates.layers:
                by_layer.setdefault(fam.layer, []).append(self.gates.layers[key])
        order = sorted(by_layer)

        def alive() -> list[bool]:
            return [any(float(g.mask().detach().reshape(-1)[0]) != 0 for g in by_layer[k]) for k in order]
        return alive if by_layer else None

    def objective(self):
        cfg = self.config
        if not cfg.layer_distill:
            return super().objective()
        return MatchedLayerKD(cfg.distill_layers, cfg.layer_weight, cfg.pred_weight, self.train_config.kd_temperature,
                              alive=self.alive_layers, task=self.task_loss)

    def alive_layers(self):
        return self.layers_alive() if self.layers_alive is not None else None

    def gate_lr(self) -> float:
        return float(self.config.gate_lr) if self.config.gate_lr else auto_gate_lr(self.config, self.total_steps)

    def param_groups(self, model, lr, weight_decay=0.0):
        gate_ids = {id(g.log_alpha) for g in self.gates.all()}
        weights = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]
        gates = [g.log_alpha for g in self.gates.all()]
        lam_lr = float(self.config.lambda_lr or self.gate_lr())
        groups = [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
                  {"params": gates, "lr": self.gate_lr(), "weight_decay": 0.0, "name": "masks"},
                  {"params": [self.lambdas[0]], "lr": lam_lr * self.config.lambda1_lr_scale, "weight_decay": 0.0,
                   "maximize": True, "name": "lambda_1"},
                  {"params": [self.lambdas[1]], "lr": lam_lr, "weight_decay": 0.0, "maximize": True,
                   "name": "lambda_2"}]
        extra = list(self.objective_fn.parameters())
        if extra:
            groups.append({"params": extra, "lr": lr, "weight_decay": 0.0, "name": "layer_map"})
        return groups

    # -- schedule ----------------------------------------------------------------------------
    def bounds(self) -> tuple[int, int, int]:
        """(first pruning step, last step of the target ramp, first fine-tune step)."""
        n, c = self.total_steps, self.config
        start = int(round(c.dense_warmup_ratio * n))
        ramp = start + max(1, int(round(c.target_warmup_ratio * n)))
        tune = n - int(round(c.finetune_ratio * n))
        return start, ramp, max(tune, start + 1)

    def phase_at(self, step: int) -> str:
        start, _, tune = self.bounds()
        return PHASES[0] if step < start else PHASES[1] if step < tune else PHASES[2]

    def target_sparsity(self, step: int) -> float:
        start, ramp, _ = self.bounds()
        frac = min(1.0, max(0.0, (step - start) / (ramp - start)))
        return frac * (1.0 - self.config.kept)

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        for g in self.gates.all():
            g.set_mode({"dense": "off", "prune": "sample", "finetune": "frozen"}[phase])
            g.clamp_()

    def on_step(self, model, step):
        self.set_phase(self.phase_at(step))
        if self.phase == "prune":
            for g in self.gates.all():
                g.resample()
        return {"phase": float(PHASES.index(self.phase))}

    def lagrangian(self, step: int) -> tuple[torch.Tensor, dict]:
        """``L_c`` (Eq. 5) and the values to log."""
        expected = self.size.density()
        s, t = 1.0 - expected, self.target_sparsity(step)
        gap = s - t
        pen = self.lambdas[0] * gap + self.lambdas[1] * gap * gap
        lam = [float(p.detach()) for p in self.lambdas]
        return pen, {"expected_density": float(expected.detach()), "target_density": 1.0 - t,
                     "lambda_1": lam[0], "lambda_2": lam[1], "lagrangian": float(pen.detach())}

    def loss_terms(self, out, teacher_out, batch, step) -> LossTerms:
        terms = super().loss_terms(out, teacher_out, batch, step)
        if self.phase == "prune":
            terms.penalty, values = self.lagrangian(step)
            terms.values.update(values)
        if self.gates.hidden is not None:
            terms.values["hidden_kept"] = float((self.gates.hidden.deterministic_mask() != 0).sum())
        return terms

    def finalize(self, model):
        """Deterministic gates baked in: fold; the masked norms keep the kept hidden dims for strip."""
        self.set_phase("finetune")
        got = self.summary()
        if abs(got["realised_density"] - got["target_density"]) > MISS:
            warnings.warn(f"cofi: the gates keep {got['realised_density']:.3f} of the {got['unit']} "
                          f"(expected {got['expected_density']:.3f}), target {got['target_density']:.3f}: the "
                          f"Lagrangian did not settle in this run; train longer (epochs), or raise gate_lr",
                          stacklevel=2)
        if self.gates.hidden is not None:
            masked_norm.fix(model, self.residual)
        return fold(model)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self, model) -> dict:
        """The Lagrange multipliers (the layer map is the objective's: a module, in the checkpoint's tensors)."""
        return {"lambdas": [float(p.detach()) for p in self.lambdas]}

    def load_state_dict(self, model, state) -> None:
        with torch.no_grad():
            for p, v in zip(self.lambdas, state.get("lambdas", [0.0, 0.0])):
                p.fill_(float(v))

    def summary(self) -> dict:
        """Expected and realised (deterministic) density of the gated families."""
        return {"expected_density": float(self.size.density().detach()), "realised_density": self.size.realised(),
                "target_density": self.config.kept, "unit": self.unit}

