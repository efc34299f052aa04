#!/usr/bin/env bash
# Build .whl/ (git-ignored): the cp312 manylinux x86_64 wheels the lent GPU machine lacks, Ray trimmed
# to fit the 64 MiB a device call carries; prints each wheel, the total and what the image already has.
# Run it in the checkout the device tool sends. Arguments go to bench/device_bundle.py, e.g.
#   bash bench/device_bundle.sh                                   # .whl/ for the GPU machine
#   bash bench/device_bundle.sh --python-version 3.11 --out /tmp/bundle311 && \
#     bash bench/device_bundle.sh prove --bundle /tmp/bundle311   # the local proof (ray start, TorchTrainer)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" bench/device_bundle.py "$@"
