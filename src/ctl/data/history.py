"""Every user's time-ordered behaviour events in CSR form, and the vectorised gather of sequences.

The events of user ``u`` are positions ``user_offsets[u] .. user_offsets[u+1]-1`` of the value
columns (``item``, ``category``, ``domain``, ``ts``), sorted by time. A row sees only its user's
first ``hist_end`` events; a sequence is the last ``L`` of those, optionally restricted to one
domain. Sequences are gathered per batch, never stored per row.

Per-domain lookups use two precomputed arrays, so a batch needs only direct indexing:
``domain_cum[d, p]``, the number of domain-``d`` events among global positions ``< p``, and
``domain_order``, every event position sorted by ``(domain, position)``. The domain-``d`` events
among user ``u``'s first ``k`` events are then the contiguous run
``domain_start[d] + domain_cum[d, off_u] .. domain_start[d] + domain_cum[d, off_u + k]`` of
``domain_order``, and the last ``L`` of them a fixed-width window ending at the second bound.
``domain_cum`` costs ``4 * n_domains * n_events`` bytes (int32); a binary search instead would
save that memory but made these lookups about ten times slower.

SIM's search (:meth:`UserHistory.gather_category_last`) reads a per-category index instead, SIM's
"user behaviour tree" flattened: ``category_keys``, every event's ``category * (n_events + 1) +
position``, sorted. A user's events of one category are then one contiguous run of it, in time
order, and the visible ones a prefix of that run; two binary searches find it, so the k most recent
visible events of a category cost O(k + log n) per row whatever the history's length. The index
costs 8 bytes an event and is built on first use.
"""

from __future__ import annotations

import numpy as np
import torch

