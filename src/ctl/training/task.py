"""``CTRTask``: the LightningModule that trains any ctl model (a plain ``nn.Module``).

A model maps a batch to logits ``[B]``, or to a dict with ``logits`` plus optional ``aux_loss``
(a scalar added to the loss) and ``row_weight`` (``[B]``, per-row loss weights, e.g. a joint
model's domain weights). Each row's logit is its own domain's head, so BCE over the batch
already masks every row's loss to its domain.

Metrics (AUC via torchmetrics, GAUC, logloss) are computed per stage and reset after every
validation epoch, so nothing carries over from one period to the next. The test slice's per-row
predictions are kept (``test_predictions``), and, from period ``keep_val_predictions_from`` on,
each validated slice's (``val_predictions``): a run pairs them with its base model's, row by row.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from ctl.errors import CtlError
from ctl.metrics import GAUC
from ctl.training.distributed import gather_rows

#: training steps between two looks at the losses on an accelerator (a look syncs the device)
CHECK_EVERY = 50
#: checkpoint key of the task's own state (period records, rows of the current period, RNG)
TASK_KEY = "ctl_task"

#: ``configure_optimizers`` calls this with the trainable parameters (in ``parameter_groups`` order).
OptimizerFactory = Callable[[list[dict]], torch.optim.Optimizer]


def class_path(obj: object) -> str:
    """``module.QualName`` of ``obj``'s class (``torch.optim.adagrad.Adagrad``)."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def saved_optimizer(checkpoint: dict) -> str | None:
    """The class of the optimiser whose state a checkpoint of a :class:`CTRTask` fit holds."""
    return (checkpoint.get(TASK_KEY) or {}).get("optimizer")


