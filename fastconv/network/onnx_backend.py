"""fastconv as an ONNX backend (``onnx.backend.base.Backend``): what the ONNX conformance
suite (``onnx.backend.test``) calls.

``Backend.prepare(model)`` reads the model with :meth:`Network.from_onnx`; ``rep.run(inputs)``
plans it for the inputs' shapes and runs it. The conformance suite passes a node's every input
at run time, its weights too, where a model file holds them as initializers; so the rep plans
the model with every input but the first bound to the value the call gives (as an
initializer), which is what lets the plan pack a convolution's weights. That plan is kept for
the next call with the same shapes and values.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.backend.base as base

from .network import Network


class BackendRep(base.BackendRep):
    """A prepared model: its plans, one per shapes and bound inputs."""

    def __init__(self, model: onnx.ModelProto, threads: int | None = None):
        self.model = model
        self.threads = threads
        self.plans: dict = {}
        self.last = None  # the plan of the last run, for the tests to ask what ran

    def _bound(self, inputs) -> Network:
        from .onnx_import import model_inputs

        names = [i.name for i in model_inputs(self.model.graph)]
        key = tuple((np.shape(x), np.asarray(x).dtype.str, np.asarray(x).tobytes())
                    for x in inputs[1:])
        plan = self.plans.get(key)
        if plan is None:
            model = onnx.ModelProto()
            model.CopyFrom(self.model)
            for name, value in zip(names[1:], inputs[1:]):
                model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value),
                                                                            name))
            plan = self.plans[key] = Network.from_onnx(model, threads=self.threads)
        return plan

    def run(self, inputs, **kwargs) -> tuple:
        """The model's outputs, in the graph's order, for ``inputs`` (a list in the graph's
        order, or a dict by name)."""
        from .onnx_import import model_inputs

        if isinstance(inputs, dict):
            inputs = [inputs[i.name] for i in model_inputs(self.model.graph)]
        elif isinstance(inputs, np.ndarray):
            inputs = [inputs]
        inputs = [np.asarray(x) for x in inputs]
        plan = self.last = self._bound(inputs)
        outputs = plan(*inputs[:1])
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return base.namedtupledict("Outputs", [o.name for o in self.model.graph.output])(
            *outputs)


class Backend(base.Backend):
    """fastconv's plan as an ONNX backend, on the CPU."""

    @classmethod
    def prepare(cls, model, device: str = "CPU", threads: int | None = None,
                **kwargs) -> BackendRep:
        super().prepare(model, device, **kwargs)
        if not cls.supports_device(device):
            raise ValueError(f"fastconv runs on the CPU, not on device {device!r}")
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load_from_string(bytes(model))
        return BackendRep(model, threads)

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return base.Device(device).type == base.DeviceType.CPU
