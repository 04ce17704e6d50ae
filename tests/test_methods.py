"""Method labels: one derivation (``ctl.methods.method_label``) for runs, tables and sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import ctl.conf
from ctl.methods import (
    BASE,
    METHOD_ORDER,
    is_ctnet_family,
    method_label,
    method_rank,
    register_label_resolver,
)

#: overrides of `ctl train` -> the label its metrics.json and tables carry (written by hand)
LABELS: dict[tuple[str, ...], str] = {
    ("model=base",): "base",
    ("model=source",): "source",
    ("model=din",): "din",
    ("model=base", "model/size=paper"): "base",
    ("model=ctnet",): "ctnet",
    ("model=ctnet", "model.refresh_source=false"): "ctnet_once",
    ("model=ctnet", "model.net.adapter_rank=64"): "ctnet_r64",
    ("model=ctnet", "model.net.share_attention=true"): "ctnet_shared",
    ("model=ctnet", "model.net.adapter_lr=0.001"): "ctnet_alr0.001",
    ("model=ctnet", "model.net.adapter_lr=1e-4"): "ctnet_alr0.0001",
    ("model=ctnet", "model.net.adapter_base_width=128"): "ctnet",
    ("model=ctnet", "model.net.adapter_base_width=256"): "ctnet_aw256",
    ("model=ctnet", "model.net.adapter_base_width=null"): "ctnet_awnone",
    ("model=ctnet", "model.adapter_state=matched"): "ctnet_matched",
    ("model=ctnet", "model.adapter_state=matched", "model.net.adapter_base_width=64",
     "model.refresh_source=false"): "ctnet_aw64_matched_once",
    ("model=ctnet_linear", "model.net.adapter_base_width=null"): "ctnet_linear_awnone",
    ("model=base", "model.first_period=12"): "base_from12",
    ("model=base", "model.size.long_window=64"): "base_w64",
    ("model=ctnet", "model.net.share_attention=true", "model.size.long_window=64"): "ctnet_shared_w64",
    ("model=din", "model.first_period=1"): "din_from1",
    ("model=ctnet", "model.net.adapter_rank=16", "model.net.share_attention=true"): "ctnet_r16_shared",
    ("model=ctnet_linear", "model.net.adapter_rank=64", "model.net.share_attention=true",
     "model.net.adapter_lr=0.01", "model.refresh_source=false"): "ctnet_linear_r64_shared_alr0.01_once",
    ("model=ctnet", "model.net.adapter_init_std=0.001"): "ctnet",
    ("model=ple",): "ple",
    ("model=ple", "model.source_rows=false"): "ple_targetonly",
    ("model=mlppp", "model.source_rows=false"): "mlppp_targetonly",
    ("model=ft_all",): "ft_all",
    ("model=ft_all", "model.finetune_periods=1"): "ft_all_k1",
    ("model=ft_all", "model.finetune_periods=all"): "ft_all_kall",
    ("model=ft_id_emb", "model.inherit_optimizer=true"): "ft_id_emb_warmopt",
    ("model=ft_all_emb", "model.finetune_periods=2", "model.inherit_optimizer=true"): "ft_all_emb_k2_warmopt",
    ("model=dual_emb",): "dual_emb",
    ("model=base", "optim=adam", "seed=3", "data.domain=C"): "base",
}


@pytest.mark.parametrize("overrides", list(LABELS), ids=" ".join)
def test_method_label_of_a_config(overrides: tuple[str, ...]) -> None:
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    assert method_label(cfg) == LABELS[overrides]


def test_rows_follow_the_papers_order_with_variants_beside_their_method() -> None:
    labels = ["zeta", "ctnet", "ctnet_once", "ft_all_kall", "ctnet_linear_r64", "ft_all_k1", "ple_targetonly",
              "ctnet[model.net.adapter_init_std=0.001]", BASE, "ft_all_emb", "ft_all"]
    assert sorted(labels, key=method_rank) == [
        BASE, "ft_all_emb", "ft_all", "ft_all_k1", "ft_all_kall", "ple_targetonly", "ctnet_linear_r64",
        "ctnet_once", "ctnet", "ctnet[model.net.adapter_init_std=0.001]", "zeta"]
    assert METHOD_ORDER[0] == BASE


def test_the_shipped_adapter_base_width_is_the_one_labels_leave_out() -> None:
    from omegaconf import OmegaConf

    from ctl.methods import ADAPTER_BASE_WIDTH

    for name in ("ctnet", "ctnet_linear"):
        shipped = OmegaConf.load(Path(ctl.conf.__file__).parent / "model" / f"{name}.yaml")
        assert shipped.net.adapter_base_width == ADAPTER_BASE_WIDTH == 128, name


def test_the_ctnet_family_is_ctnet_its_variants_and_its_settings():
    family = ["ctnet", "ctnet_linear", "ctnet_once", "ctnet_r64_shared", "ctnet[adapter_rank=8]"]
    others = ["base", "ft_all", "ctnetwork", "minet", "base[ctnet]"]
    assert [is_ctnet_family(label) for label in family] == [True] * len(family)
    assert [is_ctnet_family(label) for label in others] == [False] * len(others)


def test_run_and_sweep_folders_carry_the_method_label():
    register_label_resolver()
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["model=ctnet", "model.refresh_source=false", "data.domain=B", "seed=3"])
    assert cfg.hydra.run.dir.endswith("-ctnet_once-B")
    cfg.hydra.job.num = 7  # set by Hydra per job of a sweep
    assert cfg.hydra.sweep.subdir == "7-ctnet_once-B-s3"
