"""Models built from a net config through ctl's own classes only.

A net config names its class by ``_target_`` (``conf/model/*.yaml``). A run's ``config.yaml`` may
come from someone else (a colleague's run folder handed to ``ctl export``), and Hydra's
``instantiate`` imports and calls whatever a ``_target_`` names: a nested
``{_target_: torch.load, weights_only: false, f: ...}`` would unpickle the sender's object. So
every model, at training as at export, is built here instead: each ``_target_`` of the config,
at any depth, is looked up by name in :func:`allowed_classes` (ctl's models, the backbone's size
config and the model blocks) and the whole tree is checked before any object is made; anything
else is refused in one line naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from omegaconf import DictConfig, ListConfig, OmegaConf

from ctl.errors import CtlError, cut, shorten

TARGET_KEY = "_target_"


@cache
def allowed_classes() -> dict[str, type]:
    """The classes a net config may name, by the dotted name of their defining module and class."""
    from ctl.models import backbone, base, ctnet, din
    from ctl.models.baselines import dasl, ddtcdr, dual_emb, minet, mlppp, ple, share_bottom
    from ctl.models.blocks import (
        MLP,
        DinAttention,
        EtaRetrieval,
        FeatureEmbeddings,
        GluAdapter,
        LinearAdapter,
        MlpHead,
        SequenceEncoder,
        SimHardRetrieval,
        TargetAttention,
    )
    from ctl.models.recent import distill, lowrank, pepnet, plugin, star

    nets = (base.BaseModel, ctnet.CTNet, din.DIN, dasl.DASL, ddtcdr.DDTCDR, dual_emb.DualEmbedding, minet.MiNet,
            mlppp.MlpPlusPlus, ple.PLE, share_bottom.ShareBottom, star.STAR, pepnet.PEPNet,
            lowrank.LowRankTransfer, plugin.KnowledgePlugin, distill.SourceDistillation)
    blocks = (GluAdapter, LinearAdapter, TargetAttention, DinAttention, FeatureEmbeddings, EtaRetrieval, MLP, MlpHead,
              SequenceEncoder, SimHardRetrieval)
    return {f"{cls.__module__}.{cls.__qualname__}": cls for cls in (*nets, backbone.BackboneConfig, *blocks)}


def _plain(node: object) -> object:
    """A plain copy of an OmegaConf node, interpolations resolved (a composed config of ctl's own);
    plain data (read from a file with a YAML loader) stays as it is: nothing in it is resolved."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def check_targets(node: object, key: str) -> None:
    """Refuse, naming its key, any ``_target_`` in ``node`` (at any depth) that is not an allowed
    class, and Hydra's other special keys (``_partial_``, ``_args_``, ...)."""
    if isinstance(node, Mapping):
        for name, value in node.items():
            where = f"{key}.{name}"
            if name == TARGET_KEY:
                if not isinstance(value, str) or value not in allowed_classes():
                    raise CtlError(f"{where} = {shorten(value)} is not one of ctl's model classes and is refused: "
                                   "a model config may name only ctl's own models and blocks (e.g. "
                                   "ctl.models.base.BaseModel)")
            elif isinstance(name, str) and name.startswith("_") and name.endswith("_"):
                raise CtlError(f"{where} is refused: a model config takes no Hydra keys besides {TARGET_KEY}")
            else:
                check_targets(value, where)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_targets(value, f"{key}[{i}]")


def _build(node: object, key: str, runtime: Mapping[str, object] | None = None) -> object:
    if isinstance(node, (list, tuple)):
        return [_build(value, f"{key}[{i}]") for i, value in enumerate(node)]
    if not isinstance(node, Mapping):
        return node
    args = {name: _build(value, f"{key}.{name}") for name, value in node.items() if name != TARGET_KEY}
    if TARGET_KEY not in node:
        return args
    cls = allowed_classes()[node[TARGET_KEY]]
    clash = sorted(set(args) & set(runtime or {}))
    if clash:
        raise CtlError(f"{key}.{clash[0]} is refused: ctl passes {clash[0]} to {cls.__name__} itself")
    try:
        return cls(**args, **(runtime or {}))
    except (TypeError, AttributeError) as exc:  # a missing, unknown or wrong-typed argument: name the class and the key
        raise CtlError(f"{key}: {cls.__name__} cannot be built from its config ({cut(str(exc), 160)})") from None


def build_from_config(net: object, key: str, **runtime: object) -> object:
    """The object ``net`` describes (a ``_target_`` mapping), called with ``runtime`` (the schema,
    the domains), built only from :func:`allowed_classes`; ``key`` names ``net`` in refusals
    (``config.yaml: model.net``)."""
    net = _plain(net)
    if not isinstance(net, Mapping) or TARGET_KEY not in net:
        raise CtlError(f"{key} must be a mapping with a {TARGET_KEY} (one of ctl's models), got {shorten(net)}")
    check_targets(net, key)
    return _build(net, key, runtime)
