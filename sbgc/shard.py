"""Splitting the book's computations over several processes (a cluster's job array, hosts, GPUs).

N processes run the same chapters with ``SBGC_SHARD=I/N`` (``python -m sbgc.book run --shard
I/N``) against one results cache on a shared file system. Every entry the cache lacks is computed
by exactly one of them, its **owner**, and the others wait for it to appear and load it:

* a **block** of a per-image loop (an attack's or a corruption grid's block b of consecutive
  images) belongs to shard b mod N. Each loop visits its own blocks first and then waits for the
  others' (:func:`own_blocks_first`), so the N processes work on one loop's blocks at the same time;
* any other entry belongs to the shard given by its key's digest (mod N); the others wait for it.

Every process executes the same cells in the same order, so a process waiting for an entry waits
only for work its owner has reached or will reach next: no two wait on each other. At the end every
process has every entry and renders the whole chapter; the cache directory is the merge. A block's
random numbers are drawn by its position in the sample, never by who computes it, so the results
are those of one process.

Without ``SBGC_SHARD`` (or with ``0/1``) nothing changes: every missing entry is computed here.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import time
from typing import Callable, Iterator, Sequence, TypeVar

SHARD_ENV = "SBGC_SHARD"  # "I/N": this process is shard I of N
WAIT_ENV = "SBGC_SHARD_WAIT"  # seconds to wait for another shard's entry before giving up (default 2 days)
DEFAULT_WAIT_S = 2 * 24 * 3600.0

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 ≤ index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not (isinstance(self.index, int) and isinstance(self.count, int) and 0 <= self.index < self.count):
            raise ValueError(f"a shard I/N needs ints 0 <= I < N, got {self.index!r}/{self.count!r}")

    @property
    def alone(self) -> bool:
        """True when this process computes everything (N = 1)."""
        return self.count == 1

    def owner_of_block(self, block: int) -> int:
        """The shard that computes block ``block`` (0, 1, … of a loop): block mod N."""
        return int(block) % self.count

    def owner_of_key(self, digest: str) -> int:
        """The shard that computes an entry outside the block loops: its key's sha256 (hex) mod N."""
        return int(digest, 16) % self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None) -> Shard:
    """``"I/N"`` → Shard(I, N); None or "" → Shard(0, 1) (everything here)."""
    if not text:
        return Shard()
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"a shard is I/N (e.g. 0/4), got {text!r}") from None
    return Shard(i, n)


def current_shard() -> Shard:
    """This process's shard, from ``$SBGC_SHARD`` (unset: Shard(0, 1))."""
    try:
        return parse_shard(os.environ.get(SHARD_ENV))
    except ValueError as err:
        raise ValueError(f"${SHARD_ENV}: {err}") from None


def wait_seconds() -> float:
    """How long to wait for another shard's entry (``$SBGC_SHARD_WAIT``, default 2 days)."""
    text = os.environ.get(WAIT_ENV)
    try:
        value = DEFAULT_WAIT_S if text is None else float(text)
    except ValueError:
        raise ValueError(f"${WAIT_ENV} must be a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise ValueError(f"${WAIT_ENV} must be >= 0 seconds, got {text!r}")
    return value


def poll(ready: Callable[[], T | None], timeout_s: float, *, poll_s: float = 5.0,
         on_wait: Callable[[], None] | None = None) -> T | None:
    """``ready()`` until it returns something other than None (returned), at intervals doubling from
    0.1 s to ``poll_s``, for at most ``timeout_s`` (then None). ``on_wait()`` runs once, at the first
    miss (e.g. to say what is being waited for)."""
    start, interval = time.monotonic(), 0.1
    while True:
        got = ready()
        if got is not None:
            return got
        if on_wait is not None and interval == 0.1:
            on_wait()
        if time.monotonic() - start >= timeout_s:
            return None
        time.sleep(max(0.0, min(interval, timeout_s - (time.monotonic() - start))))
        interval = min(2 * interval, poll_s)


# Inside a block loop: the shard that owns the block being obtained (None: not in a block loop).
_BLOCK_OWNER: contextvars.ContextVar[int | None] = contextvars.ContextVar("sbgc_block_owner", default=None)


@contextlib.contextmanager
def obtaining_block(owner: int) -> Iterator[None]:
    """Mark the cache lookups inside the block as those of a block owned by shard ``owner``."""
    token = _BLOCK_OWNER.set(int(owner))
    try:
        yield
    finally:
        _BLOCK_OWNER.reset(token)


def owner_of_entry(shard: Shard, digest: str) -> int:
    """Who computes a missing entry with key ``digest``: the block's owner inside a block loop
    (:func:`obtaining_block`), else the key's (:meth:`Shard.owner_of_key`)."""
    owner = _BLOCK_OWNER.get()
    return shard.owner_of_key(digest) if owner is None else owner % shard.count


def own_blocks_first(n_blocks: int, obtain: Callable[[int], T], shard: Shard | None = None) -> list[T]:
    """``[obtain(0), …, obtain(n_blocks − 1)]``, obtained in the order this shard should: its own
    blocks first, then the other shards' (whose cache entries it waits for), each inside
    :func:`obtaining_block`. Alone (N = 1): in order."""
    shard = current_shard() if shard is None else shard
    order: Sequence[int] = range(n_blocks)
    if not shard.alone:
        order = sorted(order, key=lambda b: (shard.owner_of_block(b) != shard.index, b))
    got: dict[int, T] = {}
    for b in order:
        with obtaining_block(shard.owner_of_block(b)):
            got[b] = obtain(b)
    return [got[b] for b in range(n_blocks)]
