#!/usr/bin/env bash
# One run of rankrun on a lent GPU machine (written for 1 NVIDIA H100, 16 cores, no network).
#
#     OUT=/some/folder bash bench/device_check.sh        # from the repository root
#
# Steps, most telling first, each under `timeout` and capped by what is left of ~9 minutes:
#   setup     a venv holding rankrun (editable) and a CUDA torch: the machine's own torch,
#             seen through a .pth file; pip is tried only where none is found
#   topology  rankrun.plan.topology against torch and nvidia-smi: GPU count under several
#             CUDA_VISIBLE_DEVICES, PCI bus ids, NUMA nodes, the CPU split (needs no CLI flag)
#   nccl      rankrun --nproc-per-node gpu|auto with an NCCL all_reduce: ranks == GPUs, exit 0;
#             and gpu with every GPU hidden: a one-line error, exit != 0
#   bind      --cpu-bind numa with the GPU (each rank's cores, GPU, PCI id), --cpu-bind cores
#             with 4 CPU ranks (equal, disjoint); torchrun --numa-binding node beside it
#   bench     bench/compare.py against torchrun and the bare loop, into $OUT/bench/: the full
#             set (launch rows for 1, 8, 64, 256 ranks, and the rest) where 300 s are left
#   pytest    the test suite, last: a hung test must not starve the rest
# Everything goes to $OUT/device_check.log; a table of the steps comes last.
set -u
: "${OUT:?set OUT to an output folder}"
mkdir -p "$OUT"
BUDGET=${BUDGET:-540}  # seconds for the whole script
REPO=$(pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
RESULTS=()
FAILED=0

# Run "$@" as step $1 under a timeout of at most $2 seconds, and record how it went.
step() {
    local name=$1 cap=$2 left t start rc verdict
    shift 2
    left=$((BUDGET - SECONDS - 5))
    t=$((cap < left ? cap : left))
    if ((t < 15)); then
        RESULTS+=("$(printf '%-9s SKIPPED (time is up)' "$name")")
        FAILED=1
        return 0
    fi
    echo
    echo "=== $name (timeout ${t}s, ${SECONDS}s elapsed) ==="
    start=$SECONDS
    # bash -c: the steps are exported shell functions, which timeout cannot run itself.
    STEP_LEFT=$t timeout -k 5 "$t" bash -c '"$@"' "$name" "$@"
    rc=$?
    case $rc in
        0) verdict=ok ;;
        124 | 137) verdict="TIMED OUT" ;;
        *) verdict="FAILED (exit $rc)" ;;
    esac
    ((rc == 0)) || FAILED=1
    RESULTS+=("$(printf '%-9s %-16s %4ss' "$name" "$verdict" $((SECONDS - start)))")
    return 0
}

header() {
    echo "device_check: $(date -u +%FT%TZ), repo $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
    nvidia-smi 2>&1 | head -20
    nvidia-smi -L 2>&1
    lscpu 2>&1 | grep -E '^(Model name|CPU\(s\)|On-line|Thread|Core|Socket|NUMA)' || lscpu
    echo "nproc: $(nproc); affinity: $(taskset -pc $$ 2>/dev/null | sed 's/.*: //')"
    for f in /proc/driver/nvidia/gpus/*/information; do
        [ -e "$f" ] && { echo "--- $f"; cat "$f"; }
    done
    ls -d /proc/driver/nvidia/gpus/* 2>/dev/null || echo "no /proc/driver/nvidia/gpus"
    ls /dev | grep -E '^nvidia[0-9]+$' || echo "no /dev/nvidiaN"
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] &&
            echo "pci $(basename "$d") class $(cat "$d/class") numa_node $(cat "$d/numa_node")"
    done
    grep -H . /sys/devices/system/node/node*/cpulist 2>/dev/null || echo "no NUMA nodes in sysfs"
    command -v numactl >/dev/null && numactl -H 2>&1 | head -5 || echo "no numactl"
}

