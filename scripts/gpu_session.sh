#!/usr/bin/env bash
# Run on the GPU machine: install carried wheels, run the test suite on the GPU, then the
# job named by $1 (gemma | final | sweep | compare | floor | reliability | launch | mlp | one_launch | gemm | training |
# training_step | decode_middle | width | host_noise | first_call | code_in_model | prefill_paths | host_bars | model_bars | none). PYTEST_ARGS="-n 14 --dist load" runs the suite in about 140 s on an H200 host. Logs and results go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
# A Triton cache carried from an earlier call (optional) saves recompiling the same kernels.
if [ -n "${TRITON_CACHE_DIR:-}" ]; then mkdir -p "$TRITON_CACHE_DIR"; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, triton, transformers, kernels; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, 'kernels', kernels.__version__)" | tee -a "$OUT/device.txt"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  # The flake, git, CLI, publish and README-journey checks need nix, a git checkout, the kernels
  # CLI and huggingface_hub 2.4, which the GPU machine lacks; CI runs them (README's GPU blocks:
  # the reliability job).
  ${PYTEST_TIMEOUT:+timeout -s INT $PYTEST_TIMEOUT} python3 -m pytest ${TESTS:-tests} -q -p no:cacheprovider -rfs ${PYTEST_ARGS:-} \
    --deselect tests/test_build.py::test_flake_nix_parses \
    --deselect tests/test_build.py::test_dirty_tree_is_marked \
    --deselect tests/test_build.py::test_kernels_benchmark_runs_on_a_local_build \
    --ignore tests/test_publish.py --ignore tests/test_readme.py 2>&1 | tee "$OUT/pytest_gpu.log" | tail -25
