"""Across nodes: one job, one failure domain, one report. Several agents, real TCPStores."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Runs, process_state, tagged_pids, wait_gone, wait_until
from netns import make_hosts_fixture  # noqa: F401
from test_gang_end_to_end import _wait_state, start_as_a_shell_job

from rankrun.plan.ports import free_port

pytest.importorskip("torch")

# A gloo rank: all_reduce, then fail if told to, then hold (HOLD seconds, or until the file
# UNTIL exists), then meet in a barrier.
# Every gloo script here destroys its group: torch aborts a rank that exits with it alive.
RANK = """
import os, sys, time
import torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, attempt = dist.get_rank(), os.environ["TORCHELASTIC_RESTART_COUNT"]
total = torch.tensor([float(rank)])
dist.all_reduce(total)
print(f"rank {rank} attempt {attempt} sum {total.item():g}", flush=True)
open(f"up.{rank}.{attempt}", "w").close()
if os.environ.get("FAIL_RANK") == str(rank) and attempt in os.environ.get("FAIL_IN", "0"):
    time.sleep(0.3)
    sys.exit(7)
time.sleep(float(os.environ.get("HOLD", "0")))
while os.environ.get("UNTIL") and not os.path.exists(os.environ["UNTIL"]):
    time.sleep(0.05)
dist.barrier()
dist.destroy_process_group()
"""


class Job:
    """Agents of one job on this host, each a rankrun with its own --node-rank."""

    def __init__(self, runs: Runs, nnodes: int, *flags: str, addr: str = "127.0.0.1") -> None:
        self.runs, self.nnodes = runs, nnodes
        self.port = str(free_port())
        self.common = ["--nnodes", str(nnodes), "--master-addr", addr, "--master-port",
                       self.port, *flags]  # fmt: skip
        runs.script("rank.py", RANK, executable=False)
        self.agents: list[subprocess.Popen[str]] = []

    def argv(self, node: int, *extra: str) -> list[str]:
        return [*self.common, "--node-rank", str(node), *extra, "rank.py"]

    def start(self, node: int, *extra: str, **env: str) -> subprocess.Popen[str]:
        self.runs.env.update(env)
        agent = self.runs.start(*self.argv(node, *extra))
        self.agents.append(agent)
        return agent

    def start_all(self, **env: str) -> list[subprocess.Popen[str]]:
        return [self.start(node, **env) for node in range(self.nnodes)]

    def finish(self, timeout: float = 90) -> list[tuple[int, str]]:
        """Each agent's exit code and stderr, in the order started."""
        return [(a.wait(timeout), a.communicate()[1]) for a in self.agents]


def _last(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("rankrun: ")]


@pytest.mark.parametrize("nodes", [2, 3])
@pytest.mark.slow
def test_nodes_train_and_end_with_the_same_weights(runs: Runs, nodes: int) -> None:
    demo = Path(__file__).parents[1] / "examples" / "train_ddp.py"
    port = str(free_port())
    flags = ["--nnodes", str(nodes), "--master-port", port]
    agents = [
        runs.start(*flags, "--node-rank", str(node), str(demo), "--steps", "5")
        for node in range(nodes)
    ]
    outs = [a.communicate(timeout=120) for a in agents]
    assert [a.returncode for a in agents] == [0] * nodes, [err[-2000:] for _, err in outs]
    assert sum(out.count("weights match rank 0") for out, _ in outs) == nodes


@pytest.mark.slow
def test_a_failure_on_one_node_ends_every_node_with_its_code(runs: Runs) -> None:
    job = Job(runs, 2, "--nproc-per-node", "2", "--summary-json", "s.json")
    job.start_all(FAIL_RANK="3", HOLD="60")
    (code0, err0), (code1, err1) = job.finish()
    assert (code0, code1) == (7, 7), err0
    report = err0[err0.index("root cause") :]
    assert report.startswith("root cause: rank 3 (local rank 1, node 1, host ")
    assert "node 0 (" in report and "node 1 (" in report
    assert "Connection closed" not in report
    assert "the job ended: rank 3 on node 1" in _last(err1)[-1]
    both = json.loads((runs.workdir / "s.json").read_text())
    assert both["root_cause"]["rank"] == 3 and both["root_cause"]["node_rank"] == 1
    assert "exit(7)" in both["root_cause"]["error"] or both["root_cause"]["exit_code"] == 7
    assert [n["node_rank"] for n in both["nodes"]] == [0, 1]
    assert [r["rank"] for r in both["attempts"][-1]["ranks"]] == [0, 1, 2, 3]
    # one node, the same failure: the same schema
    one = runs.gang(4, "--summary-json", "one.json", "rank.py")  # FAIL_RANK=3 is still set
    assert one.returncode == 7, one.stderr
    alone = json.loads((runs.workdir / "one.json").read_text())
    assert _schema(alone) == _schema(both)


