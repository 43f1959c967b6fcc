"""Networks: (frames, per-frame t, positions, flags, cond) -> (velocity, rate). No loss, no schedule."""
from flowvid.models.attention import BACKENDS, PackedLayout, attend, check_backend
from flowvid.models.dit import ModelOutput, SpatioTemporalDiT
from flowvid.models.flops import ModelInfo, count_parameters, forward_flops, model_info

__all__ = ["BACKENDS", "ModelInfo", "ModelOutput", "PackedLayout", "SpatioTemporalDiT", "attend", "check_backend",
           "count_parameters", "forward_flops", "model_info"]
