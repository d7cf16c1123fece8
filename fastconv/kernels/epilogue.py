"""The activations a plan's kernels apply in their epilogue, numbered once for every backend.

``y`` is the accumulator plus bias (and a residual, when one is added before the activation);
``lo``, ``hi``, ``alpha`` and ``beta`` are the activation's constants.
"""

ACTIVATIONS = {
    "none": 0,         # y
    "clamp": 1,        # min(max(y, lo), hi): ReLU (0, inf), ReLU6 (0, 6), Hardtanh
    "leaky": 2,        # y if y >= 0 else alpha * y
    "hardsigmoid": 3,  # min(max(alpha * y + beta, 0), 1)
    "hardswish": 4,    # y * min(max(y / 6 + 1 / 2, 0), 1)
    "sigmoid": 5,      # 1 / (1 + exp(-y))
}