def _schema(summary: dict) -> dict:
    """The keys of a summary, its root cause, its attempts, its rank rows and its nodes."""
    attempt = summary["attempts"][-1]
    return {
        "top": sorted(summary),
        "root_cause": sorted(summary["root_cause"]),
        "attempt": sorted(attempt),
        "rank": sorted(attempt["ranks"][0]),
        "node": sorted(summary["nodes"][0]),
    }


@pytest.mark.parametrize("what", ["nproc", "node_rank", "command"])
@pytest.mark.slow
def test_nodes_that_disagree_all_stop_with_the_same_line(runs: Runs, what: str) -> None:
    if what == "command":
        job = Job(runs, 2)
        for node, lr in ((0, "0.1"), (1, "0.2")):
            job.agents.append(runs.start(*job.argv(node), "--lr", lr))
        expected = (
            'the training command differs: node 0 runs "rank.py --lr 0.1", '
            'node 1 runs "rank.py --lr 0.2"'
        )
    elif what == "nproc":
        job = Job(runs, 2)
        job.start(0, "--nproc-per-node", "1")
        job.start(1, "--nproc-per-node", "2")
        expected = "--nproc-per-node: node 0 has 1, node 1 has 2"
    else:
        job = Job(runs, 3)
        for node in (0, 1, 1):
            job.start(node)
        expected = "--node-rank 1 is claimed by two agents"
    results = job.finish()
    assert {code for code, _ in results} == {2}
    lines = {err.strip().splitlines()[-1] for _, err in results}
    assert len(lines) == 1, lines
    assert expected in lines.pop()
    assert not list(runs.workdir.glob("up.*")), "no rank started"


@pytest.mark.slow
def test_an_agent_of_another_job_is_told_and_changes_nothing(runs: Runs) -> None:
    job = Job(runs, 2, "--run-id", "ours")
    job.start_all(HOLD="3")
    runs.wait_for_files("up.*", 2, timeout=60)
    stranger = runs.run(*job.argv(1)[:-1], "--run-id", "theirs", "rank.py", timeout=60)
    assert stranger.returncode == 2
    assert "is held by rankrun job ours" in stranger.stderr
    assert [code for code, _ in job.finish()] == [0, 0]


@pytest.mark.slow
def test_garbage_on_the_port_does_not_disturb_the_job(runs: Runs) -> None:
    job = Job(runs, 2)
    job.start_all(HOLD="2")
    runs.wait_for_files("up.*", 2, timeout=60)
    import socket

    for junk in (b"GET / HTTP/1.0\r\n\r\n", bytes(range(256)) * 8):
        with socket.create_connection(("127.0.0.1", int(job.port))) as s:
            s.sendall(junk)
    assert [code for code, _ in job.finish()] == [0, 0]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP])
@pytest.mark.slow
def test_a_lost_node_is_noticed_and_ends_the_job(runs: Runs, how: int) -> None:
    job = Job(runs, 2, "--node-timeout", "2", "--shutdown-timeout", "2")
    node0, node1 = job.start_all(HOLD="120")
    runs.wait_for_files("up.*", 2, timeout=60)
    started = time.monotonic()
    node1.send_signal(how)
    code0 = node0.wait(timeout=30)
    took = time.monotonic() - started
    err0 = node0.communicate()[1]
    if how == signal.SIGSTOP:
        node1.send_signal(signal.SIGCONT)  # it finds itself cut off, and ends its ranks
        assert node1.wait(timeout=30) != 0
    assert code0 == 1
    assert "node 1 (" in err0 and "lost: no heartbeat for 2 s" in err0
    assert took < 2 + 5, took
    assert wait_gone(runs.tag, timeout=10) == []


@pytest.mark.slow
def test_ctrl_c_on_any_node_ends_the_job_on_every_node(runs: Runs) -> None:
    job = Job(runs, 2)
    node0, node1 = job.start_all(HOLD="120")
    runs.wait_for_files("up.*", 2, timeout=60)
    node1.send_signal(signal.SIGINT)
    (code0, err0), (code1, err1) = job.finish(timeout=30)
    assert (code0, code1) == (130, 130)
    assert "stopped: interrupted on node 1" in err0
    assert "the job ended: interrupted on node 1" in err1


