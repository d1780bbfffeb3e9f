"""The methods LoREIN is compared against (anchors.md): SUMMIT, LRT, the voxel fit,
Zero-DeepSub and Joint-MAPLE, with the zero-shot training they share."""
