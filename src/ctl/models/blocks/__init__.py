"""Building blocks shared by every model: embeddings, attention, sequence encoder, SIM, ETA, MLP, adapters."""

from ctl.models.blocks.adapters import ADAPTER_KINDS, GluAdapter, LinearAdapter, build_adapter
from ctl.models.blocks.attention import DinAttention, TargetAttention, attendable_mask
from ctl.models.blocks.domain_layers import GateNU, PartitionedNorm, StarLinear
from ctl.models.blocks.embeddings import EMBEDDING_INIT_STD, FeatureEmbeddings
from ctl.models.blocks.eta import EtaRetrieval
from ctl.models.blocks.mlp import MLP, MlpHead
from ctl.models.blocks.sequence import SequenceEncoder
from ctl.models.blocks.sim import SimHardRetrieval, gather_events

__all__ = [
    "ADAPTER_KINDS",
    "EMBEDDING_INIT_STD",
    "MLP",
    "DinAttention",
    "EtaRetrieval",
    "FeatureEmbeddings",
    "GateNU",
    "GluAdapter",
    "LinearAdapter",
    "MlpHead",
    "PartitionedNorm",
    "SequenceEncoder",
    "SimHardRetrieval",
    "StarLinear",
    "TargetAttention",
    "attendable_mask",
    "build_adapter",
    "gather_events",
]
