#!/bin/bash
# Every rank starts a helper and blocks; once all are up, rank 1 notes the time and exits 3.
sleep 1000 &
touch "$BENCH_DIR/up.$RANK"
if [ "$RANK" = 1 ]; then
    while [ "$(ls "$BENCH_DIR" | grep -c '^up\.')" -lt "$WORLD_SIZE" ]; do sleep 0.01; done
    printf '%s' "$EPOCHREALTIME" > "$BENCH_DIR/died"
    exit 3
fi
wait
