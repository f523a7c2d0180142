"""Stacks digested and grouped: py-spy's and faulthandler's words read the same, the odd rank
out comes first, and the verdict stays a few lines at 512 ranks."""

from __future__ import annotations

import json

from rankrun.inspect.digest import (
    MAX_BYTES,
    RankKey,
    digest,
    from_json,
    group,
    verdict_lines,
)
from rankrun.inspect.flight_recorder import Collective, behind_lines
from rankrun.output.rank_ranges import fold

SITE = "/venv/lib/python3.11/site-packages"
PY_SPY = f"""Thread 5039 (idle): "MainThread"
    all_reduce ({SITE}/torch/distributed/distributed_c10d.py:3252)
    _exception_logger.<locals>.wrapper ({SITE}/torch/distributed/c10d_logger.py:83)
    train (/home/u/job/train.py:17)
    <module> (/home/u/job/train.py:20)
Thread 5050 (idle): "Thread-1"
    wait (/usr/lib/python3.11/threading.py:320)
"""
DUMP_TRACEBACK = f"""Current thread 0x00007fb97e5286c0 (most recent call first):
  <no Python frame>

Thread 0x00007fb9a0c1db80 (most recent call first):
  File "{SITE}/torch/distributed/distributed_c10d.py", line 3252 in all_reduce
  File "{SITE}/torch/distributed/c10d_logger.py", line 83 in wrapper
  File "/other/checkout/train.py", line 17 in train
  File "/other/checkout/train.py", line 20 in <module>
"""
LOADING = """Thread 1 (idle): "MainThread"
    load_batch (train.py:9)
    train (train.py:16)
    <module> (train.py:20)
"""


def test_both_tools_words_give_one_digest_of_the_main_thread() -> None:
    assert digest(PY_SPY) == digest(DUMP_TRACEBACK)
    assert [f.function for f in digest(PY_SPY)] == ["all_reduce", "wrapper", "train", "<module>"]
    assert digest(PY_SPY)[0].file == "torch/distributed/distributed_c10d.py"
    assert digest("") == ()


def test_the_odd_rank_out_comes_first_and_ranks_fold() -> None:
    digests = {RankKey(r): digest(PY_SPY) for r in range(16) if r != 13}
    digests[RankKey(13, 1, "h1")] = digest(LOADING)
    assert verdict_lines(group(digests)) == [
        "rank 13 (node 1, host h1): load_batch (train.py:9) <- train (train.py:16)",
        "ranks 0-12,14-15: all_reduce (torch/distributed/distributed_c10d.py:3252)"
        " <- train (train.py:17)",
    ]


def test_at_512_ranks_the_verdict_stays_a_few_short_lines() -> None:
    stacks = {r: LOADING.replace(":9)", f":{r % 50})") for r in range(512)}
    digests = {RankKey(r, r // 8): digest(text) for r, text in stacks.items()}
    lines = verdict_lines(group(digests))
    assert len(lines) == 7 and lines[-1] == "and 44 more group(s) of 452 rank(s)"
    assert all(len(line) < 140 for line in lines)
    assert fold(range(0, 1024, 2)).endswith(",... (496 more)")


def test_a_digest_is_capped_and_travels_as_json() -> None:
    deep = "".join(f"    f{i} ({'x' * 200}/lib{i}.py:{i})\n" for i in range(100))
    frames = digest('Thread 1 (idle): "MainThread"\n' + deep)
    assert 0 < len(frames) <= 24
    text = json.dumps([f._asdict() for f in frames])
    assert len(text) <= MAX_BYTES and from_json(json.loads(text)) == frames


def test_the_ranks_behind_on_the_collective_sequence_are_named() -> None:
    behind = {RankKey(r): Collective(641, "all_reduce", False) for r in range(16) if r != 13}
    behind[RankKey(13)] = Collective(640, "all_reduce", True)
    assert behind_lines(behind) == [
        "rank 13 never entered all_reduce #641 (ranks 0-12,14-15 wait in it)"
    ]
    assert behind_lines({}) == []
