#!/bin/bash
# fail.sh across nodes: every rank starts a helper and blocks; once all are up, the last rank
# (on the last node) notes the time and exits 3. The nodes share BENCH_DIR: one host.
sleep 1000 &
touch "$BENCH_DIR/up.$RANK"
if [ "$RANK" = $((WORLD_SIZE - 1)) ]; then
    while [ "$(ls "$BENCH_DIR" | grep -c '^up\.')" -lt "$WORLD_SIZE" ]; do sleep 0.01; done
    printf '%s' "$EPOCHREALTIME" > "$BENCH_DIR/died"
    exit 3
fi
wait
