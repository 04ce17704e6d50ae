"""Method labels: the name a run's rows carry in ``metrics.json`` and in every table of ``ctl eval``.

A method is a model config (``model=<name>``) plus the settings that make it another method of
the paper's tables rather than another setting of the same one. :func:`method_label` derives the
label from a run's composed config; every protocol writes it into ``metrics.json`` and ``ctl eval``
reads it back from there (it never re-derives labels), ordering rows with :func:`method_rank`.

=====================================================  ==========================
config                                                 label
=====================================================  ==========================
``model=ctnet``                                        ``ctnet``
``model=ctnet model.refresh_source=false``             ``ctnet_once``
``model=ctnet model.net.adapter_rank=64``              ``ctnet_r64``
``model=ctnet model.net.share_attention=true``         ``ctnet_shared``
``model=ctnet model.net.adapter_lr=0.001``             ``ctnet_alr0.001``
``model=ctnet model.net.adapter_base_width=64``        ``ctnet_aw64``
``model=ctnet model.net.adapter_base_width=null``      ``ctnet_awnone``
``model=ctnet model.adapter_state=matched``            ``ctnet_matched``
``model=base model.first_period=12``                   ``base_from12``
``model=ple model.source_rows=false``                  ``ple_targetonly``
``model=ft_all model.finetune_periods=1``              ``ft_all_k1``
``model=ft_all model.finetune_periods=all``            ``ft_all_kall``
``model=ft_id_emb model.inherit_optimizer=true``       ``ft_id_emb_warmopt``
``model=base model.size.long_window=64``                ``base_w64``
any other model config                                 its ``model.name``
=====================================================  ==========================

CTNet's suffixes combine in the order ``_r<rank>``, ``_shared``, ``_alr<lr>``, ``_aw<width>``,
``_<adapter_state>``, ``_once``
(``ctnet_linear_r64_shared_once``); the fine-tuning ones as ``_k<periods>_warmopt``. A long-sequence
window (``model.size.long_window``, SIM and ETA over the last W events instead of the lifelong
history) adds ``_w<W>`` last, to any method.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

#: the label of the target production model, the reference of every gain
BASE = "base"
#: the label of the paper's method; its variants' labels start with it
CTNET = "ctnet"

#: CTNet's shipped ``model.net.adapter_base_width`` (conf/model/ctnet.yaml): another width is another method
ADAPTER_BASE_WIDTH = 128

#: the methods published after the paper (docs/models.md), in the order of the tables
ADDED_METHODS: tuple[str, ...] = ("star", "pepnet", "lowrank", "plugin", "distill")

#: Row order of the tables: the paper's Table 2, the methods added beyond it, then anything else by name.
METHOD_ORDER: tuple[str, ...] = (
    BASE, "source", "din", "ft_id_emb", "ft_all_emb", "ft_all", "dual_emb", "mlppp", "share_bottom",
    "ple", "minet", "ddtcdr", "dasl", "ctnet_linear", "ctnet_once", "ctnet",
    *ADDED_METHODS,
)


def method_label(cfg: DictConfig) -> str:
    """The label of the run ``cfg`` (a composed ``train`` config): ``model.name`` plus its variant suffixes."""
    model = cfg.model
    label = str(model.name)
    if model.protocol == "ctnet":
        if model.net.adapter_rank is not None:
            label += f"_r{model.net.adapter_rank}"
        if model.net.share_attention:
            label += "_shared"
        if model.net.adapter_lr is not None:
            label += f"_alr{model.net.adapter_lr:g}"
        if model.net.adapter_base_width != ADAPTER_BASE_WIDTH:
            label += f"_aw{'none' if model.net.adapter_base_width is None else model.net.adapter_base_width}"
        if model.adapter_state != "fresh":
            label += f"_{model.adapter_state}"
        if not model.refresh_source:
            label += "_once"
    elif model.protocol == "track":
        if model.first_period:
            label += f"_from{model.first_period}"
    elif model.protocol == "joint":
        if not model.source_rows:
            label += "_targetonly"
    elif model.protocol == "finetune":
        if str(model.finetune_periods) != "0":
            label += f"_k{model.finetune_periods}"
        if model.inherit_optimizer:
            label += "_warmopt"
    window = OmegaConf.select(cfg, "model.size.long_window")
    if window is not None:
        label += f"_w{window}"
    return label


def method_rank(label: str) -> tuple[int, str]:
    """Sort key of a row label: the paper's order of methods, variants (``ft_all_k1``,
    ``ctnet[...]``) next to their method, unknown methods last by name."""
    method = label.split("[", 1)[0]
    known = [m for m in METHOD_ORDER if method == m or method.startswith(f"{m}_")]
    return (METHOD_ORDER.index(max(known, key=len)) if known else len(METHOD_ORDER), label)


def is_ctnet_family(label: str) -> bool:
    """Whether a row label is CTNet or one of its variants (``ctnet_linear``, ``ctnet_once``, ``ctnet[...]``)."""
    method = label.split("[", 1)[0]
    return method == CTNET or method.startswith(f"{CTNET}_")


def register_label_resolver() -> None:
    """Make ``${method_label:}`` resolve to the label of the config it is in: ``conf/train.yaml`` names
    run and sweep folders with it, so a ``ctnet_once`` job's folder says ``ctnet_once``."""
    OmegaConf.register_new_resolver("method_label", lambda *, _root_: method_label(_root_), replace=True)
