"""The activations a plan's kernels apply in their epilogue, numbered once for every backend.

``y`` is the accumulator plus bias (and a residual, when one is added before the activation);
``lo``, ``hi``, ``alpha`` and ``beta`` are the activation's constants.
"""

NONE = 0          # y
CLAMP = 1         # min(max(y, lo), hi): ReLU (0, inf), ReLU6 (0, 6), Hardtanh
LEAKY = 2         # y if y >= 0 else alpha * y
HARDSIGMOID = 3   # min(max(alpha * y + beta, 0), 1)
HARDSWISH = 4     # y * min(max(y / 6 + 1 / 2, 0), 1)
SIGMOID = 5       # 1 / (1 + exp(-y))
SILU = 6          # y / (1 + exp(-y)): y * sigmoid(y), the swish of EfficientNet and YOLO
TANH = 7          # tanh(y)
MISH = 8          # y * tanh(log(1 + exp(y)))
GELU = 9          # y * (1 + erf(y / sqrt(2))) / 2
GELU_TANH = 10    # y * (1 + tanh(sqrt(2 / pi) * (y + 0.044715 y^3))) / 2: GELU's tanh form
EXP = 11          # exp(y): ONNX's Exp, and the softmax's numerators

#: The kinds by name, as the graph's activations spell them. The C kernels' enum
#: (``_plan_kernels.h``'s ``FC_ACT_*``) has the same numbers; a test holds them together.
ACTIVATIONS = {"none": NONE, "clamp": CLAMP, "leaky": LEAKY, "hardsigmoid": HARDSIGMOID,
               "hardswish": HARDSWISH, "sigmoid": SIGMOID, "silu": SILU, "tanh": TANH,
               "mish": MISH, "gelu": GELU, "gelu_tanh": GELU_TANH, "exp": EXP}

# The operations of a plan's element-wise step of two operands (``nhwc.layout.binary``):
# ``a op b``, or ``b op a`` for the reversed ones. The C kernels' ``FC_BINARY_*`` have the
# same numbers; a test holds them together.
ADD = 0           # a + b
MUL = 1           # a * b
SUB = 2           # a - b
DIV = 3           # a / b
SUB_FROM = 4      # b - a
DIV_INTO = 5      # b / a
PRELU = 6         # a where a >= 0, else a * b: ONNX's PRelu, b its slope

#: The operations by name, as the graph's element-wise nodes spell them.
BINARY_OPS = {"add": ADD, "mul": MUL, "sub": SUB, "div": DIV, "sub_from": SUB_FROM,
              "div_into": DIV_INTO, "prelu": PRELU}
