"""Offline data preparation: index a folder of videos into a manifest, write synthetic sets."""