def row_predictions(batch: dict, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-row record of an evaluated batch: ids, label and predicted click probability."""
    return {"row": batch["row"], "user_id": batch["user_id"], "item_id": batch["item_id"], "label": batch["label"],
            "pred": torch.sigmoid(logits.detach()).float()}


class StageMetrics(torch.nn.Module):
    """AUC, GAUC and logloss of one stage (validation or test).

    ``across_ranks=False`` computes on this process's rows alone, with no collective (under DDP, a
    rank that holds every row of the slice, e.g. a continuation's revalidation on every rank).
    """

    def __init__(self, across_ranks: bool = True) -> None:
        super().__init__()
        self.auc = BinaryAUROC(sync_on_compute=across_ranks)
        self.gauc = GAUC(sync_on_compute=across_ranks)
        self.logloss = MeanMetric(sync_on_compute=across_ranks)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, users: torch.Tensor) -> None:
        probs = torch.sigmoid(logits)
        target = labels.long()
        self.auc.update(probs, target)
        self.gauc.update(probs, target, users)
        self.logloss.update(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))

    def compute(self) -> dict[str, float]:
        return {
            "auc": float(self.auc.compute()),
            "gauc": self._gauc_or_nan(),
            "logloss": float(self.logloss.compute()),
        }

    def _gauc_or_nan(self) -> float:
        # A small slice may hold no user with both labels: GAUC is undefined there, which is a
        # fact about the slice to report, not a reason to stop the run.
        try:
            return float(self.gauc.compute())
        except ValueError as exc:
            rank_zero_warn(f"{exc}; GAUC recorded as NaN for this slice")
            return float("nan")

    def reset(self) -> None:
        self.auc.reset()
        self.gauc.reset()
        self.logloss.reset()


class CTRTask(pl.LightningModule):
    """Binary cross-entropy training of ``model`` with per-stage AUC/GAUC/logloss.

    ``period_of_epoch`` maps the trainer's epoch to the data period it serves (epoch k = period
    ``periods[k]``), so recorded metrics name real periods.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: OptimizerFactory,
        period_of_epoch: Callable[[int], int],
        test_period: int,
        keep_val_predictions_from: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.period_of_epoch = period_of_epoch
        self.test_period = test_period
        self.val_metrics = StageMetrics()
        self.test_metrics = StageMetrics()
        #: one dict per validated period: {"period", "train_rows", "auc", "gauc", "logloss", "rows"}
        self.period_results: list[dict] = []
        self.test_result: dict | None = None
        self.test_predictions: list[dict[str, torch.Tensor]] = []
        self.keep_val_predictions_from = keep_val_predictions_from
        #: trained-through period -> that period's validation rows (row, user_id, item_id, label, pred), on CPU
        self.val_predictions: dict[int, dict[str, torch.Tensor]] = {}
        self._val_parts: list[dict[str, torch.Tensor]] = []
        self._train_rows = 0
        self._val_rows = 0
        #: optimiser state to continue from: {parameter: state dict}, set by :meth:`inherit_optimizer_state`
        self.inherited_optimizer_state: dict[torch.nn.Parameter, dict] = {}
        #: the optimiser classes that wrote ``inherited_optimizer_state``, and where it was read
        self._inherited_from: tuple[set[str | None], str] = (set(), "")
        #: training losses not yet checked for NaN/inf (on their device) and their (epoch, batch_idx, global_step)
        self._unchecked_losses: list[torch.Tensor] = []
        self._unchecked_steps: list[tuple[int, int, int]] = []

    # --- training ----------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        out = self.model(batch)
        return out if isinstance(out, dict) else {"logits": out}

    def _loss(self, out: dict, batch: dict) -> torch.Tensor:
        losses = F.binary_cross_entropy_with_logits(out["logits"], batch["label"], reduction="none")
        weight = out.get("row_weight")
        loss = losses.mean() if weight is None else (losses * weight).sum() / weight.sum().clamp_min(1e-12)
        aux = out.get("aux_loss")
        return loss if aux is None else loss + aux

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self(batch)
        loss = self._loss(out, batch)
        self._train_rows += int(batch["label"].shape[0])
        # Noted here, before any callback may checkpoint this step; looked at in on_train_batch_end.
        self._unchecked_losses.append(loss.detach())
        self._unchecked_steps.append((self.current_epoch, batch_idx, self.global_step + 1))
        # Only on the steps Lightning writes to its logger: a log call costs about 2 ms on CPU (it
        # moves Lightning's whole result collection), a sixth of a small model's step.
        # Lightning's logger connector sets log_every_n_steps on the trainer; Trainer does not declare it.
        every = self.trainer.log_every_n_steps  # type: ignore[attr-defined]
        if (self.global_step + 1) % max(1, every) == 0:
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False,
                     batch_size=batch["label"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Looking at a loss on an accelerator syncs it: there the losses are looked at together
        # every CHECK_EVERY steps (and before a checkpoint); on CPU a look is free, so every step.
        if outputs["loss"].device.type == "cpu" or len(self._unchecked_losses) >= CHECK_EVERY:
            self.raise_if_nonfinite()

    def raise_if_nonfinite(self) -> None:
        """Stop the fit, naming the period and step of the first NaN/inf training loss not yet looked at."""
        if not self._unchecked_losses:
            return
        losses, steps = torch.stack(self._unchecked_losses), self._unchecked_steps
        self._unchecked_losses, self._unchecked_steps = [], []
        bad = torch.nonzero(~torch.isfinite(losses))
        if bad.numel():
            first = int(bad[0, 0])
            epoch, batch_idx, step = steps[first]
            raise CtlError(
                f"the training loss became {float(losses[first])} in period {self.period_of_epoch(epoch)} at its "
                f"batch {batch_idx} (global step {step}); lower optim.lr or check the data of that period"
            )

    def on_train_epoch_end(self) -> None:
        self.raise_if_nonfinite()

    def on_train_epoch_start(self) -> None:
        self._train_rows = 0

    # --- validation / test ----------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch)
        self.val_metrics.update(out["logits"], batch["label"], batch["user_id"])
        self._val_rows += int(batch["label"].shape[0])
        if self._keeps_val_predictions():
            self._val_parts.append(row_predictions(batch, out["logits"]))

    def _keeps_val_predictions(self) -> bool:
        keep_from = self.keep_val_predictions_from
        return keep_from is not None and self.period_of_epoch(self.current_epoch) >= keep_from

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_metrics.reset()
            self._val_rows = 0
            self._val_parts = []
            return
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        period = self.period_of_epoch(self.current_epoch)
        self.log_dict({f"val/{k}": v for k, v in values.items()}, batch_size=1)
        self.log("period", float(period), batch_size=1)
        # under DDP each rank counted its own shard; the metrics above are already synced
        train_rows, val_rows = (int(self.trainer.strategy.reduce(torch.tensor(n), reduce_op="sum"))
                                for n in (self._train_rows, self._val_rows))
        record = {"period": period, "eval_period": period + 1, "train_rows": train_rows,
                  "rows": val_rows, **values}
        self.period_results = [r for r in self.period_results if r["period"] != period] + [record]
        self._val_rows = 0
        if self._keeps_val_predictions():
            # every rank takes part in the gather, as for the test predictions
            self.val_predictions[period] = gather_rows(self._val_parts)[0]
        self._val_parts = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch)
        logits = out["logits"]
        self.test_metrics.update(logits, batch["label"], batch["user_id"])
        self.test_predictions.append(row_predictions(batch, logits))

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        self.test_metrics.reset()
        # on CPU, ordered by row; under DDP every rank gets all ranks' predictions
        self.test_predictions = gather_rows(self.test_predictions)
        rows = sum(int(p["row"].shape[0]) for p in self.test_predictions)
        self.log_dict({f"test/{k}": v for k, v in values.items()}, batch_size=1)
        self.test_result = {"period": self.test_period, "rows": rows, **values}

    # --- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A diverged model is never saved; a resumed fit continues the period's records, its row
        # count and the global random stream exactly where the checkpoint left them.
        self.raise_if_nonfinite()
        checkpoint[TASK_KEY] = {"period_results": list(self.period_results), "train_rows": self._train_rows,
                                "optimizer": class_path(self.trainer.optimizers[0]),
                                "val_predictions": dict(self.val_predictions),
                                "torch_rng": torch.get_rng_state(),
                                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get(TASK_KEY)
        if state is None:
            return
        self.period_results = list(state["period_results"])
        self._train_rows = int(state["train_rows"])
        self.val_predictions = dict(state.get("val_predictions", {}))
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # --- optimiser ----------------------------------------------------------------------------
    def inherit_optimizer_state(self, states: dict[torch.nn.Parameter, dict], checkpoints: dict[str, dict]) -> None:
        """Continue each parameter's optimiser state in ``states``, read from ``checkpoints`` (path -> checkpoint).

        One optimiser's state means nothing to another (Adagrad's ``sum`` is no Adam moment), so
        :meth:`configure_optimizers` refuses an optimiser of another class than the one that wrote
        the checkpoints.
        """
        self.inherited_optimizer_state = states
        self._inherited_from = ({saved_optimizer(c) for c in checkpoints.values()}, ", ".join(checkpoints))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = getattr(self.model, "parameter_groups", None)
        groups = groups() if callable(groups) else [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        optimizer = self.optimizer_factory(groups)
        # a group's lr_scale multiplies whatever rate it got (its own or the optimiser's); popped so
        # a resumed fit, which restores the scaled rate from the checkpoint, does not scale twice
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.pop("lr_scale", 1.0)
        written_by, where = self._inherited_from
        if self.inherited_optimizer_state and written_by != {class_path(optimizer)}:
            raise CtlError(f"the optimiser state to continue ({where}) was written by "
                           f"{' and '.join(sorted(w or 'an optimiser it does not name' for w in written_by))}, "
                           f"not by this run's {class_path(optimizer)}: "
                           "one optimiser cannot continue another's state; train with the optimiser of that "
                           "checkpoint (its track is keyed by optim)")
        # only parameters the optimiser updates: a frozen one's state would break its state_dict
        updated = {param for group in optimizer.param_groups for param in group["params"]}
        for param, state in self.inherited_optimizer_state.items():
            if param in updated:
                optimizer.state[param] = {k: v.clone() for k, v in state.items()}
        return optimizer
