"""What a batch is: the one contract between the data side and every model.

A batch is a ``dict[str, torch.Tensor]`` of B rows:

* every schema feature name (``user_id``, ``item_id``, ``category_id``, ``seller_id``, ...):
  int64 ``[B]``; 0 where the row's domain lacks the feature;
* ``label``: float32 ``[B]`` (0./1.); ``domain``: int64 ``[B]`` (index into ``Schema.domains``);
  ``period``: int64 ``[B]``; ``row``: int64 ``[B]`` (row index in the dataset, for predictions);
* short sequence, the user's last L events *in the row's own domain* visible at impression time:
  ``short_item``, ``short_category``: int64 ``[B, L]``; ``short_mask``: bool ``[B, L]``;
* long sequence, the user's last M = ``long_len`` events *in all domains* of the lifelong history
  (ETA's scan): ``long_item``, ``long_category``: int64 ``[B, M]``; ``long_mask``: bool ``[B, M]``;
* SIM's search, the user's last K = ``sim_len`` events *of the candidate's category* in the whole
  visible lifelong history, found through the per-category index
  (:meth:`ctl.data.history.UserHistory.gather_category_last`): ``sim_item``, ``sim_category``:
  int64 ``[B, K]``; ``sim_mask``: bool ``[B, K]``;
* optionally (joint models ask for them), the user's last L events in one named domain:
  ``seq_<domain>_item``, ``seq_<domain>_category``: int64 ``[B, L]``; ``seq_<domain>_mask``: bool.

Sequences are right-aligned: the most recent event sits at position ``L-1``; padding is id 0
with mask False, at the front. Models never see events after the impression (``hist_end``).
"""

from __future__ import annotations

import torch

from ctl.data.schema import Schema

Batch = dict  # dict[str, torch.Tensor]; an alias so signatures say what they take

SEQUENCE_FIELDS: tuple[str, ...] = ("item", "category")


def domain_sequence_prefix(domain: str) -> str:
    """Key prefix of the per-domain sequence of ``domain`` (e.g. ``seq_A``)."""
    return f"seq_{domain}"


class DomainView:
    """A batch as a model trained on ``domain`` reads it: the features that domain lacks are absent (id 0).

    A model only ever saw id 0 for a feature its domain's rows do not carry: its embedding row 0
    is zeros and its BatchNorm statistics were gathered with it. On another domain's rows such a
    feature holds real ids whose embedding rows the model never trained, so a model that scores
    rows of another domain (CTNet's source tower, the source model on the target slice) reads
    them through this view. The absent features are resolved once, at construction.

    Args:
        schema: the dataset's features.
        domain: the domain whose model reads the batch.

    Example::

        source_view = DomainView(schema, schema.source)
        logits = source_model(source_view(batch))  # target-only features are 0 for it
    """

    def __init__(self, schema: Schema, domain: str) -> None:
        schema.domain_index(domain)
        self.domain = domain
        #: features whose ``domains`` lack ``domain``, in schema order
        self.absent: tuple[str, ...] = tuple(f.name for f in schema.features if domain not in f.domains)

    def __call__(self, batch: Batch) -> Batch:
        """A shallow copy of ``batch`` with every absent feature set to 0; ``batch`` itself when none is."""
        if not self.absent:
            return batch
        view = dict(batch)
        for name in self.absent:
            if name in view:
                view[name] = torch.zeros_like(view[name])
        return view
