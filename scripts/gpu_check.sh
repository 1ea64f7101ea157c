#!/usr/bin/env bash
# GPU readiness of fewdims, on a machine with a CUDA GPU: one line per check, PASS/FAIL with its numbers.
#
#   bash scripts/gpu_check.sh            # installs the project (make install), then runs every check
#
# Checks: CUDA is seen (device, bf16); the smoke grid trains on CUDA; two BERT-base-shaped runs (bert-base-uncased
# when it loads from the local Hugging Face cache or the hub, else a random BERT-base with a WordPiece vocabulary
# trained on the runs' data) with their timings; a 2-worker Ray grid on the GPU(s) whose records match the
# sequential GPU grid's runs. Data: $FEWDIMS_GLUE_DIR, else ../shared/glue, else generated GLUE-shaped data.
# Settings: SKIP_INSTALL=1 (use .venv as it is), BERT_TRAIN_SIZE (rows per BERT-base run, default 8000),
# ALLOW_CPU=1 (run the same checks on a CPU with small sizes: only to test this script). Exit status: the
# number of failed checks.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WORK=$(mktemp -d -t fewdims-gpu-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
FAILED=0
export HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false FEWDIMS_PROGRESS=0 RAY_AUTH_MODE=disabled
ALLOW_CPU=${ALLOW_CPU:-0}
BERT_TRAIN_SIZE=${BERT_TRAIN_SIZE:-8000}
[ "$ALLOW_CPU" = 1 ] && BERT_TRAIN_SIZE=${BERT_TRAIN_SIZE_CPU:-64}

timed() {  # timed LOG CMD...: runs CMD (output to LOG), prints its wall seconds
    local log=$1 t0; shift; t0=$(date +%s.%N)
    "$@" >"$log" 2>&1
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)"
}

line() {  # line NAME STATUS DETAILS
    printf '%-28s %s  %s\n' "$1" "$2" "$3"
    [ "$2" = PASS ] || FAILED=$((FAILED + 1))
}

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    if make install >"$WORK/install.log" 2>&1; then line install PASS "make install"
    else line install FAIL "make install failed: $(tail -1 "$WORK/install.log")"; exit 1; fi
fi

# 1. CUDA
out=$($PY - <<'EOF' 2>&1
import torch
from fewdims.runtime import bf16_available
if not torch.cuda.is_available():
    print("FAIL no CUDA device (torch", torch.__version__, "built for CUDA", torch.version.cuda, ")")
else:
    d = torch.device("cuda")
    print(f"PASS {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, bf16 {bf16_available(d)}")
EOF
)
status=${out%% *}; [ "$ALLOW_CPU" = 1 ] && [ "$status" = FAIL ] && status=PASS out="PASS ALLOW_CPU=1: ${out#* }"
line cuda "$status" "${out#* }"
[ "$status" = PASS ] || exit "$FAILED"

# 2. the smoke grid on CUDA (sequential)
seq_s=$(timed "$WORK/seq.log" env FEWDIMS_RESULTS="$WORK/seq" FEWDIMS_CACHE="$WORK/seq-cache" \
    $PY -m fewdims grid --profile smoke)
out=$($PY - "$WORK/seq" "$ALLOW_CPU" <<'EOF' 2>&1
import json, sys
from pathlib import Path
recs = [json.loads(p.read_text()) for p in Path(sys.argv[1]).glob("smoke/*/*.json")]
devices = sorted({r["timings"]["device"] for r in recs})
precision = sorted({r["timings"]["mixed_precision"] for r in recs})
ok = recs and (devices == ["cuda"] or sys.argv[2] == "1")
print(("PASS" if ok else "FAIL"), f"{len(recs)} runs on {devices}, precision {precision}, "
      f"{sum(r['timings']['total_s'] for r in recs):.1f} s of run time")
EOF
)
line "smoke grid (sequential)" "${out%% *}" "${out#* }; wall ${seq_s} s"

