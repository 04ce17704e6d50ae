"""Transfer methods published after the paper, run under its continual protocol (docs/models.md).

Joint on source and target rows (the ``joint`` protocol): :class:`STAR`, :class:`PEPNet`. Over a
frozen source model refreshed every period (the ``frozen_source`` protocol): :class:`LowRankTransfer`
(low-rank deltas on the source model's MLP), :class:`KnowledgePlugin` (the source model's logit and
last hidden layer as extra inputs of the target model), :class:`SourceDistillation` (an auxiliary
loss towards the source model's predictions).
"""

from ctl.models.recent.distill import SourceDistillation
from ctl.models.recent.lowrank import LowRankTransfer
from ctl.models.recent.pepnet import PEPNet
from ctl.models.recent.plugin import KnowledgePlugin
from ctl.models.recent.star import STAR

__all__ = ["STAR", "KnowledgePlugin", "LowRankTransfer", "PEPNet", "SourceDistillation"]