@pytest.mark.slow
def test_a_nodes_own_copy_of_the_jobs_signal_leaves_its_ranks_their_grace(runs: Runs) -> None:
    # A scheduler signals every node, and another node's word may arrive first.
    runs.script("rank.sh", """
        save=0.2; [ "$RANK" -lt 2 ] && save=2  # node 0's ranks still save when its copy comes
        trap 'sleep $save; touch saved.$RANK; exit 0' TERM
        touch up.$RANK
        while :; do sleep 0.1; done
    """)  # fmt: skip
    flags = ["--nnodes", "2", "--nproc-per-node", "2", "--master-port", str(free_port())]
    node0, node1 = (runs.start(*flags, "--node-rank", str(n), "./rank.sh") for n in (0, 1))
    runs.wait_for_files("up.*", 4)
    node1.send_signal(signal.SIGTERM)
    runs.wait_for_files("saved.[23]", 2)  # node 0 began its teardown at node 1's word
    node0.send_signal(signal.SIGTERM)
    (_, err0), (_, err1) = node0.communicate(timeout=30), node1.communicate(timeout=30)
    assert (node0.returncode, node1.returncode) == (143, 143), err0 + err1
    assert "got SIGTERM here too; the teardown goes on" in err0
    assert sorted(p.name for p in runs.workdir.glob("saved.*")) == [f"saved.{r}" for r in range(4)]


@pytest.mark.slow
def test_no_thread_of_an_agent_takes_a_sigtstp_from_the_loop(runs: Runs) -> None:
    # A thread that does not block SIGTSTP would take it first, on the path that can lose a fg.
    runs.script("rank.sh", "touch up.$RANK\nwhile [ ! -e go ]; do sleep 0.05; done\n")
    flags = ["--nnodes", "2", "--master-port", str(free_port()), "./rank.sh"]
    nodes = [runs.start("--node-rank", str(n), *flags) for n in (0, 1)]
    runs.wait_for_files("up.*", 2)
    for node in nodes:
        for status in Path(f"/proc/{node.pid}/task").glob("*/status"):
            text = status.read_text()
            blocked = int(text.split("SigBlk:")[1].split()[0], 16)
            name = text.split()[1]
            assert blocked & 1 << (signal.SIGTSTP - 1), f"{name} of node {nodes.index(node)}"
    (runs.workdir / "go").touch()
    assert [node.wait(timeout=30) for node in nodes] == [0, 0]


@pytest.mark.slow
def test_a_signal_during_a_failures_teardown_ends_the_job_without_restart(runs: Runs) -> None:
    runs.script("rank.sh", """
        trap 'touch term.$RANK; sleep 2; exit 0' TERM  # a slow teardown
        touch up.$RANK.$TORCHELASTIC_RESTART_COUNT
        [ "$RANK$TORCHELASTIC_RESTART_COUNT" = 30 ] && {
            while [ "$(ls up.*.0 2>/dev/null | wc -l)" -lt 4 ]; do sleep 0.01; done
            exit 1
        }
        while :; do sleep 0.1; done
    """)  # fmt: skip
    flags = ["--nnodes", "2", "--nproc-per-node", "2", "--max-restarts", "1",
             "--master-port", str(free_port()), "./rank.sh"]  # fmt: skip
    node0, node1 = (runs.start("--node-rank", str(n), *flags) for n in (0, 1))
    runs.wait_for_files("up.*.0", 4)
    runs.wait_for_files("term.[012]", 3)  # rank 3 has failed: every rank is in its 2 s teardown
    node1.send_signal(signal.SIGTERM)
    (_, err0), (_, err1) = node0.communicate(timeout=30), node1.communicate(timeout=30)
    assert "got SIGTERM during the teardown" in err1
    assert "restart" not in err0 + err1
    assert not list(runs.workdir.glob("up.*.1"))
    assert node0.returncode != 0 and node1.returncode != 0