# 3. two BERT-base-shaped runs, timed
out=$($PY - "$WORK" "$BERT_TRAIN_SIZE" <<'EOF' 2>&1
import os, sys, time
from pathlib import Path
import torch
work, train_size = Path(sys.argv[1]), int(sys.argv[2])
glue = os.environ.get("FEWDIMS_GLUE_DIR") or ("../shared/glue" if Path("../shared/glue/SST-2").is_dir() else None)
if glue is None:
    from fewdims.fixtures import write_tiny_glue
    glue = str(write_tiny_glue(work / "glue", n_train=max(train_size, 64), n_dev=400))
    data = "generated GLUE-shaped data"
else:
    data = f"GLUE at {glue}"
from fewdims.config import RunConfig
from fewdims.models import load_backbone
from fewdims.train import train

model = "bert-base-uncased"
try:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the local cache only: no waiting on an unreachable hub
    load_backbone(model)
    source = "bert-base-uncased (pretrained)"
except Exception:
    # a random BERT-base (768 dims, 12 layers, 12 heads, 3072 FFN, 30,522 vocabulary), a WordPiece tokenizer
    # trained on the runs' own text: the shapes, and so the timings, of the real model
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from fewdims.data import DataSource, load_split
    src = DataSource.resolve(glue)
    text = [t for task in ("sst2", "rte") for column in load_split(task, "train", src).texts for t in column]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(text, trainers.WordPieceTrainer(
        vocab_size=30522, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    model = str(work / "bert-base-random")
    BertTokenizerFast(tokenizer_object=tok, do_lower_case=True).save_pretrained(model)
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(model, safe_serialization=True)
    source = f"random BERT-base (hub unreachable; WordPiece vocabulary of {tok.get_vocab_size()} trained on {len(text)} texts)"
print("INFO", source, "on", data)
for task in ("sst2", "rte"):
    cfg = RunConfig(task=task, model=model, train_size=train_size, epochs=1, batch_size=64, lr=5e-5,
                    max_length=128, precision="auto", seed=0)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        result = train(cfg, glue)
    except Exception as err:  # noqa: BLE001
        print("FAIL", f"{task}: {type(err).__name__}: {err}")
        continue
    wall = time.perf_counter() - t0
    t = result.timings
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    metric = next(iter(result.metrics.values()))
    print("PASS", f"{task}: {t['steps']} steps in {t['train_s']:.1f} s ({t['train_examples_per_s']:.0f} train ex/s, "
          f"{t['eval_examples_per_s']:.0f} eval ex/s), {wall:.1f} s in all, device {t['device']}, "
          f"{t['mixed_precision']}, peak {peak:.1f} GiB, dev {metric}")
EOF
)
while IFS= read -r l; do
    case "$l" in
        INFO*) echo "  ${l#INFO }" ;;
        PASS*|FAIL*) line "bert-base run" "${l%% *}" "${l#* }" ;;
    esac
done <<<"$out"
grep -qE '^(PASS|FAIL)' <<<"$out" || line "bert-base runs" FAIL "$(tail -3 <<<"$out" | tr '\n' ' ')"

# 4. a 2-worker Ray grid on the GPU(s): two runs per GPU when there is one GPU
gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
per_run=1; [ "$gpus" -lt 2 ] && per_run=0.5
[ "$gpus" = 0 ] && per_run=0
ray_s=$(timed "$WORK/ray.log" env FEWDIMS_RESULTS="$WORK/ray" FEWDIMS_CACHE="$WORK/ray-cache" \
    $PY -m fewdims grid --profile smoke --ray --workers 2 --gpus-per-run $per_run --cpus-per-run 1)
out=$($PY - "$WORK/seq" "$WORK/ray" "$ALLOW_CPU" <<'EOF' 2>&1
import json, sys
from pathlib import Path
def load(root):
    return {p.stem: json.loads(p.read_text()) for p in Path(root).glob("smoke/*/*.json")}
seq, ray = load(sys.argv[1]), load(sys.argv[2])
devices = sorted({r["timings"]["device"] for r in ray.values()})
diff = max((abs(a - b) for k in set(seq) & set(ray) for s in ray[k]["metrics"] for m in ray[k]["metrics"][s]
            for a, b in [(ray[k]["metrics"][s][m], seq[k]["metrics"][s][m])]), default=float("nan"))
same = sum(ray[k]["metrics"] == seq[k]["metrics"] for k in set(seq) & set(ray))
ok = ray and set(ray) == set(seq) and (devices == ["cuda"] or sys.argv[3] == "1")
print("PASS" if ok else "FAIL", f"{len(ray)} runs (sequential grid: {len(seq)}) on {devices}; {same} with the "
      f"sequential grid's metrics exactly, largest difference {diff:.3g} (CUDA kernels need not be bitwise "
      "deterministic)")
EOF
)
line "ray grid (2 workers)" "${out%% *}" "${out#* }; wall ${ray_s} s (sequential ${seq_s} s); log: $(grep -m1 '^\[grid\] Ray' "$WORK/ray.log")"
[ "${out%% *}" = PASS ] || tail -5 "$WORK/ray.log"
echo "failed checks: $FAILED"
exit "$FAILED"
