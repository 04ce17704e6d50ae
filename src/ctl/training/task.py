"""``CTRTask``: the LightningModule that trains any ctl model (a plain ``nn.Module``).

A model maps a batch to logits ``[B]``, or to a dict with ``logits`` plus optional ``aux_loss``
(a scalar added to the loss) and ``row_weight`` (``[B]``, per-row loss weights, e.g. a joint
model's domain weights). Each row's logit is its own domain's head, so BCE over the batch
already masks every row's loss to its domain.

Metrics (AUC via torchmetrics, GAUC, logloss) are computed per stage and reset after every
validation epoch, so nothing carries over from one period to the next.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from ctl.errors import CtlError
from ctl.metrics import GAUC

#: ``configure_optimizers`` calls this with the trainable parameters (in ``parameter_groups`` order).
OptimizerFactory = Callable[[list[dict]], torch.optim.Optimizer]


def adagrad(lr: float = 0.01, initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> OptimizerFactory:
    """Adagrad, the paper's optimiser, as a factory of parameter groups."""

    def build(groups: list[dict]) -> torch.optim.Optimizer:
        return torch.optim.Adagrad(groups, lr=lr, initial_accumulator_value=initial_accumulator_value, eps=eps)

    return build


class StageMetrics(torch.nn.Module):
    """AUC, GAUC and logloss of one stage (validation or test)."""

    def __init__(self) -> None:
        super().__init__()
        self.auc = BinaryAUROC()
        self.gauc = GAUC()
        self.logloss = MeanMetric()

    def update(self, logits: torch.Tensor, labels: torch.Tensor, users: torch.Tensor) -> None:
        probs = torch.sigmoid(logits)
        target = labels.long()
        self.auc.update(probs, target)
        self.gauc.update(probs, target, users)
        self.logloss.update(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))

    def compute(self) -> dict[str, float]:
        return {
            "auc": float(self.auc.compute()),
            "gauc": float(self.gauc.compute()),
            "logloss": float(self.logloss.compute()),
        }

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
        self._train_rows = 0
        self._val_rows = 0
        #: optimiser state to continue from: {parameter: state dict}, filled before ``fit``
        self.inherited_optimizer_state: dict[torch.nn.Parameter, dict] = {}

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
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch["label"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Checking every step would sync; every 50 steps and at the end of a period is enough to
        # stop a diverged run close to where it happened.
        if batch_idx % 50 == 0:
            self._check_finite(outputs["loss"], batch_idx)

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        if not torch.isfinite(loss).item():
            period = self.period_of_epoch(self.current_epoch)
            raise CtlError(
                f"the training loss became {loss.item()} in period {period} at step {step}; "
                "lower optim.lr or check the data of that period"
            )

    def on_train_epoch_start(self) -> None:
        self._train_rows = 0

    # --- validation / test ----------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch)
        self.val_metrics.update(out["logits"], batch["label"], batch["user_id"])
        self._val_rows += int(batch["label"].shape[0])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_metrics.reset()
            self._val_rows = 0
            return
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        period = self.period_of_epoch(self.current_epoch)
        self.log_dict({f"val/{k}": v for k, v in values.items()}, batch_size=1)
        self.log("period", float(period), batch_size=1)
        record = {"period": period, "eval_period": period + 1, "train_rows": self._train_rows,
                  "rows": self._val_rows, **values}
        self.period_results = [r for r in self.period_results if r["period"] != period] + [record]
        self._val_rows = 0

    def test_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch)
        logits = out["logits"]
        self.test_metrics.update(logits, batch["label"], batch["user_id"])
        self.test_predictions.append(
            {
                "row": batch["row"],
                "user_id": batch["user_id"],
                "item_id": batch["item_id"],
                "label": batch["label"],
                "pred": torch.sigmoid(logits.detach()).float(),
            }
        )

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        self.test_metrics.reset()
        rows = sum(int(p["row"].shape[0]) for p in self.test_predictions)
        self.log_dict({f"test/{k}": v for k, v in values.items()}, batch_size=1)
        self.test_result = {"period": self.test_period, "rows": rows, **values}

    # --- optimiser ----------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = getattr(self.model, "parameter_groups", None)
        groups = groups() if callable(groups) else [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        optimizer = self.optimizer_factory(groups)
        for param, state in self.inherited_optimizer_state.items():
            optimizer.state[param] = {k: v.clone() for k, v in state.items()}
        return optimizer