torch_python() {  # a python whose torch sees a GPU; DEVICE_CHECK_PYTHON forces one (dry runs)
    local py
    [ -n "${DEVICE_CHECK_PYTHON:-}" ] && echo "$DEVICE_CHECK_PYTHON" && return 0
    for py in python3 /opt/torch/.venv/bin/python3 /usr/local/bin/python3 /usr/bin/python3; do
        py=$(command -v "$py") || continue
        if "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

# Leaves $V/bin/python (rankrun installed, torch importable) and $WORK/path, the PATH to use.
setup() {
    local base site
    if base=$(torch_python); then
        echo "CUDA torch found: $base ($("$base" -c 'import torch; print(torch.__version__)'))"
        echo "$V/bin:$(dirname "$base"):$PATH" >"$WORK/path"  # torchrun is beside $base
        if "$base" -m venv --without-pip "$V"; then
            site=$("$V/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
            # A venv made from a venv's python does not see that venv's packages, even with
            # --system-site-packages; a .pth file naming them does. pip comes from there too.
            "$base" -c 'import site; print("\n".join(site.getsitepackages()))' >"$site/_base.pth"
        else
            echo "no venv module: installing into $base itself"
            mkdir -p "$V/bin" && ln -sf "$base" "$V/bin/python"
        fi
    else
        echo "no python with a CUDA torch here; trying pip (the machine may have no network)"
        echo "$V/bin:$PATH" >"$WORK/path"
        python3 -m venv "$V" || return 1
        timeout 120 "$V/bin/python" -m pip install -q --timeout 15 --retries 1 torch pytest ||
            echo "SETUP FAILED: pip could not install a CUDA torch; the GPU steps will fail"
    fi
    "$V/bin/python" -m pip install -q --no-deps --no-build-isolation --no-index -e "$REPO" ||
        "$V/bin/python" -m pip install -q -e "$REPO" || return 1
    export PATH=$(cat "$WORK/path")
    "$V/bin/python" -c 'import rankrun, torch; print("rankrun", rankrun.__file__, "torch",
        torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())'
    command -v rankrun torchrun
}

write_scripts() {
    cat >"$WORK/allreduce.py" <<'EOF'
import os, sys
import torch
import torch.distributed as dist

local = int(os.environ["LOCAL_RANK"])
torch.cuda.set_device(local)
dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
x = torch.full((1 << 20,), float(rank + 1), device="cuda")
dist.all_reduce(x)
torch.cuda.synchronize()
ok = bool((x == world * (world + 1) / 2).all())
print(f"ALLREDUCE rank={rank} world={world} local={local} "
      f"gpus={torch.cuda.device_count()} ok={ok}", flush=True)
dist.destroy_process_group()
sys.exit(0 if ok else 1)
EOF
    cat >"$WORK/where.py" <<'EOF'
import os

def ranges(cpus):
    out, run = [], []
    for c in sorted(cpus):
        if run and c != run[-1] + 1:
            out.append(run); run = []
        run.append(c)
    out += [run] if run else []
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in out)

mine = os.sched_getaffinity(0)
usable = {int(c) for c in os.environ.get("CHECK_USABLE", "").split(",") if c}
line = (f"BIND local={os.environ['LOCAL_RANK']} cpus={ranges(mine)} n={len(mine)} "
        f"of={len(usable)} omp={os.environ.get('OMP_NUM_THREADS')}")
if os.environ.get("CHECK_GPU") == "1":
    import torch
    local = int(os.environ["LOCAL_RANK"])
    p = torch.cuda.get_device_properties(local)
    pci = f"{p.pci_domain_id:04x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
    try:
        node = int(open(f"/sys/bus/pci/devices/{pci}/numa_node").read())
    except OSError:
        node = None
    try:
        near = open(f"/sys/devices/system/node/node{max(node or 0, 0)}/cpulist").read().strip()
    except OSError:
        near = ""
    line += f" gpu={local} name={p.name!r} pci={pci} gpu_numa={node} node_cpus={near or '?'}"
    if os.environ.get("CHECK_NUMA") == "1" and near and node is not None and node >= 0:
        want = set()
        for part in near.split(","):
            lo, _, hi = part.partition("-")
            want |= set(range(int(lo), int(hi or lo) + 1))
        line += f" match={mine == want & usable}"  # the GPU's node, within the affinity
print(line, flush=True)
EOF
    cat >"$WORK/topology_vs_torch.py" <<'EOF'
import os, time
t0 = time.perf_counter()
from rankrun.plan import topology as tp
from rankrun.plan.binding import bind_cpus
t1 = time.perf_counter()
g = tp.gpus(os.environ)
t2 = time.perf_counter()
topo = tp.cpu_topology()
t3 = time.perf_counter()
import torch
bad = 0
print(f"import rankrun.plan.topology {(t1 - t0) * 1e3:.2f} ms (the package with it), "
      f"gpus() {(t2 - t1) * 1e3:.2f} ms, cpu_topology() {(t3 - t2) * 1e3:.2f} ms")
print(f"gpus: {g}")
print(f"count_gpus {tp.count_gpus(os.environ)}, torch.cuda.device_count {torch.cuda.device_count()}")
bad += tp.count_gpus(os.environ) != torch.cuda.device_count()
for gpu in g:
    p = torch.cuda.get_device_properties(gpu.index)
    pci = f"{p.pci_domain_id:04x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
    print(f"cuda:{gpu.index} {p.name}: torch pci {pci}, rankrun {gpu.pci_bus_id}, "
          f"numa {gpu.numa_node}, same={pci == gpu.pci_bus_id}")
    bad += pci != gpu.pci_bus_id
print(f"cpus {len(topo.cpus)} (affinity {len(os.sched_getaffinity(0))}), "
      f"physical cores {len(topo.cores)}, nodes {[(n, len(c)) for n, c in topo.nodes.items()]}")
bad += topo.cpus != os.sched_getaffinity(0)
for kind in ("auto", "cpu", "gpu", "xpu"):
    try:
        print(f"nproc_auto({kind!r}) = {tp.nproc_auto(kind, os.environ)}")
    except ValueError as e:
        print(f"nproc_auto({kind!r}): ValueError: {e}")
n = max(len(g), 4)
for mode in ("none", "cores", "numa"):
    print(f"bind_cpus({mode!r}, {n}): {[sorted(s) for s in bind_cpus(mode, n, topo, g)]}")
raise SystemExit(1 if bad else 0)
EOF
    # CUDA_VISIBLE_DEVICES as rankrun reads it, as torch's NVML copy of CUDA's rules reads it,
    # and as the CUDA runtime itself does (the truth; only that one must match).
    cat >"$WORK/visible.py" <<'EOF'
import os, torch
from rankrun.plan.topology import count_gpus
spec = os.environ["CUDA_VISIBLE_DEVICES"]
try:
    ours = count_gpus(os.environ)
except ValueError as e:
    ours = f"ValueError({e})"
runtime = getattr(torch._C, "_cuda_getDeviceCount", lambda: 0)()
print(f"CUDA_VISIBLE_DEVICES={spec!r}: rankrun {ours}, torch {torch.cuda.device_count()}, "
      f"CUDA runtime {runtime}", "" if ours == runtime else "MISMATCH")
raise SystemExit(ours != runtime)
EOF
    cat >"$WORK/check_cores.py" <<'EOF'
import re, sys
sets = []
for line in open(sys.argv[1]):
    m = re.search(r"BIND local=(\d+) cpus=(\S+)", line)
    if m:
        cpus = set()
        for part in m.group(2).split(","):
            lo, _, hi = part.partition("-")
            cpus |= set(range(int(lo), int(hi or lo) + 1))
        sets.append(cpus)
want = int(sys.argv[2])
equal = len({len(s) for s in sets}) == 1
disjoint = sum(map(len, sets)) == len(set().union(*sets)) if sets else False
print(f"cores: {len(sets)} ranks of {want}, sizes {[len(s) for s in sets]}, "
      f"equal={equal} disjoint={disjoint}")
sys.exit(0 if len(sets) == want and equal and disjoint else 1)
EOF
}