#: Events returned by :meth:`UserHistory.gather_last`: item, category, domain ``[B, L]`` and mask.
GatheredSequence = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _take(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``source[index]`` for a 1-d source; index_select is about 3x faster than advanced indexing."""
    return source.index_select(0, index.reshape(-1)).view(index.shape)


def _as_long_tensor(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.to(torch.int64)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64))


def _with_trailing_zero(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    values = _as_long_tensor(values)
    if values.ndim != 1:
        raise ValueError(f"UserHistory: value columns must be 1-d, got shape {tuple(values.shape)}")
    return torch.cat([values, torch.zeros(1, dtype=torch.int64)])


class UserHistory:
    """Behaviour events of ``n_users`` users (CSR), gathered into right-aligned sequences.

    Args:
        user_offsets: int ``[n_users + 1]``, non-decreasing, ``user_offsets[0] == 0`` and
            ``user_offsets[-1] == n_events``.
        item, category, domain, ts: int ``[n_events]``, each user's events sorted by ``ts``.
        n_domains: number of domains; every ``domain`` value lies in ``[0, n_domains)``.

    Example::

        hist = UserHistory.from_columns(history_columns, n_users=schema.feature("user_id").vocab)
        item, category, domain, mask = hist.gather_last(users, visible, length=10, domain=None)
    """

    def __init__(
        self,
        user_offsets: np.ndarray | torch.Tensor,
        item: np.ndarray | torch.Tensor,
        category: np.ndarray | torch.Tensor,
        domain: np.ndarray | torch.Tensor,
        ts: np.ndarray | torch.Tensor,
        n_domains: int,
    ) -> None:
        self.user_offsets = _as_long_tensor(user_offsets)
        # Value columns carry one trailing 0: padded slots index position n_events and read "absent".
        self._item = _with_trailing_zero(item)
        self._category = _with_trailing_zero(category)
        self._domain = _with_trailing_zero(domain)
        self.item, self.category, self.domain = self._item[:-1], self._category[:-1], self._domain[:-1]
        self.ts = _as_long_tensor(ts)
        self.n_domains = int(n_domains)
        n_events = self.item.shape[0]
        for name, column in (("category", self.category), ("domain", self.domain), ("ts", self.ts)):
            if column.shape != (n_events,):
                raise ValueError(
                    f"UserHistory: {name} has shape {tuple(column.shape)}, item has ({n_events},)"
                )
        if self.user_offsets.ndim != 1 or self.user_offsets.shape[0] < 1:
            raise ValueError("UserHistory: user_offsets must be 1-d with at least one entry")
        if int(self.user_offsets[0]) != 0 or int(self.user_offsets[-1]) != n_events:
            raise ValueError(
                f"UserHistory: user_offsets must run from 0 to n_events={n_events}, "
                f"got {int(self.user_offsets[0])} .. {int(self.user_offsets[-1])}"
            )
        if bool((self.user_offsets[1:] < self.user_offsets[:-1]).any()):
            raise ValueError("UserHistory: user_offsets must be non-decreasing")
        if self.n_domains < 1:
            raise ValueError(f"UserHistory: n_domains must be >= 1, got {self.n_domains}")
        if n_events and (int(self.domain.min()) < 0 or int(self.domain.max()) >= self.n_domains):
            raise ValueError(f"UserHistory: domain values must lie in [0, {self.n_domains})")
        # Stable sort keeps positions ascending inside each domain, as the window logic needs.
        self.domain_order = torch.sort(self.domain, stable=True).indices
        per_domain = torch.bincount(self.domain, minlength=self.n_domains)
        self.domain_start = torch.cumsum(per_domain, 0) - per_domain
        count_dtype = torch.int32 if n_events < 2**31 else torch.int64
        self.domain_cum = torch.zeros((self.n_domains, n_events + 1), dtype=count_dtype)
        for d in range(self.n_domains):
            torch.cumsum(self.domain == d, 0, out=self.domain_cum[d, 1:])
        self._category_keys: torch.Tensor | None = None
        self._front_padded: dict[tuple[str, int], torch.Tensor] = {}

    @classmethod
    def from_columns(
        cls, history: dict[str, np.ndarray], n_users: int, n_domains: int | None = None
    ) -> UserHistory:
        """Build from ``history.parquet`` columns sorted by ``(user_id, ts)``; user ids lie in ``[0, n_users)``.

        ``n_domains`` defaults to one more than the largest domain index present (at least 1).
        """
        user_id = np.asarray(history["user_id"], dtype=np.int64)
        if user_id.size and (user_id.min() < 0 or user_id.max() >= n_users):
            raise ValueError(f"UserHistory: user ids must lie in [0, {n_users})")
        if np.any(user_id[1:] < user_id[:-1]):
            raise ValueError("UserHistory: history must be sorted by user_id")
        counts = np.bincount(user_id, minlength=n_users)
        offsets = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        domain = np.asarray(history["domain"])
        if n_domains is None:
            n_domains = int(domain.max()) + 1 if domain.size else 1
        return cls(offsets, history["item_id"], history["category_id"], domain, history["ts"], n_domains)

    @property
    def n_users(self) -> int:
        return self.user_offsets.shape[0] - 1

    @property
    def n_events(self) -> int:
        return self.item.shape[0]

    @property
    def category_keys(self) -> torch.Tensor:
        """int64 ``[n_events]``: ``category * (n_events + 1) + position`` of every event, sorted (see the module docstring)."""
        if self._category_keys is None:
            stride = self.n_events + 1
            if self.n_events and int(self.category.max()) >= (2**63 - 1) // stride:
                raise ValueError("UserHistory: category ids too large for the category index")
            keys = self.category * stride + torch.arange(self.n_events, dtype=torch.int64)
            self._category_keys = torch.sort(keys).values
        return self._category_keys

    def counts(self) -> torch.Tensor:
        """Events per user, int64 ``[n_users]``."""
        return self.user_offsets[1:] - self.user_offsets[:-1]

    def gather_last(
        self,
        users: np.ndarray | torch.Tensor,
        visible: np.ndarray | torch.Tensor,
        length: int,
        domain: int | np.ndarray | torch.Tensor | None,
    ) -> GatheredSequence:
        """The last ``length`` events among each user's first ``visible`` events.

        Args:
            users: int ``[B]`` user ids.
            visible: int ``[B]``, how many of the user's events are visible (``0 .. count``).
            length: L, the sequence length.
            domain: ``None`` for events of every domain; an int to keep one domain's events; or an
                int ``[B]`` tensor giving each row's own domain.

        Returns:
            ``(item, category, domain, mask)``: int64 ``[B, L]`` ×3 and bool ``[B, L]``, right-aligned
            (most recent event at ``L-1``), padded at the front with 0 / False.
        """
        index, mask = self.window(users, visible, length, domain)
        return self.values("item", index), self.values("category", index), self.values("domain", index), mask

    def last_window(
        self, users: np.ndarray | torch.Tensor, visible: np.ndarray | torch.Tensor, length: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`gather_last` over every domain (``domain=None``) without the domains: item, category, mask.

        A row's last ``length`` events of every domain are one contiguous run of a value column:
        rows of a strided view of the column (front-padded with ``length`` zeros, kept per length)
        are copied whole, and on rows that see fewer than ``length`` events the run's head, which
        belongs to the previous user, is zeroed. At lifelong lengths this is several times faster
        than gathering element by element.
        """
        users_t, visible_t = _as_long_tensor(users), _as_long_tensor(visible)
        end = _take(self.user_offsets, users_t) + visible_t
        mask = torch.arange(length, dtype=torch.int64) >= (length - visible_t).unsqueeze(1)
        short = torch.nonzero(visible_t < length).squeeze(1)
        columns = []
        for field, column in (("item", self.item), ("category", self.category)):
            padded = self._front_padded.get((field, length))
            if padded is None:
                padded = torch.cat([torch.zeros(length, dtype=column.dtype), column])
                self._front_padded[field, length] = padded
            # row r: the events at end_r - length .. end_r - 1
            values = padded.as_strided((self.n_events + 1, length), (1, 1)).index_select(0, end)
            if short.numel():
                values[short] = values.index_select(0, short) * mask.index_select(0, short)
            columns.append(values)
        return columns[0], columns[1], mask

    def values(self, field: str, index: torch.Tensor) -> torch.Tensor:
        """The ``field`` (item, category or domain) of the events at positions ``index`` (n_events: absent, 0)."""
        return _take({"item": self._item, "category": self._category, "domain": self._domain}[field], index)

    def window(
        self,
        users: np.ndarray | torch.Tensor,
        visible: np.ndarray | torch.Tensor,
        length: int,
        domain: int | np.ndarray | torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions and mask of :meth:`gather_last`'s events: int64 ``[B, L]`` (``n_events`` where padded), bool."""
        users_t = _as_long_tensor(users)
        visible_t = _as_long_tensor(visible)
        if users_t.ndim != 1 or visible_t.shape != users_t.shape:
            raise ValueError(
                f"gather_last: users and visible must both be [B], got {tuple(users_t.shape)} "
                f"and {tuple(visible_t.shape)}"
            )
        if length < 1:
            raise ValueError(f"gather_last: length must be >= 1, got {length}")
        start = _take(self.user_offsets, users_t)
        end = start + visible_t
        window = torch.arange(1 - length, 1, dtype=torch.int64)  # offsets back from the last visible event
        if domain is None:
            index = (end - 1).unsqueeze(1) + window
            mask = index >= start.unsqueeze(1)
        else:
            domain_t = torch.as_tensor(domain, dtype=torch.int64)
            if domain_t.ndim == 0:
                cum = self.domain_cum[int(domain_t)]
                first = self.domain_start[int(domain_t)]
            else:
                if domain_t.shape != users_t.shape:
                    raise ValueError(
                        f"gather_last: per-row domain has shape {tuple(domain_t.shape)}, users {tuple(users_t.shape)}"
                    )
                cum = self.domain_cum.view(-1)
                row_base = domain_t * (self.n_events + 1)
                start, end = start + row_base, end + row_base
                first = _take(self.domain_start, domain_t)
            lo = _take(cum, start).to(torch.int64) + first
            hi = _take(cum, end).to(torch.int64) + first
            slot = (hi - 1).unsqueeze(1) + window
            mask = slot >= lo.unsqueeze(1)
            index = _take(self.domain_order, slot.clamp(min=0)) if self.n_events else slot
        return index.masked_fill_(~mask, self.n_events), mask

    def gather_category_last(
        self,
        users: np.ndarray | torch.Tensor,
        visible: np.ndarray | torch.Tensor,
        category: np.ndarray | torch.Tensor,
        length: int,
    ) -> GatheredSequence:
        """SIM (hard)'s search: the last ``length`` events of category ``category`` among each user's first ``visible``.

        Args:
            users, visible: int ``[B]``, as for :meth:`gather_last`.
            category: int ``[B]``, each row's candidate category.
            length: k, the events kept.

        Returns:
            ``(item, category, domain, mask)`` as :meth:`gather_last` returns them: right-aligned,
            the most recent matching event at ``length-1``.
        """
        users_t, visible_t = _as_long_tensor(users), _as_long_tensor(visible)
        category_t = _as_long_tensor(category)
        if users_t.ndim != 1 or visible_t.shape != users_t.shape or category_t.shape != users_t.shape:
            raise ValueError(
                f"gather_category_last: users, visible and category must all be [B], got {tuple(users_t.shape)}, "
                f"{tuple(visible_t.shape)} and {tuple(category_t.shape)}"
            )
        if length < 1:
            raise ValueError(f"gather_category_last: length must be >= 1, got {length}")
        keys = self.category_keys
        start = _take(self.user_offsets, users_t)
        base = category_t * (self.n_events + 1)
        # the run of (user, category) events is keys in [base + start, base + start + count); the
        # visible ones are those below base + start + visible
        lo = torch.searchsorted(keys, base + start)
        hi = torch.searchsorted(keys, base + start + visible_t)
        slot = (hi - 1).unsqueeze(1) + torch.arange(1 - length, 1, dtype=torch.int64)
        mask = slot >= lo.unsqueeze(1)
        if self.n_events:
            position = _take(keys, slot.clamp(min=0)) - base.unsqueeze(1)
        else:
            position = slot
        index = torch.where(mask, position, self.n_events)
        return _take(self._item, index), _take(self._category, index), _take(self._domain, index), mask
