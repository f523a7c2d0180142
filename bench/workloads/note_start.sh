#!/bin/bash
# Notes the wall-clock time it started, then exits 0: the multi-node launch rows.
printf '%s' "$EPOCHREALTIME" > "$BENCH_DIR/started.$RANK"
