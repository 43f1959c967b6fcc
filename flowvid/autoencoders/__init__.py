"""Video autoencoders: flowvid's own (per-frame latents, a multi-scale decoder with causal temporal
layers, chunked decoding in bounded memory)."""
from flowvid.autoencoders.model import SCALES, Encoded, VideoAutoencoder

__all__ = ["SCALES", "Encoded", "VideoAutoencoder"]
