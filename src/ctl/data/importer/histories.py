"""Behaviour histories of imported data and each row's ``hist_end``.

Two sources:

* events: chosen records become the users' behaviour events, time-ordered across all domains; a
  row sees the events of its user strictly before its time (:func:`visible_counts`);
* an explicit sequence column: each record lists the items its user acted on before it. The
  record's list becomes a block of events one time unit before the record (identical blocks of a
  user at one time are kept once), and the row sees the history up to the end of its own block,
  so the last events of its long sequence are exactly its list. Rows without a list see the
  blocks strictly before their time.
"""

from __future__ import annotations

import numpy as np


def sort_events(user: np.ndarray, item: np.ndarray, category: np.ndarray, domain: np.ndarray,
                ts: np.ndarray) -> dict[str, np.ndarray]:
    """``history.parquet`` columns sorted by ``(user_id, ts)``, ties in the given order."""
    order = np.lexsort((ts, user))
    return {"user_id": user[order], "item_id": item[order], "category_id": category[order],
            "domain": domain[order], "ts": ts[order]}


def visible_counts(history: dict[str, np.ndarray], user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """int64 ``[n]``: how many of each row's user's events happened strictly before the row's ``ts``."""
    times = np.sort(np.concatenate([history["ts"], ts]))
    times = times[np.concatenate([[True], times[1:] != times[:-1]])]  # sort-based unique: far faster here
    stride = np.int64(times.shape[0] + 1)
    event_key = history["user_id"] * stride + np.searchsorted(times, history["ts"])
    row_key = user * stride + np.searchsorted(times, ts)
    return np.searchsorted(event_key, row_key, side="left") - np.searchsorted(event_key, user * stride, side="left")


def sequence_history(
    user: np.ndarray,
    ts: np.ndarray,
    domain: np.ndarray,
    counts: np.ndarray,
    key: np.ndarray,
    items: np.ndarray,
    item_category: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """History from explicit per-record sequences, and each record's ``hist_end`` (-1 without a list).

    Args:
        user, ts, domain: int64 ``[n]`` of every record.
        counts: int ``[n]``, items in each record's list; ``items`` holds the lists back to back.
        key: uint64 ``[n]``, a hash of each record's raw list (identical lists share it).
        item_category: int64 ``[n_items]``, the category id of each item id (0 when unknown).
    """
    counts = counts.astype(np.int64)
    list_start = np.cumsum(counts) - counts
    has = np.flatnonzero(counts > 0)
    # one block per distinct (user, ts, list); representatives in (user, ts, file order)
    by_content = has[np.lexsort((has, key[has], ts[has], user[has]))]
    new_block = np.ones(by_content.shape[0], dtype=bool)
    new_block[1:] = ((user[by_content[1:]] != user[by_content[:-1]]) | (ts[by_content[1:]] != ts[by_content[:-1]])
                     | (key[by_content[1:]] != key[by_content[:-1]]))
    block_of = np.cumsum(new_block) - 1
    heads = by_content[new_block]
    head_order = np.lexsort((heads, ts[heads], user[heads]))
    blocks = heads[head_order]
    block_len = counts[blocks]
    owner = np.repeat(blocks, block_len)
    within = np.arange(owner.shape[0], dtype=np.int64) - np.repeat(np.cumsum(block_len) - block_len, block_len)
    event_item = items[list_start[owner] + within]
    history = {"user_id": user[owner], "item_id": event_item, "category_id": item_category[event_item],
               "domain": domain[owner], "ts": ts[owner] - 1}
    # where each block ends, as a count of its user's events
    block_end = np.cumsum(block_len)
    user_first = np.searchsorted(history["user_id"], user[blocks], side="left")
    end_of_head = np.empty(heads.shape[0], dtype=np.int64)
    end_of_head[head_order] = block_end - user_first
    hist_end = np.full(user.shape[0], -1, dtype=np.int64)
    hist_end[by_content] = end_of_head[block_of]
    return history, hist_end