@pytest.mark.slow
def test_ctrl_z_stops_a_node_that_waits_for_the_others(runs: Runs) -> None:
    runs.script("rank.sh", """
        [ "$RANK" = 0 ] && { echo $$ > pid.tmp && mv pid.tmp pid.0; exit 0; }
        touch waiting
        while [ ! -e go ]; do sleep 0.05; done
    """)  # fmt: skip
    flags = ["--nnodes", "2", "--master-port", str(free_port()), "./rank.sh"]
    node0 = start_as_a_shell_job(runs, "--node-rank", "0", *flags)
    node1 = runs.start("--node-rank", "1", *flags)
    runs.wait_for_files("waiting", 1)
    (pid_file,) = runs.wait_for_files("pid.0", 1)
    rank0 = int(pid_file.read_text())
    # Once its rank is reaped, node 0 has no rank left: its agent waits for node 1's.
    wait_until(lambda: process_state(rank0) is None, 10, "node 0 to reap its rank")
    node0.send_signal(signal.SIGTSTP)
    assert _wait_state([node0.pid], "T"), "Ctrl-Z must stop a node with no ranks left"
    node0.send_signal(signal.SIGCONT)
    assert _wait_state([node0.pid], "S")
    (runs.workdir / "go").touch()
    assert node0.wait(timeout=30) == 0, node0.communicate()[1]
    assert node1.wait(timeout=30) == 0, node1.communicate()[1]


@pytest.mark.slow
def test_restarts_are_job_wide(runs: Runs) -> None:
    job = Job(runs, 2, "--max-restarts", "1")
    job.start_all(FAIL_RANK="1", FAIL_IN="0")
    results = job.finish()
    assert [code for code, _ in results] == [0, 0], results[0][1]
    assert sorted(p.name for p in runs.workdir.glob("up.*")) == [
        "up.0.0", "up.0.1", "up.1.0", "up.1.1",
    ]  # fmt: skip
    assert all("restart 1 of 1" in err for _, err in results)


@pytest.mark.slow
def test_an_agents_guardian_is_forked_before_torchs_import(runs: Runs) -> None:
    """A guardian without torch in its memory forks and exits in a fraction of the time: 8
    agents' guardians with it took a third of the CPU of a failure's teardown."""
    job = Job(runs, 2)
    agents = job.start_all(UNTIL="done")
    wait_until(lambda: len(list(runs.workdir.glob("up.*"))) == 2, 60, "both ranks up")
    guards = [pid for pid in tagged_pids(runs.tag) if _comm(pid) == "rankrun-guard"]
    assert len(guards) == 2, guards
    assert all(_maps_torch(agent.pid) for agent in agents)
    assert not any(_maps_torch(pid) for pid in guards)
    (runs.workdir / "done").touch()
    assert [code for code, _ in job.finish()] == [0, 0]


def _maps_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return "libtorch" in f.read()


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


@pytest.mark.slow
def test_node_0_closes_a_successful_job_with_one_line_and_quiet_with_none(runs: Runs) -> None:
    job = Job(runs, 2, "--nproc-per-node", "2")
    job.start_all()
    (code0, err0), (code1, err1) = job.finish()
    assert (code0, code1) == (0, 0), err0
    took = re.fullmatch(r"rankrun: 4 ranks on 2 nodes exited 0 in (\d+\.\d) s", _last(err0)[-1])
    assert took and float(took[1]) < 60, err0
    assert "exited 0" not in err1, "node 0 has the report"
    quiet = Job(runs, 2, "--nproc-per-node", "2", "--quiet")
    quiet.start_all()
    # Only rankrun's own lines are counted: a rank may warn (torch without NumPy does).
    assert [(code, _last(err)) for code, err in quiet.finish()] == [(0, []), (0, [])]


def test_without_torch_a_multi_node_run_is_one_line(runs: Runs, tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no torch here')\n")
    runs.env["PYTHONPATH"] = str(fake.parent)
    runs.script("rank.sh", "touch ran\n")
    result = runs.run("--nnodes", "2", "--node-rank", "0", "--master-port", str(free_port()),
                      "./rank.sh")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "rankrun: error: --nnodes 2 needs torch, to coordinate the nodes: pip install torch"
    ]


