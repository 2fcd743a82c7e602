"""Multi-worker Train on this machine: images/s of 1 vs 2 workers, and the all-reduce share.

Each configuration runs the Train component through ``ganpipe execute`` (one process per worker,
as on a cluster), DCGAN width 32 on 32x32x1 digits, global batch 64:
  A. one worker, default strategy, batch 64;
  B. two workers, ``MultiWorkerMirroredStrategy`` over loopback (TF_CONFIG), 32 per worker;
  C. two independent one-worker runs at the same time, batch 32 each: B's compute under the same
     contention for the cores, with no communication at all.
images/s come from the chief's TensorBoard ``images_per_second`` windows (the first, with tracing,
dropped). B's step time minus C's is the time a step spends in collectives (gradient all-reduces,
synchronised BatchNorm, the per-step preemption agreement) and waiting for the slower worker:
share = 1 - step_C / step_B. Configurations alternate (A, B, C, A, B, C) so load hits them alike.

    python3 benchmarks/multi_worker.py [--steps 200] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

from train_input import write_digits  # noqa: E402  (benchmarks/ is the script's directory)

GLOBAL_BATCH = 64
LOG_EVERY = 25


def params(steps: int, batch: int, strategy: str) -> dict:
    return {"family": "dcgan", "network": {"width": 32}, "batch_size": batch, "steps": steps, "strategy": strategy,
            "log_every": LOG_EVERY, "sample_every": 10 * steps, "checkpoint_every": 10 * steps}


def command(data: str, output: str, train_params: dict) -> list[str]:
    return [sys.executable, "-m", "ganpipe.pipeline.cli", "execute", "--component", "Train",
            "--input", f"examples={data}", "--input", f"schema={data}", "--output", f"model={output}",
            "--params", json.dumps(train_params)]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def images_per_second(output: str) -> float:
    events = event_accumulator.EventAccumulator(os.path.join(output, "logs", "train"),
                                                size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    rates = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("images_per_second")][1:]
    return statistics.harmonic_mean(rates)  # equal windows of steps: total images / total time


def run_all(jobs: list[tuple[list[str], dict]]) -> None:
    """Starts every (command, extra environment) at once and waits for all."""
    processes = [subprocess.Popen(cmd, env={**os.environ, **extra}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for cmd, extra in jobs]
    failures = []
    for number, process in enumerate(processes):
        _, errors = process.communicate()
        if process.returncode:
            failures.append(f"process {number} exited {process.returncode}:\n{errors[-2000:]}")
    if failures:
        raise RuntimeError("\n".join(failures))


def one_worker(data: str, scratch: str, steps: int) -> float:
    output = tempfile.mkdtemp(dir=scratch)
    run_all([(command(data, output, params(steps, GLOBAL_BATCH, "default")), {})])
    return images_per_second(output)


def two_workers(data: str, scratch: str, steps: int) -> float:
    output = tempfile.mkdtemp(dir=scratch)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    run_all([(command(data, output, params(steps, GLOBAL_BATCH, "multi_worker")),
              {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
             for i in range(2)])
    return images_per_second(output)


def two_independent(data: str, scratch: str, steps: int) -> float:
    """Summed images/s of two unconnected half-batch runs sharing the machine."""
    outputs = [tempfile.mkdtemp(dir=scratch) for _ in range(2)]
    run_all([(command(data, output, params(steps, GLOBAL_BATCH // 2, "default")), {}) for output in outputs])
    return sum(images_per_second(output) for output in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="bench-multi-worker-")
    data = os.path.join(scratch, "data")
    schema, _ = write_digits(data)
    with open(os.path.join(data, "schema.json"), "w") as f:
        json.dump(schema, f)
    results = {"A one worker": [], "B two workers": [], "C two unconnected halves": []}
    for round_number in range(args.rounds):
        for name, measure in zip(results, (one_worker, two_workers, two_independent)):
            results[name].append(measure(data, scratch, args.steps))
            print(f"round {round_number + 1}: {name}: {results[name][-1]:.0f} images/s", flush=True)
    a, b, c = (statistics.median(values) for values in results.values())
    step_b, step_c = GLOBAL_BATCH / b, GLOBAL_BATCH / c  # seconds per global step
    print(json.dumps({
        "images_per_second": {"one_worker": round(a), "two_workers": round(b), "two_unconnected_halves": round(c)},
        "two_workers_vs_one": round(b / a, 2),
        "step_seconds": {"two_workers": round(step_b, 4), "compute_only": round(step_c, 4)},
        "communication_share_of_two_worker_step": round(1 - step_c / step_b, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
