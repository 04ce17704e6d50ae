"""The paper's cross-domain baselines (section 4.4; MODELS.md), each the base backbone changed only in
what the domains share, the modules it adds and its loss.

Pre-train & fine-tune: :class:`DualEmbedding`. Joint learning (batches mixing source and target
rows, each row scored by its own domain's head): :class:`MlpPlusPlus`, :class:`ShareBottom`,
:class:`PLE`, :class:`MiNet`, :class:`DDTCDR`, :class:`DASL`.

Every model is built as ``Model(schema, backbone, source, target, ...)``, returns
``{"logits": [B], optional "row_weight": [B], optional "aux_loss": scalar}`` and starts from the
production models with ``init_from(source_state, target_state)``, which reports what it reused.
Joint models name the per-domain sequences their batches must carry with ``domain_sequences()``.
"""

from ctl.models.baselines.dasl import DASL
from ctl.models.baselines.ddtcdr import DDTCDR
from ctl.models.baselines.dual_emb import DualEmbedding
from ctl.models.baselines.minet import MiNet
from ctl.models.baselines.mlppp import MlpPlusPlus
from ctl.models.baselines.ple import PLE
from ctl.models.baselines.share_bottom import ShareBottom

__all__ = ["DASL", "DDTCDR", "PLE", "DualEmbedding", "MiNet", "MlpPlusPlus", "ShareBottom"]
