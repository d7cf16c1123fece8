"""Each plan kernel's arguments, one named record per kind of step, defined here once.

The planner fills a record by name (``Conv(x=..., rows=..., ...)``); a
:class:`~fastconv.network.emission.Step` carries it, and an executor calls its kernel with the
record's fields in order, bound to the arena (``arena.bound_steps``). The Numba kernels
(``kernels/numba/nhwc``) and the Cython ones (``kernels/cython/plan.pyx``, which checks each
argument and stores it in its C struct) take exactly these parameters, in this order:
``tests/test_network.py`` compares their signatures with the records, so a field added in one
place and forgotten in another fails a test, not a run.

The argument groups that recur have one spelling: an epilogue is ``kind, lo, hi, alpha,
beta`` (with a prefix for a fused kernel's inner layers: ``dw_``, ``e_``), packed weights
``w, panel``, a residual ``res, res_rows, res_mode``, a tile ``wide, mr, nr``.
"""

from __future__ import annotations

from collections import namedtuple


def _record(name: str, kind: str, fields: str):
    """A record class; its ``kind`` is the name of the executors' kernel it calls."""
    record = namedtuple(name, fields.split())
    record.kind = kind
    return record


FromNchw = _record("FromNchw", "from_nchw", (
    "x out top left border tasks"))

ZeroBorder = _record("ZeroBorder", "zero_border", (
    "buf border tasks"))

Affine = _record("Affine", "affine", (
    "x top left scale shift has_affine out out_top out_left height width "
    "kind lo hi alpha beta tasks"))

Binary = _record("Binary", "binary", (
    "a a_top a_left b b_top b_left b_pixels op out out_top out_left "
    "height width kind lo hi alpha beta tasks"))

CopyChannels = _record("CopyChannels", "copy_channels", (
    "x top left x_c0 count out out_top out_left c0 height width sh sw phase_step row_step "
    "col_step tasks"))

Gather = _record("Gather", "gather", (
    "x rows c_step out out_rows channels tasks"))

Softmax = _record("Softmax", "softmax", (
    "x top left height width out out_top out_left tasks"))

Resize = _record("Resize", "resize", (
    "x top left height width out out_top out_left rows0 rows1 row_w cols0 cols1 col_w "
    "tasks"))

Flatten = _record("Flatten", "flatten", (
    "src top left out channels height width tasks"))

MaxPool = _record("MaxPool", "max_pool", (
    "x top left height width out out_top out_left ho wo kh kw sh sw ph pw dh "
    "dw tasks"))

AvgPool = _record("AvgPool", "avg_pool", (
    "x top left height width out out_top out_left ho wo kh kw sh sw ph pw "
    "pad_bottom pad_right count_include_pad divisor tasks"))

GlobalAverage = _record("GlobalAverage", "global_average", (
    "x top left height width maximum out out_top out_left tasks"))

SqueezeExcite = _record("SqueezeExcite", "squeeze_excite", (
    "x top left height width w1 b1 s_kind s_lo s_hi s_alpha s_beta w2 b2 kind lo hi alpha "
    "beta out out_top out_left scratch tasks"))

Depthwise = _record("Depthwise", "depthwise", (
    "x top left w kh kw multiplier bias out out_top out_left ho wo sh sw dh "
    "dw kind lo hi alpha beta block tasks"))

Depthwise3x3 = _record("Depthwise3x3", "depthwise_3x3", (
    "x top left w bias out out_top out_left ho wo sh sw dh dw kind lo hi "
    "alpha beta block out_border tasks"))

Conv = _record("Conv", "conv", (
    "x rows taps c_in groups w panel out out_rows out_per_group bias "
    "has_bias kind lo hi alpha beta res res_rows res_mode wide mr nr "
    "tile_groups unit_groups block chunk out_border"))

Separable = _record("Separable", "separable", (
    "x top left dw_w dw_bias dw_kind dw_lo dw_hi dw_alpha dw_beta sh sw dh "
    "dw ho wo block w panel panels out out_rows out_channels bias has_bias "
    "kind lo hi alpha beta res res_rows res_mode wide mr nr scratch s_rows "
    "taps rows_per_step out_border tasks"))

ExpandedSeparable = _record("ExpandedSeparable", "expanded_separable", (
    "x x_top x_left height width e_rows e_w e_panel e_panels expanded e_bias "
    "e_has_bias e_kind e_lo e_hi e_alpha e_beta e_wide e_mr e_nr slab "
    "slab_rows dw_w dw_bias dw_kind dw_lo dw_hi dw_alpha dw_beta stride ho "
    "wo block w panel panels out out_rows out_channels bias has_bias kind lo "
    "hi alpha beta res res_rows res_mode wide mr nr scratch s_rows taps "
    "rows_per_step out_border tasks"))

Winograd = _record("Winograd", "winograd", (
    "x top left w panel panels channels bias out out_top out_left ho wo kind "
    "lo hi alpha beta res res_top res_left res_channel res_mode v m rows "
    "m_rows taps block is_wide mr nr out_border tasks"))

#: The record of each kind of step (``executor.STEP_KINDS``), by its kind.
RECORDS = {record.kind: record for record in (
    FromNchw, ZeroBorder, Affine, Binary, CopyChannels, Gather, Softmax, Resize, Flatten, MaxPool,
    AvgPool,
    GlobalAverage,
    SqueezeExcite, Depthwise, Depthwise3x3, Conv, Separable, ExpandedSeparable, Winograd)}
