"""User tasks built on the samplers (generate, image-to-video, interpolate, extend, complete) and their outputs."""
from flowvid.pipelines.outputs import (contact_sheet, write_clip, write_contact_sheet, write_gif,
                                       write_record)
from flowvid.pipelines.tasks import (ClipRecord, Samples, TaskRecord, Video, complete, exact_grid, extend, generate,
                                     grid_for,
                                     image_to_video, interpolate, model_denoiser, read_frames)

__all__ = [
    "ClipRecord", "Samples", "TaskRecord", "Video", "complete", "contact_sheet", "exact_grid", "extend", "generate", "grid_for",
    "image_to_video", "interpolate", "model_denoiser", "read_frames", "write_clip", "write_contact_sheet",
    "write_gif", "write_record",
]
