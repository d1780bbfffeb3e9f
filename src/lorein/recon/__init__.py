"""Reconstruction methods: LoREIN and the methods it is compared with."""
