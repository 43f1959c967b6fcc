"""Runtime data: video readers, datasets (folder/manifest, synthetic), packing collate, data module."""
