"""Every tuned threshold of the kernels, in one place, each with the command that re-measures it.

The values were chosen by those benchmarks on the machines this project has run on; a machine
with other caches, vector units or thread pools may want others. The kernels read them from
here (at call time where a benchmark changes them to compare). Plain Python with no imports:
``setup.py`` reads it too.

These are the defaults. The planner's thresholds (``kernels.tuned.TUNABLE``) can be measured
on the machine at hand by ``fastconv tune``, which stores them per user and CPU; at import,
``kernels.tuned.apply`` sets them here over the defaults (``FASTCONV_TUNING=defaults`` keeps
these). The tile shapes and the prefetch distance are compiled into the kernels and stay the
defaults of the vector width the kernels run at.
"""

# --- depthwise ------------------------------------------------------------------------------

# Output rows narrower than this are computed as one flat loop over the plane ("wrapped" and
# "split" paths, see depthwise_paths), wider ones row by row.
# Re-measure: pytest benches/bench_tuning.py -k flat_below --benchmark-only
FLAT_BELOW = 32

# Scratch buffers are rounded up to whole vectors of this many float32 lanes, so the flat loops
# end without a scalar remainder. Not measured: the widest vector the kernels are built for
# (AVX-512); narrower machines only waste a few elements.
VECTOR = 16

# Below this many elements read and written, a memory-bound call (depthwise) runs on the
# calling thread, by thread pool: a sleeping OpenMP pool costs a wake-up per parallel call,
# TBB's calling thread starts at once and its workers join as they wake.
# FASTCONV_SERIAL_BELOW overrides both (see fastconv.config).
# Re-measure: pytest benches/bench_tuning.py -k serial_below --benchmark-only
SERIAL_BELOW = {"omp": 450_000, "tbb": 50_000}

# --- im2col and pointwise GEMMs ----------------------------------------------------------

# A GEMM with fewer multiply-adds than this runs on one thread with OpenBLAS's small-matrix
# kernels, without packing its operands.
# Re-measure: pytest benches/bench_tuning.py -k gradient_chunk --benchmark-only
SMALL_GEMM = 1_000_000

# Weight gradients of at most this many values are summed over pixels in chunks of
# SMALL_GEMM multiply-adds (see tiling.gradient_chunk).
# Re-measure: pytest benches/bench_tuning.py -k gradient_chunk --benchmark-only
SMALL_GRADIENT = 1024

# --- the network plan's GEMM tile -----------------------------------------------------

# (MR, NR) of the plan's register tiles (kernels/numba/microkernel.py) by vector width in bits:
# MR output pixels by NR output channels, MR * NR / lanes accumulators in registers (AVX-512
# has 32 vector registers, AVX2 16; a few hold the weights and the broadcast input). The wide
# tile serves every layer with more output channels (per group) than the narrow tile's NR:
# it loads fewer values per multiply-add and reads the input fewer times.
# Re-measure: pytest benches/bench_microkernel.py --benchmark-only
GEMM_TILE = {
    512: {"float32": (12, 32), "float64": (12, 16)},
    256: {"float32": (6, 16), "float64": (6, 8)},
    128: {"float32": (6, 8), "float64": (6, 4)},
}
GEMM_TILE_WIDE = {
    512: {"float32": (6, 64), "float64": (6, 32)},
    256: {"float32": (4, 24), "float64": (4, 12)},
    128: {"float32": (4, 12), "float64": (4, 6)},
}
# The wide tile serves the layers whose reduction (taps times input channels) or output
# channels are at most this many, and those whose input does not stay in cache.
# Re-measure: pytest benches/bench_microkernel.py -k tile_shape --benchmark-only
WIDE_BELOW = 64
# A panel of weights larger than GEMM_CHUNK_ABOVE bytes (a 3x3 layer of many channels) is
# used in chunks of input channels, GEMM_CHUNK_BYTES of weights each: a chunk's weights stay
# in L1 while the block's tiles pass, the partial sums waiting in the output. Smaller panels
# stay in L2 and are used whole. Re-measure: pytest benches/bench_plan.py --benchmark-only
# (the full-convolution twin and MobileNet at batch 1 and 8)
GEMM_CHUNK_ABOVE = 1 << 19
GEMM_CHUNK_BYTES = 32768
# How much more work the largest task may get when the pixels are split among the threads
# rather than the channels: splitting the channels makes every thread read the whole input.
# Re-measure: pytest benches/bench_microkernel.py -k gemm --benchmark-only
GRID_SLACK = 0.1
# A core's L2 cache where the system does not say (the tiles' blocking fills half of it).
# Not measured: the blocking reads the real size from sysfs.
L2_BYTES = 1 << 20
# How many weights ahead (elements) the tile prefetches, 0 for none: a layer's weights come
# from memory on every call of a network, since the other layers' evicted them.
# Re-measure: pytest benches/bench_microkernel.py -k prefetch --benchmark-only
GEMM_PREFETCH = 512

# Vectors of channels per call of the plan's 3x3 depthwise row, by vector width: its nine
# weight vectors, bias and accumulator per vector stay in registers.
# Re-measure: pytest benches/bench_microkernel.py -k depthwise --benchmark-only
DEPTHWISE_VECTORS = {512: 2, 256: 1, 128: 1}

# A transposed convolution whose kernel is its stride and which has fewer output channels than
# this runs as one pointwise GEMM to kh * kw * C_out channels and a depth-to-space copy, where
# kh * kw GEMMs of C_out channels each would leave the tiles' vectors mostly empty (the copy
# costs more than it saves from about 12 channels on: the DBNet-style head's 12-channel layer).
# Re-measure: pytest benches/bench_plan.py -k deconv --benchmark-only
PLAN_DECONV_SHUFFLE_BELOW = 12

