"""A real two-worker ``MultiWorkerMirroredStrategy`` cluster on 127.0.0.1 (issue 13):
two ``pretraining/pretrain.py`` processes with their own ``TF_CONFIG`` and one CPU
device each. Checks: the weights equal a single-process run with the same global
batch; only the chief writes into the run folder; each worker reads its own half of
every global batch; a worker killed mid-run stops the other, and the same command
resumes at the saved step with the same final weights; a worker that cannot reach
the others stops with an error instead of hanging. Every process is killed at the
end, whatever happens."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import pretraining_runs
from pretraining_runs import MODEL_ARGS, corpus_records, state_weights

STEPS = 4
ARGS = [
    *MODEL_ARGS, "--steps", str(STEPS), "--checkpoint-every", "2", "--batch-size", "8",
    "--learning-rate", "1e-3", "--warmup-steps", "2", "--shuffle-buffer", "64", "--seed", "7",
    "--deterministic", "--verbose", "0",
    # Dropout draws differ with the per-replica batch shape, and Keras clips each
    # replica's share of the gradient before the all-reduce: both off for equality.
    "--dropout", "0", "--clipnorm", "0",
    "--cluster-timeout", "60",
]


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Cluster:
    """The worker processes of one cluster; ``close`` kills any still running."""

    def __init__(self, out, tmp, workers=2, started=None, extra_env=None, args=ARGS):
        ports = free_ports(workers)
        spec = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        self.procs, self.logs = [], []
        for i in range(workers if started is None else started):
            os.makedirs(tmp / f"tmp{i}", exist_ok=True)
            env = dict(TF_CONFIG=json.dumps({"cluster": spec, "task": {"type": "worker", "index": i}}),
                       TMPDIR=str(tmp / f"tmp{i}"), **(extra_env or {}))
            log = open(tmp / f"worker{i}.log", "w+")
            self.logs.append(log)
            self.procs.append(pretraining_runs.launch(
                *args, data=out.parent / "data", out=out, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))

    def wait(self, timeout):
        deadline = time.time() + timeout
        for p in self.procs:
            p.wait(timeout=max(1, deadline - time.time()))
        return [p.returncode for p in self.procs]

    def output(self, i):
        self.logs[i].flush()
        self.logs[i].seek(0)
        return self.logs[i].read()

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in self.logs:
            log.close()


def final_weights(run):
    return state_weights(run, STEPS)


def assert_close_weights(a, b):
    assert sorted(a) == sorted(b) and len(a) > 20
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=1e-5, err_msg=k)


@pytest.fixture(scope="module")
def root(shared_data, vocab_path, tmp_path_factory):
    return corpus_records(shared_data, vocab_path, tmp_path_factory.mktemp("multiworker"), docs_per_shard=20)


@pytest.fixture(scope="module")
def runs(root):
    """The two-worker run and the single-process run, side by side."""
    single = pretraining_runs.launch(*ARGS, data=root / "data", out=root / "single", stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
    cluster = Cluster(root / "cluster", root / "c1", extra_env={"KERASNLP_PLUS_LOG_DATA_SHARE": "1"})
    try:
        codes = cluster.wait(400)
        logs = [cluster.output(0), cluster.output(1)]
        assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
        single_log, _ = single.communicate(timeout=300)
        assert single.returncode == 0, single_log[-3000:]
    finally:
        cluster.close()
        if single.poll() is None:
            single.kill()
            single.wait()
    return logs


def test_two_workers_equal_one_process_and_only_the_chief_writes(root, runs):
    chief_log, worker_log = runs
    assert "strategy multi_worker (2 replicas)" in chief_log and '"chief": true' in chief_log
    assert '"chief": false' in worker_log
    assert_close_weights(final_weights(root / "single"), final_weights(root / "cluster"))
    single, cluster = (json.loads((root / r / "summary.json").read_text()) for r in ("single", "cluster"))
    np.testing.assert_allclose(single["history"]["loss"], cluster["history"]["loss"], rtol=1e-5)
    assert (cluster["workers"], cluster["replicas"], cluster["chief"]) == (2, 2, True)
    # Chief-only outputs, one writer: the run folder looks exactly like a single-process one.
    assert sorted(os.listdir(root / "cluster")) == sorted(os.listdir(root / "single"))
    assert os.listdir(root / "cluster" / "backup") == [f"step-{STEPS:09d}"]
    assert (root / "cluster" / "export" / "model.keras").exists()
    # The other worker saved into its temporary folder (TMPDIR) and cleaned it.
    assert [n for n in os.listdir(root / "c1" / "tmp1") if n.startswith("kerasnlp_plus-worker-state")] == []


def test_each_worker_reads_its_own_half_of_each_global_batch(root, runs):
    """The pipeline yields global batches; tf.distribute (auto-shard policy DATA)
    gives worker i rows [4i, 4i+4) of each batch of 8: disjoint halves, in order."""
    from kerasnlp_plus.pretraining.pipeline import make_dataset

    batch = next(iter(make_dataset(str(root / "data"), 8, seed=7, shuffle_buffer=64)))
    expected = [hashlib.sha1(r.tobytes()).hexdigest()[:12] for r in batch[0]["Input-Token"].numpy()]
    shares = {}
    for log in runs:
        line = next(x for x in log.splitlines() if x.startswith("data share: worker "))
        worker, rows = line.split()[3], line.split()[5].split(",")
        shares[int(worker)] = rows
    assert shares[0] == expected[:4] and shares[1] == expected[4:]
    assert len(set(expected)) == 8


def test_killed_worker_stops_the_cluster_and_the_same_command_resumes(root, runs, tmp_path):
    out = root / "killed"
    cluster = Cluster(out, tmp_path / "a")
    try:
        deadline = time.time() + 300
        while not (out / "backup" / "step-000000002").exists():
            assert time.time() < deadline and all(p.poll() is None for p in cluster.procs), cluster.output(0)[-3000:]
            time.sleep(0.05)
        os.killpg(cluster.procs[1].pid, signal.SIGKILL)
        start = time.time()
        code = cluster.procs[0].wait(timeout=200)
        chief_log = cluster.output(0)
    finally:
        cluster.close()
    # The chief does not hang: it fails once the all-reduce times out (--cluster-timeout).
    assert code != 0 and time.time() - start < 200, chief_log[-3000:]
    if not (out / "backup" / f"step-{STEPS:09d}").exists():  # the kill came before the last save
        again = Cluster(out, tmp_path / "b")
        try:
            codes = again.wait(400)
            assert codes == [0, 0], again.output(0)[-3000:] + again.output(1)[-3000:]
        finally:
            again.close()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["resumed_at_step"] == 2 and summary["steps"] == STEPS
    assert_close_weights(final_weights(root / "single"), final_weights(out))


def test_unreachable_worker_stops_with_an_error(root, tmp_path):
    """Worker 0 of a two-worker cluster whose worker 1 never starts."""
    args = list(ARGS)
    args[args.index("--cluster-timeout") + 1] = "20"
    cluster = Cluster(root / "alone", tmp_path, started=1, args=args)
    try:
        code = cluster.wait(240)[0]
        log = cluster.output(0)
    finally:
        cluster.close()
    assert code == -signal.SIGKILL, log[-3000:]
    assert "was not joined by every worker within 20 s" in log and "127.0.0.1" in log
