#!/bin/bash
# The checks that need a CUDA GPU, in one command (CI never has one). Logs go to LOGDIR (default: a temporary
# folder, printed); each step has its own time limit (seconds, from the environment), so a hang in one step
# still leaves the others' results:
#   T_TESTS  the plugin matrix in process (every defence and attack trains each of the eight architectures) and
#            the whole pipeline per architecture, each plugin in its own process (tests/real/); default 300
#   T_PIPE   benchmarks/gpu_pipeline.py: none and repnoise x sft-1k on a 1.2B random Llama in bf16; default 300
#   T_GEN    benchmarks/gpu_hf_throughput.py (0 skips it); default 60
#   bash benchmarks/gpu_check.sh [LOGDIR]
cd "$(dirname "$0")/.."
log=${1:-$(mktemp -d)}; mkdir -p "$log"; echo "logs: $log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # each test worker and its plugin processes: the cores not oversubscribed
py=${PYTHON:-python3}; t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
{ nvidia-smi -L; $py -c "
import torch, transformers, peft
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0))
print('transformers', transformers.__version__, 'peft', peft.__version__)"; } 2>&1 | tee "$log/probe.txt"
# the per-test limit stays under the step's, so a hung test fails with its captured output and the summary prints
tests=${T_TESTS:-300}
limit=$($py -c "import pytest_timeout" 2>/dev/null && echo "--timeout $(( tests / 3 ))")  # where pytest-timeout is
timeout "$tests" $py -m pytest -v -n "${WORKERS:-8}" $limit --tb=short -p no:cacheprovider \
  tests/real/test_architectures.py tests/real/test_real_pipeline.py > "$log/pytest.log" 2>&1
echo "pytest rc $?"; grep -E "FAILED|ERROR|passed|failed" "$log/pytest.log" | tail -30; el "tests done"
timeout "${T_PIPE:-300}" $py benchmarks/gpu_pipeline.py > "$log/pipeline.log" 2>&1
echo "pipeline rc $?"; tail -60 "$log/pipeline.log"; el "pipeline done"
if [ "${T_GEN:-60}" != 0 ]; then
  timeout "${T_GEN:-60}" $py benchmarks/gpu_hf_throughput.py --repeats 3 > "$log/throughput.log" 2>&1
  echo "throughput rc $?"; tail -10 "$log/throughput.log"; el "throughput done"
fi
