"""Moving small host tensors to the training device without waiting for it."""
from __future__ import annotations

import torch
from torch import Tensor


def to_device(x: Tensor, device: torch.device | str) -> Tensor:
    """x on `device`, the host never waiting for the device's queued work.

    A copy from pageable host memory to a CUDA device makes the host wait until every kernel already
    queued has finished (a host sync in disguise); staged in page-locked memory it is queued behind
    them instead. The staging buffer is new (unless x is page-locked already, as the loader's
    frames are), so later changes to x cannot reach the copy. From a device to the host the copy
    is blocking, or the result could be read before it lands."""
    device = torch.device(device)
    if x.device.type == device.type and (device.index is None or x.device.index == device.index):
        return x
    if x.device.type == "cpu" and device.type == "cuda":
        return (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)
    return x.to(device)
