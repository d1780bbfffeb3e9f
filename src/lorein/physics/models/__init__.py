"""Sequence signal models: one module and one registered class per model.

- ``vfa_megre`` (:mod:`.vfa_megre`, paper eq. 10): variable-flip-angle multi-echo spoiled GRE.
- ``t2ir_gre`` (:mod:`.t2ir_gre`, paper eq. 9 with the physical T2-preparation term
  ``exp(-tau/T2)``): T2-prepared inversion-recovery segmented spoiled GRE.
- ``megre`` (:mod:`.megre`): single-flip-angle multi-echo spoiled GRE (apparent M0, T2*, B0).

:mod:`.base` defines the interface and the maps (:data:`~.base.MAPS`), :mod:`.registry` the
names; docs/SIGNAL_MODELS.md says how to add a model.
"""
