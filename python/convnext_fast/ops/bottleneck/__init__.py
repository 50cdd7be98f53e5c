"""GELU inverted bottleneck + layer scale + residual; see ``convnext_fast.ops``."""
