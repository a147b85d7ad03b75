"""A preallocated key/value cache, updated in place.

Per layer one key and one value tensor shaped `[slots, kv_heads, max_len, head_dim]`,
allocated once when the engine starts. A step writes only the new tokens' rows (an
`index_put_` at `(slot, :, position)`), and attention reads each sequence's slot through a
view up to its own length — the cache is never copied or gathered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KVShape:
    num_layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype = torch.float32

    def bytes_per_token(self) -> int:
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.num_layers * self.kv_heads * self.head_dim * itemsize

    def slots_for(self, memory_bytes: int, max_len: int) -> int:
        """How many slots of `max_len` positions fit `memory_bytes`."""
        return memory_bytes // (self.bytes_per_token() * max_len)


class KVCache:
    def __init__(self, shape: KVShape, num_slots: int, max_len: int) -> None:
        self.shape = shape
        self.num_slots = num_slots
        self.max_len = max_len
        dims = (num_slots, shape.kv_heads, max_len, shape.head_dim)
        self.keys = [torch.zeros(dims, dtype=shape.dtype) for _ in range(shape.num_layers)]
        self.values = [torch.zeros(dims, dtype=shape.dtype) for _ in range(shape.num_layers)]

    @property
    def nbytes(self) -> int:
        return self.shape.bytes_per_token() * self.num_slots * self.max_len

    def write(
        self,
        layer: int,
        slots: torch.Tensor,
        positions: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> None:
        """Store rows in place. `slots`, `positions`: [N]; `keys`, `values`: [N, heads, dim]."""
        self.keys[layer][slots, :, positions] = keys  # index_put_: no copy of the cache
        self.values[layer][slots, :, positions] = values

    def view(self, layer: int, slot: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of one slot, positions `0..length-1`: views [1, heads, length, dim]
        into the cache (no copy)."""
        return (
            self.keys[layer][slot : slot + 1, :, :length],
            self.values[layer][slot : slot + 1, :, :length],
        )
