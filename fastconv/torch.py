"""PyTorch adapter: fastconv's kernels inside autograd (CPU tensors, float32/float64).

>>> import torch, fastconv.torch as fct                                   # doctest: +SKIP
>>> layer = fct.Conv2d(16, 32, 3, padding=1)       # same constructor as torch.nn.Conv2d
>>> y = layer(torch.randn(8, 16, 28, 28)); y.sum().backward()
>>> model = fct.Planned(module)   # any module's whole forward and backward in fastconv

Importable only where torch is installed. Tensors are shared with NumPy without copying
(``Tensor.numpy()`` / ``torch.from_numpy``), so the adapter costs a few microseconds per call.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import api

__all__ = ["Conv2dFunction", "conv2d", "Conv2d", "Planned"]


def _as_numpy(tensor, name):
    if tensor.device.type != "cpu":
        raise ValueError(f"fastconv.torch runs on CPU tensors, but {name} is on {tensor.device}")
    return tensor.detach().numpy()


class Conv2dFunction(torch.autograd.Function):
    """``torch.autograd.Function`` running :func:`fastconv.conv2d` forward and
    :func:`fastconv.conv2d_backward` backward (only the gradients autograd asks for)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, algorithm):
        out = api.conv2d(_as_numpy(x, "input"), _as_numpy(weight, "weight"),
                         None if bias is None else _as_numpy(bias, "bias"), stride, padding,
                         dilation, groups, algorithm=algorithm)
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation, groups)
        ctx.algorithm = algorithm
        ctx.has_bias = bias is not None
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        wanted = ctx.needs_input_grad
        needs = [name for name, flag in zip(("input", "weight", "bias"), wanted[:3]) if flag]
        grads = api.conv2d_backward(_as_numpy(grad_output.contiguous(), "grad_output"),
                                    _as_numpy(x, "input"), _as_numpy(weight, "weight"),
                                    *ctx.geometry, bias=ctx.has_bias, needs=needs,
                                    algorithm=ctx.algorithm)
        grads = [None if g is None else torch.from_numpy(np.ascontiguousarray(g)) for g in grads]
        return (*grads, None, None, None, None, None)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto"):
    """Differentiable :func:`fastconv.conv2d` on torch tensors (CPU)."""
    return Conv2dFunction.apply(x, weight, bias, stride, padding, dilation, groups, algorithm)


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` whose forward and backward run fastconv's kernels.

    Same constructor and parameters as ``torch.nn.Conv2d`` (so state dicts are
    interchangeable), plus ``algorithm``. Only ``padding_mode="zeros"`` is supported.
    """

    def __init__(self, *args, algorithm="auto", **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"fastconv.torch.Conv2d supports padding_mode='zeros' only, "
                             f"but got padding_mode={self.padding_mode!r}")
        self.algorithm = algorithm

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      self.groups, algorithm=self.algorithm)


class _PlannedFunction(torch.autograd.Function):
    """A training network's forward and backward inside autograd: the parameters are inputs,
    so that autograd hands their gradients to the module's parameters."""

    @staticmethod
    def forward(ctx, x, network, names, *parameters):
        ctx.network = network
        ctx.names = names
        # this call's tape, whatever calls come before its backward
        y, ctx.tape = network.forward_taped(_as_numpy(x, "input"))
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, grad_output):
        network, tape, ctx.tape = ctx.network, ctx.tape, None
        wanted = ctx.needs_input_grad[0]
        gx = network.backward_taped(tape, _as_numpy(grad_output, "grad_output"),
                                    input_grad=wanted)
        grads = [torch.from_numpy(network.grads[name]) for name in ctx.names]
        return (torch.from_numpy(gx) if wanted else None, None, None, *grads)


class Planned(nn.Module):
    """A torch module whose whole network runs on fastconv: in training mode, forward and
    backward of every layer (``Network.from_torch(module, training=True)``); in eval mode,
    the inference plan (``Network.from_torch(module)``).

    Its parameters and buffers are the wrapped module's (its state dict, under
    ``module.``), so any torch optimizer trains it: the networks read the parameters' memory,
    and an update in place is seen by the next call. The eval plan is planned again when a
    parameter or buffer has changed since it was planned.

    Parameters
    ----------
    module : torch.nn.Module
        The layers ``Network.from_torch`` reads (in training, without ``ConvTranspose2d``);
        its parameters float32 or float64 on the CPU.
    backend : {"auto", "numba", "cython"}
    seed : int, optional
        Seeds the dropout layers' generator.
    """

    def __init__(self, module: nn.Module, backend: str = "auto", seed: int | None = None):
        super().__init__()
        self.module = module
        self.training = module.training
        self._backend, self._seed = backend, seed
        self._training_net = None
        self._training_key = None
        self._plan = None
        self._plan_key = None

    def _tensors(self):
        return [*self.module.parameters(), *self.module.buffers()]

    def _memory(self):
        """Where the tensors are: a network built on other memory is built again."""
        return tuple(t.data_ptr() for t in self._tensors())

    def _versions(self):
        return tuple(t._version for t in self._tensors())

    def forward(self, x):
        if not self.training:
            key = (self._memory(), self._versions())
            if self._plan is None or self._plan_key != key:
                from .network import Network

                self._plan = Network.from_torch(self.module, self._backend)
                self._plan_key = key
            return torch.from_numpy(self._plan(_as_numpy(x, "input")))
        if self._training_net is None or self._training_key != self._memory():
            from .network.training import TrainingNetwork

            self._training_net = TrainingNetwork(self.module, share=True, backend=self._backend,
                                                 seed=self._seed)
            self._training_key = self._memory()
        network = self._training_net
        self._plan = None  # the running statistics change, and torch does not see it
        names = tuple(network.parameters)
        named = dict(self.module.named_parameters())
        return _PlannedFunction.apply(x, network, names, *(named[n] for n in names))
