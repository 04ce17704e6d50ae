"""The training noise of the default CTNet against base, as the A/A calibration measured it.

A run's test-slice interval (``make demo``'s last lines) says whether this training of CTNet beats
this training of base; this says how far retraining moves that comparison. Measured on the default
world (data=synthetic) with ``ctl sweep experiment=aa hydra/launcher=parallel hydra.launcher.n_jobs=2``
(``OMP_NUM_THREADS=1``; seeds 0-2 x transfer seeds 0-3, 12 trainings of the default CTNet per
target): the sample standard deviation, over those trainings, of the test ΔAUC and ΔGAUC of CTNet
against the base of its seed. docs/eval.md, "A/A calibration", has the false-positive rates.
"""

from __future__ import annotations

#: dataset fingerprint -> target -> the spread of ctnet − base over the A/A's trainings
MEASURED: dict[str, dict[str, dict[str, float]]] = {
    # the default world (data=synthetic), 2026-12-07
    "c41b2f215c88334c": {"B": {"auc": 0.0044, "gauc": 0.0039, "trainings": 12},
                         "C": {"auc": 0.0138, "gauc": 0.0126, "trainings": 12}},
}
#: the method the spread was measured for
METHOD = "ctnet"


def noise_text(method: str, dataset: str, target: str) -> str:
    """What a one-seed test-slice interval covers, and the committed training noise of this comparison."""
    head = f"this interval covers the test slice only (this training of {method} against this training of base)"
    spread = MEASURED.get(dataset, {}).get(target)
    if spread is None or method != METHOD:
        return (f"{head}; the training noise of {method} − base on this dataset was not measured "
                "(ctl sweep experiment=aa, ctl eval --table aa)")
    return (f"{head}; retrained, {method} − base moves by sd {spread['auc']:.4f} AUC / {spread['gauc']:.4f} GAUC on "
            f"{target} (A/A calibration of this world, {int(spread['trainings'])} trainings: docs/eval.md)")