@pytest.mark.slow
def test_a_partition_ends_the_ranks_on_both_sides(runs: Runs, make_hosts) -> None:  # type: ignore[no-untyped-def]
    hosts = make_hosts(2)
    port = str(free_port())
    runs.script("rank.py", RANK, executable=False)
    runs.env.update(HOLD="120", GLOO_SOCKET_IFNAME="eth0")  # the hosts' one interface
    agents = []
    for node in range(2):
        argv = runs.argv("--nnodes", "2", "--node-rank", str(node), "--master-addr",
                         hosts.addrs[0], "--master-port", port, "--node-timeout", "2",
                         "--shutdown-timeout", "2", "rank.py")  # fmt: skip
        agents.append(subprocess.Popen(hosts.argv(node, argv), env=runs.env, cwd=runs.workdir,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True))  # fmt: skip
    runs.wait_for_files("up.*", 2, timeout=60)
    hosts.link_down(1)
    started = time.monotonic()
    codes = [a.wait(timeout=30) for a in agents]
    assert time.monotonic() - started < 2 + 2 + 5
    errs = [a.communicate()[1] for a in agents]
    assert codes == [1, 1], errs
    assert "node 1 (" in errs[0] and "lost" in errs[0]
    assert "cut off from the job's store" in errs[1]
    assert wait_gone(runs.tag, timeout=10) == []


@pytest.mark.slow
def test_every_node_logs_under_node_0s_run_id(runs: Runs) -> None:
    job = Job(runs, 2, "--log-dir", "logs")
    job.start_all()
    assert [code for code, _ in job.finish()] == [0, 0]
    (run_dir,) = (runs.workdir / "logs").iterdir()
    assert sorted(p.name for p in (run_dir / "attempt_0").iterdir()) == ["rank_0", "rank_1"]
    assert (run_dir / "events.log").read_text().count("logs in logs/") == 2, "one per node"


# Notes its environment, then raises under torch's @record with its stderr gone, so that
# the error can reach the report only through TORCHELASTIC_ERROR_FILE.
RECORDED_RANK = """
import json, os
from torch.distributed.elastic.multiprocessing.errors import record

@record
def main():
    with open(f"tmp.{os.environ['RANK']}", "w") as f:
        json.dump(dict(os.environ), f)
    os.rename(f"tmp.{os.environ['RANK']}", f"env.{os.environ['RANK']}")
    if os.environ["RANK"] == "1":
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        raise ValueError("shard 7 is missing")

main()
"""


@pytest.mark.slow
def test_ranks_on_every_node_get_an_error_file_and_the_env_dry_run_shows(runs: Runs) -> None:
    runs.script("recorded.py", RECORDED_RANK, executable=False)
    job = Job(runs, 2, "--run-id", "rec")
    shown = [_dry_run_env(runs, job.argv(node)[:-1] + ["recorded.py"]) for node in (0, 1)]
    for node in (0, 1):
        job.agents.append(runs.start(*job.argv(node)[:-1], "recorded.py"))
    (code0, err0), (code1, err1) = job.finish()
    assert (code0, code1) == (1, 1), err0
    assert "ValueError: shard 7 is missing" in err0[err0.index("root cause") :]
    anew = (
        "MASTER_PORT",
        "RANKRUN_RUN_TOKEN",
        "TORCHELASTIC_ERROR_FILE",
        "TORCH_WORKER_SERVER_SOCKET",
    )
    for rank in (0, 1):
        real = json.loads((runs.workdir / f"env.{rank}").read_text())
        assert real["TORCHELASTIC_ERROR_FILE"].endswith(f"/error_0_{rank}.json")
        assert real["TORCHELASTIC_USE_AGENT_STORE"] == "True"
        set_by_rankrun = {k: v for k, v in real.items() if runs.env.get(k) != v}
        assert set_by_rankrun.keys() == shown[rank].keys()
        assert {k: v for k, v in set_by_rankrun.items() if k not in anew} == {
            k: v for k, v in shown[rank].items() if k not in anew
        }


def _dry_run_env(runs: Runs, argv: list[str]) -> dict[str, str]:
    """The environment --dry-run shows for the node's one rank."""
    result = runs.run("--dry-run", *argv)
    assert result.returncode == 0, result.stderr
    (row,) = result.stdout.splitlines()[1:]
    return dict(v.split("=", 1) for v in shlex.split(re.split(r" {2,}", row, maxsplit=4)[4]))


def torchruns_line(endpoint: str) -> list[str]:
    """PyTorch's documented multi-node command line: no node rank, c10d at the endpoint."""
    return ["--nnodes=2", "--nproc-per-node=2", "--rdzv-id=job", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}", "rank.py"]  # fmt: skip


