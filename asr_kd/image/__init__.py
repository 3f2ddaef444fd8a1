"""Image distillation: the MNIST idx reader, pixel jitter and the training loops.

Used by the MNIST recipe (``recipes/mnist``) that reproduces Section 3 of
Hinton, Vinyals & Dean (2015) with the shared core in :mod:`asr_kd.distill`.
"""
