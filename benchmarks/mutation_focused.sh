#!/usr/bin/env bash
# Judge the mutants that `make mutation` has generated but not run, module by module, each against the test
# files that exercise that module (benchmarks/mutation_recheck.py runs, per mutant, only the tests of that
# selection that reach the mutated function). Two workers (one thread each) share the modules; verdicts go
# to mutants/focused-results.json, and benchmarks/mutation_report.py prints the table.
#   benchmarks/mutation_focused.sh [DEADLINE_SECONDS_PER_MODULE]        (make mutation runs it)
# The mutants run in a random order (seed 1), so a module cut short by the deadline is a random sample of it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEADLINE=${1:-0}
"$PY" benchmarks/mutation_refresh.py   # create mutants/, or re-mutate / copy the sources changed since it was made
cp tests/*.py mutants/tests/
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
run() {  # module, test files...
  local module=$1; shift
  local extra=()
  [ "$DEADLINE" != 0 ] && extra=(--deadline "$DEADLINE")
  "$PY" benchmarks/mutation_recheck.py "$@" --only "$module." --status "not checked" --save --timeout 120 --shuffle --seed 1 "${extra[@]}" \
    > "mutants/focused-$module.log" 2>&1 || echo "warning: $module ended with an error (see mutants/focused-$module.log)"
  tail -1 "mutants/focused-$module.log"
}
(
  run shanshui.image_intake tests/test_value_checks.py tests/test_control.py tests/test_edges_image_intake.py
  run shanshui.control.arrows tests/test_control.py tests/test_properties.py tests/test_value_checks.py tests/test_edges_arrows.py
  run shanshui.flow.warp tests/test_flow.py tests/test_sofp.py tests/test_value_checks.py tests/test_edges_warp.py
  run shanshui.models.attention tests/test_attention.py tests/test_value_checks.py
  run shanshui.losses tests/test_losses.py tests/test_value_checks.py
) &
A=$!
(
  run shanshui.models.motion_io tests/test_motion_io.py tests/test_animatediff_reference.py tests/test_value_checks.py \
    tests/test_edges_motion_io.py
  run shanshui.pipelines.long_video tests/test_long_video.py tests/test_fusion.py tests/test_properties.py tests/test_value_checks.py \
    tests/test_edges_long_video.py
  run shanshui.flow.sofp tests/test_sofp.py tests/test_properties.py tests/test_value_checks.py \
    tests/test_edges_sofp_driver.py tests/test_edges_sofp_math.py
  run shanshui.latent_ops tests/test_value_checks.py tests/test_properties.py tests/test_painting_to_video.py
) &
B=$!
wait $A $B
"$PY" benchmarks/mutation_report.py
