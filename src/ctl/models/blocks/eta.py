"""ETA retrieval (Chen et al. 2021): SimHash signatures as packed bits, the k events nearest in Hamming distance.

A signature holds one bit per fixed random hyperplane (seeded, a buffer so a checkpoint carries
it): whether the item embedding's projection on it is positive. Signatures are packed 32 bits to
an int32 word, kept per item in a table (:meth:`EtaRetrieval.item_codes`), and compared by XOR and
a popcount read off a 16-bit table, so a row costs a few integer operations per history event and
nothing of width D: ETA can scan tens of thousands of events where hashing each event's float
embedding (``[B, M, D]``) could not.

Cadence: the table is recomputed at every forward in training mode (every optimiser step has
moved the embedding since the last one), at the first forward after any switch of mode (the last
step came after the last training forward), and in eval mode whenever the table is another tensor
or its version counter moved (a checkpoint loaded into it). The version counter alone cannot be
trusted: fused optimisers update weights without bumping it. A frozen model in eval mode (CTNet's
source tower, a scoring model) hashes once; an exported graph carries the table as a constant. At
V x D x m multiply-adds a refresh costs less than one batch's forward at every size ctl ships.

Hashing is not differentiable and runs without gradient; the caller attends over the picked
events' embeddings with gradient.
"""

from __future__ import annotations

import torch
from torch import nn

#: bits packed into one int32 word of a signature
BITS_PER_WORD = 32
#: a word's popcount is read off a table of every 16-bit value's, twice
HALF_WORD = 16


def _popcount_table() -> torch.Tensor:
    """int32 ``[2**16]``: the number of set bits of every 16-bit value (int32: read into counts without a cast)."""
    values = torch.arange(2**HALF_WORD, dtype=torch.int64)
    counts = torch.zeros(2**HALF_WORD, dtype=torch.int64)
    for bit in range(HALF_WORD):
        counts += (values >> bit) & 1
    return counts.to(torch.int32)


class EtaRetrieval(nn.Module):
    """Keep the k real events whose SimHash signature is nearest the candidate's (ties: more recent first).

    Args:
        k: events to keep (at most M are returned when the sequence is shorter).
        n_bits: signature length m.
        dim: width D of the hashed item embeddings.
        seed: seed of the hyperplanes.

    Example::

        eta = EtaRetrieval(k=8, n_bits=16, dim=8, seed=0)
        codes = eta.item_codes(item_table.weight)                  # [V, W] int32, cached
        index, mask = eta(codes[batch["item_id"]], codes[batch["long_item"]], batch["long_mask"])  # [B, 8]
    """

    hyperplanes: torch.Tensor

    def __init__(self, k: int, n_bits: int, dim: int, seed: int) -> None:
        super().__init__()
        if k < 1 or n_bits < 1 or dim < 1:
            raise ValueError(f"ETA k ({k}), n_bits ({n_bits}) and dim ({dim}) must all be >= 1")
        self.k = k
        self.n_bits = n_bits
        self.dim = dim
        self.n_words = -(-n_bits // BITS_PER_WORD)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("hyperplanes", torch.randn(dim, n_bits, generator=generator))
        # Plain tensors, not buffers: derived values that no checkpoint carries or reuse plans; they
        # follow the device of the tensors they meet.
        self.popcount = _popcount_table()
        # bit b of a signature is bit (b % 32) of word b // 32. Packing is one float32 matmul of the
        # bits with the weight 2**(b % 16) in column b // 16 (a half word, exact below 2**24).
        bit = torch.arange(n_bits)
        self.bit_weights = torch.zeros(n_bits, 2 * self.n_words)
        self.bit_weights[bit, bit // HALF_WORD] = (2 ** (bit % HALF_WORD)).float()
        self.codes = torch.zeros(0, self.n_words, dtype=torch.int32)
        self._hashed: tuple[int, int, int] | None = None

    def pack(self, embedding: torch.Tensor) -> torch.Tensor:
        """Packed signatures: embedding [..., D] -> int32 [..., n_words] (bit 31 is the sign bit)."""
        with torch.no_grad():
            # the projections turned in place into their bits as 1.0 / 0.0: no bool copy to convert
            bits = (embedding.detach().float() @ self.hyperplanes.float()).gt_(0)  # [..., m]
            if self.bit_weights.device != bits.device:
                self.bit_weights = self.bit_weights.to(bits.device)
            halves = (bits @ self.bit_weights).to(torch.int32)  # [..., 2W], each below 2**16
            # the high half shifted into bits 16..31 wraps into int32's sign bit: the same 32 bits
            return halves[..., 0::2] | (halves[..., 1::2] << HALF_WORD)

    def item_codes(self, table: torch.Tensor) -> torch.Tensor:
        """The packed signature of every row of the item table ``table`` [V, D]: int32 [V, n_words], cached.

        See the module docstring for when it is recomputed; a graph being exported or compiled
        reads the cache as it stands.
        """
        if torch.compiler.is_exporting() or torch.compiler.is_compiling():
            return self.codes
        stamp = (id(table), table.data_ptr(), table._version)
        if self.training or stamp != self._hashed or self.codes.shape[0] != table.shape[0]:
            self.codes = self.pack(table)
            self._hashed = stamp
        return self.codes

    def train(self, mode: bool = True) -> EtaRetrieval:
        self._hashed = None  # training steps may have moved the table since the last hash
        return super().train(mode)

    def hamming(self, query: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        """Differing bits: query int32 [B, W], events int32 [B, M, W] -> int32 [B, M]."""
        differ = torch.bitwise_xor(events, query.unsqueeze(1))
        if self.popcount.device != differ.device:
            self.popcount = self.popcount.to(differ.device)
        flat = differ.view(-1)
        # >> is arithmetic on int32: the mask keeps the high half's own 16 bits
        high = self.popcount.index_select(0, (flat >> HALF_WORD).bitwise_and_(0xFFFF))
        low = self.popcount.index_select(0, flat.bitwise_and_(0xFFFF))
        counts = low.add_(high).view(differ.shape)
        return counts.squeeze(-1) if counts.shape[-1] == 1 else counts.sum(-1, dtype=torch.int32)

    def forward(
        self, candidate: torch.Tensor, events: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """candidate int32 [B, W], events int32 [B, M, W] (packed signatures), mask bool [B, M]
        -> (index [B, K], mask [B, K]), K = min(k, M)."""
        if (
            candidate.dim() != 2
            or events.dim() != 3
            or candidate.shape[-1] != self.n_words
            or events.shape[-1] != self.n_words
            or events.shape[0] != candidate.shape[0]
            or mask.shape != events.shape[:2]
        ):
            raise ValueError(
                f"EtaRetrieval: expected candidate [B, {self.n_words}], events [B, M, {self.n_words}], "
                f"mask [B, M]; got {tuple(candidate.shape)}, {tuple(events.shape)}, {tuple(mask.shape)}"
            )
        length = events.shape[1]
        with torch.no_grad():
            wide = (self.n_bits + 1) * length >= 2**31
            # the smallest key first: fewer differing bits, then more recent; invalid events after every valid one
            key = self.hamming(candidate, events).to(torch.int64 if wide else torch.int32)
            key.mul_(length).sub_(torch.arange(length, device=events.device, dtype=key.dtype))
            invalid = (self.n_bits + 1) * length
            key.masked_fill_(~mask, invalid)
            top, index = key.topk(min(self.k, length), dim=1, largest=False)
        return index, top < invalid
