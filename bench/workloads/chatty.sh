#!/bin/bash
# BENCH_LINES lines of 100 bytes each (20 MB for 200000).
yes "$(printf '%099d' "$RANK")" | head -n "${BENCH_LINES:-200000}"
