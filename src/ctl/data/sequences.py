"""A batch's behaviour sequences, gathered from the users' histories: one definition for training and serving.

Every path that builds batches (:class:`ctl.data.batcher.BatchAssembler` for training and
evaluation, :mod:`ctl.serve.requests` for scoring raw requests) calls :func:`gather_sequences`, so
a model reads the same events whichever path fed it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ctl.data.batch import domain_sequence_prefix
from ctl.data.history import UserHistory
from ctl.data.schema import Schema


def gather_sequences(
    history: UserHistory,
    schema: Schema,
    users: torch.Tensor,
    visible: torch.Tensor,
    row_domain: torch.Tensor,
    candidate_category: torch.Tensor,
    sequence_domains: Mapping[str, int],
) -> dict[str, torch.Tensor]:
    """The sequence keys of a batch (see :mod:`ctl.data.batch`) for rows of ``users`` that see ``visible`` events.

    Args:
        history: the users' behaviour events.
        schema: the sequence lengths (``short_len``, ``long_len``, ``sim_len``).
        users, visible, row_domain, candidate_category: int64 ``[B]``.
        sequence_domains: domain name -> index of every per-domain sequence the batch carries.
    """
    out: dict[str, torch.Tensor] = {}
    item, category, _, mask = history.gather_last(users, visible, schema.short_len, row_domain)
    out.update(short_item=item, short_category=category, short_mask=mask)
    # the long window's events' domains are left out: no model reads them, and at lifelong lengths
    # every gathered column costs as much as the rest of a small model's step
    item, category, mask = history.last_window(users, visible, schema.long_len)
    out.update(long_item=item, long_category=category, long_mask=mask)
    item, category, _, mask = history.gather_category_last(users, visible, candidate_category, schema.sim_len)
    out.update(sim_item=item, sim_category=category, sim_mask=mask)
    for name, index in sequence_domains.items():
        item, category, _, mask = history.gather_last(users, visible, schema.short_len, index)
        prefix = domain_sequence_prefix(name)
        out.update({f"{prefix}_item": item, f"{prefix}_category": category, f"{prefix}_mask": mask})
    return out
