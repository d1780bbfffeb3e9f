"""Numerical building blocks shared by the methods: conjugate gradient, the optimisation loop, SENSE
images and voxel-wise fitting."""
