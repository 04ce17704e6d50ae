"""What a batch is: the one contract between the data side and every model.

A batch is a ``dict[str, torch.Tensor]`` of B rows:

* every schema feature name (``user_id``, ``item_id``, ``category_id``, ``seller_id``, ...):
  int64 ``[B]``; 0 where the row's domain lacks the feature;
* ``label``: float32 ``[B]`` (0./1.); ``domain``: int64 ``[B]`` (index into ``Schema.domains``);
  ``period``: int64 ``[B]``; ``row``: int64 ``[B]`` (row index in the dataset, for predictions);
* short sequence, the user's last L events *in the row's own domain* visible at impression time:
  ``short_item``, ``short_category``: int64 ``[B, L]``; ``short_mask``: bool ``[B, L]``;
* long sequence, the user's last M events *in all domains*:
  ``long_item``, ``long_category``, ``long_domain``: int64 ``[B, M]``; ``long_mask``: bool ``[B, M]``;
* optionally (joint models ask for them), the user's last L events in one named domain:
  ``seq_<domain>_item``, ``seq_<domain>_category``: int64 ``[B, L]``; ``seq_<domain>_mask``: bool.

Sequences are right-aligned: the most recent event sits at position ``L-1``; padding is id 0
with mask False, at the front. Models never see events after the impression (``hist_end``).
"""

from __future__ import annotations

Batch = dict  # dict[str, torch.Tensor]; an alias so signatures say what they take

SEQUENCE_FIELDS: tuple[str, ...] = ("item", "category")


def domain_sequence_prefix(domain: str) -> str:
    """Key prefix of the per-domain sequence of ``domain`` (e.g. ``seq_A``)."""
    return f"seq_{domain}"