def _assert_one_job_of_4_ranks(outs: list[tuple[int, str, str]]) -> None:
    """Both agents ended 0, one as node 0 and one as node 1, and each of the 4 ranks (RANK
    = node rank * 2 + local rank, as gloo's world agrees: sum 6) ran once, on its node."""
    assert [code for code, _, _ in outs] == [0, 0], [err[-2000:] for _, _, err in outs]
    said = [re.findall(r"joined 2 nodes as node (\d) of job job", err) for _, _, err in outs]
    assert sorted(said) == [["0"], ["1"]], said
    for (_, out, _), (node,) in zip(outs, said, strict=True):
        ranks = sorted(int(r) for r in re.findall(r"^\S+ rank (\d) attempt 0 sum 6$", out, re.M))
        assert ranks == [2 * int(node), 2 * int(node) + 1], out
    node0_err = outs[[s[0] for s in said].index("0")][2]
    assert "4 ranks on 2 nodes exited 0" in node0_err


@pytest.mark.slow
def test_torchruns_c10d_line_without_node_ranks_runs_on_two_agents(runs: Runs) -> None:
    runs.script("rank.py", RANK, executable=False)
    runs.env["UNTIL"] = "go"
    line = torchruns_line(f"127.0.0.1:{free_port()}")
    agents = [runs.start(*line) for _ in range(2)]  # at once: one wins the port and hosts
    runs.wait_for_files("up.*", 4, timeout=60)
    # A third agent is a stranger: the job's 2 node ranks are handed out.
    extra = runs.run(*line, timeout=60)
    assert extra.returncode == 2
    assert "its 2 nodes have all joined, and this agent (no --node-rank on " in extra.stderr
    (runs.workdir / "go").touch()
    outs = [(a.wait(90), *a.communicate()) for a in agents]
    _assert_one_job_of_4_ranks(outs)


@pytest.mark.slow
def test_a_failure_on_a_node_ranked_at_the_join_is_reported_with_its_node(runs: Runs) -> None:
    runs.script("rank.py", RANK, executable=False)
    runs.env.update(FAIL_RANK="3", HOLD="60")
    line = torchruns_line(f"localhost:{free_port()}")
    agents = [runs.start(*line[:-1], "--summary-json", f"s{i}.json", "rank.py") for i in (0, 1)]
    outs = [(a.wait(90), a.communicate()[1]) for a in agents]
    assert [code for code, _ in outs] == [7, 7], outs
    (err0,) = [err for _, err in outs if "as node 0 of job" in err]
    (err1,) = [err for _, err in outs if "as node 1 of job" in err]
    report = err0[err0.index("root cause") :]
    assert report.startswith("root cause: rank 3 (local rank 1, node 1, host ")
    assert "node 0 (" in report and "node 1 (" in report
    assert "the job ended: rank 3 on node 1" in _last(err1)[-1]


@pytest.mark.slow
def test_torchruns_c10d_line_without_node_ranks_runs_on_two_hosts(runs: Runs, make_hosts) -> None:  # type: ignore[no-untyped-def]
    hosts = make_hosts(2)
    runs.script("rank.py", RANK, executable=False)
    runs.env["GLOO_SOCKET_IFNAME"] = "eth0"  # the hosts' one interface
    line = runs.argv(*torchruns_line(f"{hosts.addrs[0]}:{free_port()}"))
    # Host 1 first: the endpoint is not its address, so it waits for host 0's store.
    agents = [subprocess.Popen(hosts.argv(host, line), env=runs.env, cwd=runs.workdir,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for host in (1, 0)]  # fmt: skip
    outs = [(a.wait(90), *a.communicate()) for a in agents]
    _assert_one_job_of_4_ranks(outs)
    assert "as node 0 of job" in outs[1][2], "host 0 hosts the endpoint"


@pytest.mark.parametrize("backend", ["static", "c10d"])
@pytest.mark.slow
def test_node_0_given_its_rank_on_a_taken_port_suspects_a_stale_run(
    runs: Runs, backend: str
) -> None:
    runs.script("rank.sh", "touch ran\n")
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        result = runs.run("--nnodes", "2", "--node-rank", "0", "--rdzv-backend", backend,
                          "--rdzv-endpoint", f"127.0.0.1:{port}", "./rank.sh")  # fmt: skip
    assert (result.returncode, result.stderr.splitlines()) == (2, [
        f"rankrun: error: --master-port {port} is in use on this host, perhaps by a stale run: "
        "end it, or choose another --master-port for every node"
    ])  # fmt: skip
    assert not (runs.workdir / "ran").exists()
