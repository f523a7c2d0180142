#!/bin/bash
# Blocks with a helper child, as a rank with a DataLoader worker does.
sleep 1000 &
touch "$BENCH_DIR/up.$RANK"
wait
