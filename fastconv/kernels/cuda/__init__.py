"""numba.cuda kernels: twins of the Numba CPU modules, same interface, on device arrays.

Imported only when ``backend="cuda"`` is asked for. Host (NumPy) inputs are copied to the
device and the API copies the result back; device inputs (numba device arrays, or anything
exporting ``__cuda_array_interface__`` such as CuPy arrays or torch CUDA tensors) stay there and
the results are device arrays. Tested on the CPU with numba-cuda's simulator
(``NUMBA_ENABLE_CUDASIM=1``). Every kernel stages padding as real zeros.
"""

from ..algorithms import CORE, Backend

BACKEND = Backend(name="cuda", package=__name__, modules=CORE, bias_gradient="_common")
