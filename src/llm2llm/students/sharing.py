"""How the processes of one run share a student's work (the roles are distributed.py's; the student is hf.py):
each process's part of every training batch, its part of the prediction batches, and the answers put back in order.

Nothing here is a training engine: gradients are averaged by DDP (or sharded by FSDP) as accelerate prepared them,
and answers travel with torch.distributed's own object collectives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator


def place() -> tuple[int, int]:
    """(this process's rank, processes) in torch.distributed's default group; (0, 1) where none is set up."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


@dataclass
class Share:
    tokens: float  # the whole batch's target tokens over the number of processes: what this share's summed loss is divided by
    stand_in: bool  # this process has no example of the batch and computes one with zero weight


def training_shares(batches: Iterable[list[int]], targets: list[int], collate: Callable[[list[int]], dict[str, Any]],
                    rank: int, processes: int, device: Any) -> Iterator[tuple[dict[str, Any], Share]]:
    """This process's share of each batch: every `processes`-th example of it (a batch is sorted by length, so the
    shares cost about the same).

    Each share's loss is its summed token losses over the whole batch's target tokens per process. DDP averages the
    processes' gradients, so the step follows the gradient of the whole batch's mean token loss, exactly the loss of one
    process on the same batch, however unevenly the target tokens fall between the shares. DDP needs every process in
    every step: a process left without an example (a small last batch) computes a stand-in, weighted zero."""
    for batch in batches:
        mine = batch[rank::processes]
        collated = collate(mine or batch[:1])
        yield {key: value.to(device) for key, value in collated.items()}, Share(sum(targets[i] for i in batch) / processes, not mine)


def gathered(values: list[Any], filled: list[int]) -> list[Any]:
    """`values` with every process's entries: each process filled the positions in its `filled`; all get them all."""
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, [(i, values[i]) for i in filled])
    for part in parts:
        for i, value in part:
            values[i] = value
    return values
