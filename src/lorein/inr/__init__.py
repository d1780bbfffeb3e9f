"""Implicit neural representations: hash encoding, MLPs and fields on the voxel grid."""