# Parallel chunks per thread in each kernel of the plan: more than one, so that a thread that
# wakes late (after the program idled) still gets a share, few enough that each chunk has
# work. Re-measure: pytest benches/bench_plan.py -k tasks --benchmark-only
PLAN_TASKS_PER_THREAD = 1

# Seconds the Cython plan's worker threads spin after a call, waiting for the next one, before
# they sleep: calls made back to back then start without waking a thread.
# Re-measure: fastconv profile models/mobilenet_v3_small.onnx --backend cython (the whole
# call beside ONNX Runtime's, whose pool spins too), with other values set here
PLAN_SPIN_SECONDS = 0.002

# The plan runs a dense 3x3 stride-1 convolution of at least this many input channels as
# Winograd F(2x2, 3x3), in blocks of at most PLAN_WINOGRAD_BLOCK_MAX tiles (fewer where a
# block's transformed inputs and products would not fit the L2 cache).
# Re-measure: pytest benches/bench_plan.py -k full --benchmark-only, and
# fastconv profile mobilenet-v1-full --plan (the node table)
PLAN_WINOGRAD_CHANNELS = 64
PLAN_WINOGRAD_TILES_PER_CHANNEL = 0.05
PLAN_WINOGRAD_BLOCK_MAX = 64
# The plan runs a depthwise 3x3 layer and the pointwise layer reading it as one kernel when
# the pointwise weights take at most PLAN_SEPARABLE_WEIGHTS of the L2 cache (beyond, they
# would leave it between the steps, and the two layers run apart); each task's depthwise
# rows then take at most PLAN_SEPARABLE_SCRATCH of the L2 cache.
# Re-measure: pytest benches/bench_plan.py -k separable --benchmark-only
PLAN_SEPARABLE_WEIGHTS = 0.6
PLAN_SEPARABLE_SCRATCH = 0.0625

# An expand layer (1x1) runs inside the depthwise and pointwise pair after it when each task
# gets at least PLAN_EXPAND_ROWS output rows (the rows at the edges of a task's share are
# expanded twice); its slab of expanded rows and the depthwise rows take at most
# PLAN_EXPAND_SCRATCH of the L2 cache.
# Re-measure: pytest benches/bench_plan.py --benchmark-only -k expand
PLAN_EXPAND_ROWS = 2
PLAN_EXPAND_SCRATCH = 0.25

# --- winograd F(2x2, 3x3) ----------------------------------------------------------------

# "auto" takes Winograd for a dense 3x3 stride-1 layer with at least this many input channels
# (its 16 GEMMs are skinny with fewer) ...
# Re-measure: fastconv bench mobilenet-v1-full --algorithms im2col,winograd (batch 1 and 8),
# or pytest benches/bench_tuning.py -k winograd --benchmark-only
WINOGRAD_MIN_CHANNELS = 96
# ... and at least this many 2x2 output tiles (over the batch) per input channel, enough to
# pay back the filter transform that every call redoes.
WINOGRAD_TILES_PER_CHANNEL = 0.5

# --- OpenBLAS -------------------------------------------------------------------------------

# log2 of the cycles numpy's OpenBLAS workers spin when idle, when fastconv loads numpy
# (OpenBLAS's default is 28, about 0.1 s): long enough to stay awake between one layer's
# GEMMs, short enough not to take the cores from the parallel kernel after them.
# Re-measure: fastconv profile mobilenet-v1, run with OPENBLAS_THREAD_TIMEOUT=16 and =28
OPENBLAS_SPIN = 16

# --- CUDA --------------------------------------------------------------------------------

# Threads per block of the one-dimensional kernels, the GEMM's square tile, the direct
# kernel's output tile and its shared input patch (enough for 3x3 up to stride 3, dilation 4).
# Not measured: no GPU was available to this project (the simulator does not time); these
# are the usual starting points.
CUDA_THREADS = 128
CUDA_GEMM_TILE = 16
CUDA_DIRECT_TILE = 8
CUDA_DIRECT_PATCH = 32

# --- training -------------------------------------------------------------------------------

# A training network's convolution runs on the plan's kernels (one-node plans that convert
# NCHW to NHWC and back: forward, input gradient, weights' gradient) where it has no groups,
# a kernel larger than 1x1 (its live taps) and at least this many input channels; else on the
# per-call kernels, whose GEMMs read NCHW as it is (pointwise and grouped layers, and the
# stems, lose more to the conversions than the register tiles win).
# Re-measure: pytest benches/bench_training.py --benchmark-only -k convolution
TRAIN_PLAN_MIN_CHANNELS = 16

# ... and an output of at least this many pixels per image: the register tiles run along an
# image's output rows, mostly empty on a tiny image, where the per-call GEMM takes the whole
# batch side by side (tiling.batch_small_images). Re-measure as TRAIN_PLAN_MIN_CHANNELS.
TRAIN_PLAN_MIN_PIXELS = 2

# ... and weights no more than this many times its output's values (the batch's): the plan
# re-packs the weights at every step (Winograd's transformed), which costs more than its
# tiles win on a layer of many weights and few pixels (ResNet's last stage at batch 8).
# Re-measure as TRAIN_PLAN_MIN_CHANNELS.
TRAIN_PLAN_WEIGHT_PER_OUTPUT = 5

# A training network's batch norm takes each image as one row of C x P values (a sum per
# position, the coefficients repeated per position) below this many pixels P per plane, and
# loops channel by channel, plane by plane, at or above it.
# Re-measure: pytest benches/bench_training.py --benchmark-only -k batch_norm
TRAIN_ROWS_BELOW = 9