fi
case "${1:-none}" in
  gemma) python3 scripts/gpu_gemma_check.py --out "$OUT/gemma_check.json" 2>&1 | tee "$OUT/gemma_check.log" | tail -30 ;;
  final)
    python3 scripts/gpu_gemma_check.py --out "$OUT/gemma_check.json" 2>&1 | tee "$OUT/gemma_check.log" | tail -4
    (cd benchmarks && python3 compare_peers.py --out "$OUT" --sections extras,mlp) 2>&1 | tee "$OUT/compare.log" | grep -v "^pointwise" | tail -40 ;;
  sweep)
    (cd benchmarks && python3 sweep_launch_configs.py --out "$OUT" --layouts "${LAYOUTS:-separate,packed}" \
      --dtype "${DTYPE:-bfloat16}" ${SWEEP_ARGS:-}) 2>&1 \
      | grep -v dirty | tee "$OUT/sweep.log" ;;
  floor)
    (cd benchmarks && python3 launch_floor.py --out "$OUT" ${FLOOR_ARGS:-}) 2>&1 \
      | grep -v dirty | tee "$OUT/floor.log" ;;
  reliability)
    # The property tests' larger seeded sweep, then README's GPU-marked blocks as written.
    GEGLU_PROPERTY_EXAMPLES=${EXAMPLES:-300} GEGLU_PROPERTY_SEED=1 python3 -m pytest tests/test_properties.py -q -s \
      -p no:cacheprovider -n 0 2>&1 | tee "$OUT/properties_gpu.log" | tail -5
    python3 scripts/gpu_readme.py 2>&1 | tee "$OUT/readme_gpu.log" | tail -30 ;;
  launch)
    # The launch-layer and fused-MLP measurements: host time, the Gemma-shaped model, the whole MLP
    # (with the fused decode path as its own peer), then the host-time probes.
    (cd benchmarks && python3 compare_peers.py --out "$OUT" --sections host \
      && python3 compare_model.py --out "$OUT" && python3 compare_peers.py --out "$OUT" --sections mlp \
      && python3 probes/profile_autograd_host.py && python3 probes/profile_model_host.py) 2>&1 \
      | grep -v dirty | tee "$OUT/launch.log" | tail -80 ;;
  mlp)
    # The fused MLP kernels: their launch sweeps (decode $TOKENS_DECODE, middle $TOKENS_MIDDLE), the
    # first call at a new T, the layer against the peers, the Gemma-shaped model.
    (cd benchmarks && python3 probes/probe_mlp_decode.py --out "$OUT" --tokens "${TOKENS_DECODE:-1,4,16}" \
      && python3 probes/probe_mlp_middle.py --out "$OUT" --tokens "${TOKENS_MIDDLE:-32,64,128,256,512}" \
      && python3 probes/probe_mlp_first_call.py --out "$OUT" \
      && python3 compare_peers.py --out "$OUT" --sections mlp --tokens "${MLP_TOKENS:-1,16,32,64,128}" \
      && python3 compare_model.py --out "$OUT") 2>&1 | grep -v dirty | tee "$OUT/mlp.log" | tail -60 ;;
  one_launch)
    # The one-launch decode MLP (ticketed gate/up and split-K down programs, per-slice flags)
    # against the package's two launches.
    (cd benchmarks && timeout 480 python3 probes/probe_mlp_one_launch.py --out "$OUT") 2>&1 | grep -v dirty \
      | tee "$OUT/one_launch.log" | tail -20 ;;
  gemm)
    # The persistent TMA gate/up GEMM at prefill sizes, then the first call at a new T and the
    # one-launch decode probe, each bounded so that the whole job ends inside one 10-minute call.
    (cd benchmarks && timeout 270 python3 probes/probe_mlp_gemm.py --out "$OUT" ${GEMM_ARGS:-} \
      && timeout 40 python3 probes/probe_mlp_first_call.py --out "$OUT" \
      && timeout 100 python3 probes/probe_mlp_one_launch.py --out "$OUT") 2>&1 | grep -v dirty \
      | tee "$OUT/gemm.log" | tail -40 ;;
  decode_middle)
    # The decode kernels' quick sweep (the table's gate/up config; split-K and unsplit down configs)
    # and the middle-T sweep at $TOKENS_MIDDLE, each bounded.
    (cd benchmarks && timeout ${DECODE_S:-200} python3 probes/probe_mlp_decode.py --out "$OUT" --quick \
      --tokens "${TOKENS_DECODE:-1,16}" --dims "${DIMS:-2048x16384,2560x10240,3584x14336}"; \
      timeout ${MIDDLE_S:-100} python3 probes/probe_mlp_middle.py --out "$OUT" --tokens "${TOKENS_MIDDLE:-128}" \
      --dims "${DIMS:-2048x16384,2560x10240,3584x14336}") 2>&1 | grep -v dirty | tee "$OUT/decode_middle.log" | tail -40 ;;
  training_step)
    # The layers' training path (F.linear, then the GeGLU + down node): the MLP's training step with
    # its peak memory against the peers, then the Gemma-shaped model.
    (cd benchmarks && timeout 150 python3 compare_peers.py --out "$OUT" --sections mlp --tokens 512,2048 \
      --dims 2048x16384 && timeout 150 python3 compare_model.py --out "$OUT" --rounds 5) 2>&1 | grep -v dirty \
      | tee "$OUT/training_step.log" | tail -20 ;;
  training)
    # One autograd node for the whole MLP against the layer's training path and eager.
    (cd benchmarks && python3 probes/probe_mlp_training.py --out "$OUT") 2>&1 | grep -v dirty \
      | tee "$OUT/training.log" | tail -20 ;;
  width)
    # The widths as runtime arguments against a constexpr-width kernel_src copy ($BASELINE, e.g. from
    # `git archive a4eaa9f torch-ext/geglu/kernel_src`), device times and first calls.
    (cd benchmarks && timeout 330 python3 probes/probe_width_runtime.py --out "$OUT" --baseline "${BASELINE:?}" \
      ${WIDTH_ARGS:-}) 2>&1 | grep -v dirty | tee "$OUT/width.log" | tail -60 ;;
  host_noise)
    # The model's plain calls on a noisy host: the split with the layer's host steps and an A/A
    # control, pinned; host time per module kind, pinned; the pinned comparison with its control.
    (cd benchmarks && timeout 150 python3 probes/probe_model_split.py --out "$OUT" --control --host-steps --cpu 2 \
      && timeout 120 python3 probes/probe_outside_mlp.py --out "$OUT" --cpu 2 \
      && timeout 200 python3 compare_model.py --out "$OUT" --rounds 9) 2>&1 | grep -v dirty \
      | tee "$OUT/host_noise.log" | tail -40 ;;
  first_call)
    # The first call at a new width / MLP shape by compile threads (fresh processes, empty Triton
    # caches), then the fused layer's first call at new token counts.
    (cd benchmarks && timeout 300 python3 probes/probe_first_call_threads.py --out "$OUT" ${THREADS_ARGS:-} \
      && timeout 90 python3 probes/probe_mlp_first_call.py --out "$OUT") 2>&1 | grep -v dirty \
      | tee "$OUT/first_call.log" | tail -40 ;;
  code_in_model)
    # The kernelized model's prefill gap: the MLP's code (eager's, ours, ours with eager's pointwise)
    # swapped in place on the untouched and the kernelized model objects, pinned, rotating rounds.
    (cd benchmarks && timeout 300 python3 probes/probe_mlp_code_in_model.py --out "$OUT" --rounds 11) 2>&1 \
      | grep -v dirty | tee "$OUT/code_in_model.log" | tail -20 ;;
  prefill_paths)
    # The same prefill with the MLPs' code swapped for variants with and without the layer's rule.
    (cd benchmarks && for t in ${PREFILL_TOKENS:-512 2048}; do
      timeout 240 python3 probes/probe_mlp_prefill_paths.py --out "$OUT" --rounds 9 --tokens "$t" || break; done) 2>&1 \
      | grep -v dirty | tee "$OUT/prefill_paths.log" | tail -20 ;;
  host_bars)
    # The host-time bars, bounded to fit one call with SKIP_TESTS=1: geglu()'s autograd node against
    # an earlier build's ($BASELINE: that commit's build/ folder), the host rows, and where a 512-token
    # prefill's host time goes (with the caching allocator's counts).
    base=$(realpath "${BASELINE:?}")  # before the cd below
    (cd benchmarks && timeout 100 python3 probes/probe_autograd_variants.py --out "$OUT" --cycles 400 --burst 20 \
      --baseline-build "$base"; timeout 120 python3 compare_peers.py --out "$OUT" --sections host; \
      timeout 150 python3 probes/probe_outside_mlp.py --out "$OUT" --prefill-cycles 300 --cpu 7) 2>&1 \
      | grep -v dirty | tee "$OUT/host_bars.log" | tail -40 ;;
  model_bars)
    # The model in alternating cycles (prefill, training step, plain decode) and the MLP's plain
    # calls with both L2 flushes, bounded to fit one call with SKIP_TESTS=1.
    (cd benchmarks && timeout 260 python3 compare_model.py --out "$OUT" --rounds 11 --cpu 7 --alternating-cycles 300; \
      timeout 260 python3 compare_peers.py --out "$OUT" --sections mlp --plain-only --read-flush \
      --tokens "${MLP_TOKENS:-1,16,64,128}") 2>&1 | grep -v dirty | tee "$OUT/model_bars.log" | tail -40 ;;
  compare) (cd benchmarks && python3 compare_peers.py --out "$OUT" --sections "${SECTIONS:-pointwise,mlp,extras}") 2>&1 | tee "$OUT/compare.log" | tail -80 ;;
esac