topology_check() {
    local spec uuid rc=0
    "$V/bin/python" "$WORK/topology_vs_torch.py" || rc=1
    uuid=$(nvidia-smi -L 2>/dev/null | grep -o 'GPU-[0-9a-f-]*' | head -1)
    for spec in "" "-1" "0" "0,0" "0,1" "1gpu" "${uuid:0:12}" "$uuid,0" "GPU-f00"; do
        CUDA_VISIBLE_DEVICES=$spec "$V/bin/python" "$WORK/visible.py" || rc=1
    done
    return $rc
}

nccl_check() {
    local ngpu out rc=0 hidden
    ngpu=$(nvidia-smi -L | grep -c '^GPU ')
    echo "nvidia-smi lists $ngpu GPU(s)"
    for kind in gpu auto; do
        echo "--- rankrun --standalone --nproc-per-node $kind allreduce.py"
        out=$(rankrun --standalone --nproc-per-node "$kind" "$WORK/allreduce.py" 2>&1)
        echo "$out (exit $?)"
        if [ "$(grep -c 'ALLREDUCE.*ok=True' <<<"$out")" != "$ngpu" ] ||
            ! grep -q "world=$ngpu " <<<"$out"; then
            echo "NCCL CHECK FAILED for --nproc-per-node $kind: want $ngpu ranks, all ok"
            rc=1
        fi
    done
    echo "--- the same with every GPU hidden: want one line of error, no rank, exit != 0"
    out=$(CUDA_VISIBLE_DEVICES= rankrun --standalone --nproc-per-node gpu "$WORK/allreduce.py" 2>&1)
    hidden=$?
    echo "$out (exit $hidden)"
    if ((hidden == 0)) || grep -q ALLREDUCE <<<"$out" || [ "$(wc -l <<<"$out")" != 1 ]; then
        echo "NOT AS WANTED"
        rc=1
    fi
    return $rc
}

bind_check() {
    local rc=0 out
    CHECK_USABLE=$("$V/bin/python" -c 'import os; print(",".join(map(str, sorted(os.sched_getaffinity(0)))))')
    export CHECK_USABLE
    echo "--- rankrun --cpu-bind numa, one rank per GPU"
    out=$(CHECK_GPU=1 CHECK_NUMA=1 rankrun --standalone --nproc-per-node gpu --cpu-bind numa \
        "$WORK/where.py" 2>&1) || rc=1
    echo "$out"
    grep -q "match=False" <<<"$out" && echo "A RANK IS NOT ON ITS GPU'S NODE" && rc=1
    echo "--- rankrun --cpu-bind cores, 4 CPU ranks"
    out=$(rankrun --standalone --nproc-per-node 4 --cpu-bind cores "$WORK/where.py" 2>&1) || rc=1
    echo "$out" >"$WORK/cores.txt"
    echo "$out"
    "$V/bin/python" "$WORK/check_cores.py" "$WORK/cores.txt" 4 || rc=1
    echo "--- rankrun --cpu-bind none, 2 CPU ranks"
    rankrun --standalone --nproc-per-node 2 --cpu-bind none "$WORK/where.py" || rc=1
    echo "--- torchrun --numa-binding node, for comparison (needs numactl; not counted)"
    CHECK_GPU=1 timeout 90 torchrun --standalone --nproc-per-node gpu --numa-binding node \
        "$WORK/where.py" 2>&1 | grep -E 'BIND|Error|error' | head -20
    return $rc
}

run_tests() {  # a hung test fails alone where pytest-timeout is there (it is on the image)
    local per_test=()
    "$V/bin/python" -c 'import pytest_timeout' 2>/dev/null && per_test=(--timeout=60)
    cd "$REPO" && "$V/bin/python" -m pytest -q -p no:cacheprovider "${per_test[@]}" tests
}

bench() {
    cd "$REPO" || return 1
    if "$V/bin/python" bench/compare.py --help | grep -q -- '--launch-only'; then
        "$V/bin/python" bench/compare.py --launch-only --results "$OUT/bench"
    elif ((STEP_LEFT > 300)); then
        "$V/bin/python" bench/compare.py --results "$OUT/bench"  # every row; 1, 8, 64, 256 ranks
    else
        echo "too little time left for the full set: --quick (1 and 8 ranks only)"
        "$V/bin/python" bench/compare.py --quick --results "$OUT/bench"
    fi
}

main() {
    export V=$WORK/venv WORK REPO OUT
    export -f header torch_python setup topology_check nccl_check bind_check bench run_tests
    write_scripts
    step header 30 header
    step setup 150 setup
    [ -f "$WORK/path" ] && PATH=$(cat "$WORK/path") && export PATH
    command -v rankrun >/dev/null || echo "rankrun is not installed: the steps below will fail"
    step topology 90 topology_check
    step nccl 120 nccl_check
    step bind 120 bind_check
    step bench 330 bench
    step pytest 150 run_tests
    echo
    echo "=== summary ($SECONDS s) ==="
    printf '%s\n' "${RESULTS[@]}"
    return $FAILED
}

main 2>&1 | tee "$OUT/device_check.log"
exit "${PIPESTATUS[0]}"
