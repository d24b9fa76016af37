"""``peftsent serve`` under load against the server a user writes first, side by side in one run.

    python benchmarks/serve_load.py runs/quick/lora                        # the full run (minutes)
    python benchmarks/serve_load.py runs/quick/lora --requests 48 --soak 500 --clients 1 4 16   # short
    python benchmarks/serve_load.py runs/quick/lora --workers 1 --skip-naive --soak 0           # one worker

Everything runs on 127.0.0.1: each server is a subprocess on a free port, the clients are bounded closed loops
(each client sends one IMDb test review per request and waits for the answer; the level ends after
``--requests`` requests), so the run ends by itself. Needs ``pip install "peftsent[serve]" httpx``.

1. **peftsent vs naive**, at each of ``--clients`` concurrent clients: requests/s, p50/p95/p99 latency (ms), the
   server process's CPU time per request (ms: user + system, all its threads; how much of the machine one answer
   costs, beside how fast answers come) and the agreement of the labels with ``peftsent predict`` (in process,
   same reviews, the run's own precision), for
   - ``peftsent serve RUN`` (micro-batches, ``--workers``; the run's precision, token policy and temperature), and
   - the naive server: FastAPI calling ``transformers.pipeline("text-classification")`` once per request on the
     merged model (``RUN/merged``, made with ``peftsent merge`` if absent), float32, truncation at 512 tokens.
2. **three adapters on one base vs one**: ``peftsent serve a=RUN b=ADAPTER2 c=ADAPTER3`` (``--adapters``; default
   two copies of the run whose LoRA ``B`` matrices are scaled by 0.9 and 1.1: three adapters with different
   weights, so no layer they change can be shared) with requests spread over a, b, c, against
   ``peftsent serve RUN`` alone, at the largest client count: requests/s, the server's peak RSS (VmHWM) and each
   answer's agreement with ``peftsent predict`` of its own adapter; once per ``--adapter-modes`` (``peftsent
   serve --adapters``: ``merged``, the default, and/or ``mixed``).
3. **soak**: ``--soak`` requests at the largest client count against ``peftsent serve RUN``; RSS after the first
   tenth and at the end.

Prints a markdown table (and ``--json FILE``); the targets of issue 22 (on 2 cores at 16 clients: >= 4x the naive
requests/s with p99 <= 2 s; three adapters >= 0.7x one adapter's requests/s at <= 1.2x its peak RSS; soak RSS
growth <= 10 %) are printed beside the measurements. Exit status 0 either way: this measures, it does not gate.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NAIVE_SERVER = '''
import sys
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline
import uvicorn

pipe = pipeline("text-classification", model=sys.argv[1], device="cpu", dtype="float32")
app = FastAPI()


class Request(BaseModel):
    texts: list[str]


@app.post("/v1/predict")
def predict(request: Request):
    out = pipe(request.texts, truncation=True, max_length=512)
    return {"predictions": [{"label": o["label"], "score": o["score"]} for o in out]}


@app.get("/health")
def health():
    return {"status": "ok"}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server subprocess on 127.0.0.1, ready once /health answers."""

    def __init__(self, command: list[str], log: Path):
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.log = log
        self.process = subprocess.Popen([sys.executable, *command(self.port)], env=env, cwd=ROOT,
                                        stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited with {self.process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise SystemExit(f"server not ready in 600 s: {log}")

    def memory_mib(self) -> dict:
        """VmRSS and VmHWM (peak) of the server process, MiB."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return fields

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads), seconds."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()


def load(url: str, texts: list[str], clients: int, requests: int, models: list[str] | None = None) -> dict:
    """``clients`` closed-loop clients send ``requests`` requests in all (one text each, cycling through
    ``texts`` and ``models``): requests/s, latency percentiles (ms), errors and the labels by text index (by
    (model, text index) when ``models`` are given)."""
    import httpx

    lock, next_index = threading.Lock(), [0]
    latencies, labels, errors = [], {}, [0]

    def client():
        with httpx.Client(timeout=120) as session:
            while True:
                with lock:
                    index = next_index[0]
                    if index >= requests:
                        return
                    next_index[0] += 1
                payload = {"texts": [texts[index % len(texts)]]}
                if models:
                    payload["model"] = models[index % len(models)]
                started = time.perf_counter()
                try:
                    answer = session.post(f"{url}/v1/predict", json=payload)
                    answer.raise_for_status()
                except httpx.HTTPError:
                    with lock:
                        errors[0] += 1
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    key = (payload["model"], index % len(texts)) if models else index % len(texts)
                    labels[key] = answer.json()["predictions"][0]["label"]

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = sorted(1000 * x for x in latencies) or [float("nan")]

    def pct(q):
        return ms[min(len(ms) - 1, int(round(q * (len(ms) - 1))))]

    return {"clients": clients, "requests": len(latencies), "errors": errors[0], "seconds": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 2), "p50_ms": round(pct(.5)), "p95_ms": round(pct(.95)),
            "p99_ms": round(pct(.99)), "labels": labels}


def _agreement(labels: dict, reference) -> float:
    """The share of ``labels`` equal to ``reference``'s: a list by text index, or (for labels keyed by (model,
    text index)) a dict model -> list."""
    def expected(key):
        return reference[key[0]][key[1]] if isinstance(key, tuple) else reference[key]

    keys = list(labels)
    return round(sum(labels[k].lower() == expected(k).lower() for k in keys) / max(len(keys), 1), 4)


def reference_labels(target: str, texts: list[str], long_reviews: str = "auto") -> list[str]:
    """``peftsent predict``'s labels of ``texts`` (its own default precision; its long-review scoring, or
    ``long_reviews``), in process."""
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.speed import target_dtype

    loaded = load_target(target)
    dtype = target_dtype("auto", loaded.run)
    return [p["label"] for p in predict_texts(loaded, texts, dtype=dtype, long_reviews=long_reviews)]


def test_reviews(target: str, n: int) -> list[str]:
    """The first ``n`` reviews of the run's test split (its own data section), IMDb's for the quick recipes."""
    from peftsent.data import load_splits
    from peftsent.eval import _data_section
    from peftsent.loading import target_run

    section = _data_section(target_run(target), None, None)
    split = load_splits(section, splits=["test"])["test"]
    return list(split["text"][:n])


def measured(server: Server, *args, **kwargs) -> dict:
    """:func:`load` on ``server``, with the server's CPU time per answered request (``cpu_ms_per_request``)."""
    before = server.cpu_seconds()
    row = load(server.url, *args, **kwargs)
    row["cpu_ms_per_request"] = round(1000 * (server.cpu_seconds() - before) / max(row["requests"], 1), 1)
    return row


def variant_runs(run: str, scratch: Path, factors=(0.9, 1.1)) -> list[str]:
    """Copies of ``run`` (weights, recipe, tokenizer; not merged/, exports or evaluations) whose LoRA ``B``
    matrices are multiplied by each factor: adapters on the same base that change the same layers differently."""
    import shutil

    from safetensors.torch import load_file, save_file

    from peftsent.rundir import Run

    copies = []
    for factor in factors:
        copy = scratch / f"variant-{factor}"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("merged", "onnx*", "eval", "checkpoint-*"))
        weights = Path(Run(copy).weights) / "adapter_model.safetensors"
        tensors = load_file(str(weights))
        save_file({k: v * factor if "lora_B" in k else v for k, v in tensors.items()}, str(weights),
                  metadata={"format": "pt"})
        copies.append(str(copy))
    return copies


def _merged(run: str, scratch: Path) -> str:
    merged = Path(run) / "merged"
    if (merged / "config.json").is_file():
        return str(merged)
    from peftsent.merge import merge

    return str(merge(run, scratch / "merged")[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished LoRA run directory (e.g. runs/quick/lora)")
    parser.add_argument("--merged", help="the merged model the naive server loads (default: RUN/merged, made if absent)")
    parser.add_argument("--adapters", nargs=2, metavar="TARGET", help="the 2nd and 3rd adapter on the same base "
                        "(default: the run's own adapter, loaded twice more under other names)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients per level")
    parser.add_argument("--requests", type=int, default=200, help="requests per level (default: 200)")
    parser.add_argument("--reviews", type=int, default=200, help="distinct test reviews cycled through (default: 200)")
    parser.add_argument("--soak", type=int, default=5000, help="requests of the soak (default: 5000; 0: none)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="peftsent serve --max-batch-size")
    parser.add_argument("--max-wait-ms", type=float, default=10, help="peftsent serve --max-wait-ms")
    parser.add_argument("--workers", type=int, help="peftsent serve --workers (default: its own, one per CPU core)")
    parser.add_argument("--long-reviews", choices=["auto", "truncate", "window"], default="auto",
                        help="peftsent serve --long-reviews (default: auto, the run's own scoring); agreement is "
                             "then measured against predict with the same option")
    parser.add_argument("--adapter-modes", nargs="*", choices=["merged", "mixed"], default=["merged"],
                        help="peftsent serve --adapters for the three-adapter server, each in turn (default: merged; none given: no three-adapter server)")
    parser.add_argument("--skip-naive", action="store_true", help="only peftsent's server")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    args.run = str(Path(args.run).resolve())  # the servers run from the repository root
    args.merged = args.merged and str(Path(args.merged).resolve())
    args.adapters = args.adapters and [str(Path(a).resolve()) for a in args.adapters]

    import tempfile

    from peftsent import __version__

    scratch = Path(tempfile.mkdtemp(prefix="serve-load-"))
    texts = test_reviews(args.run, args.reviews)
    print(f"{len(texts)} test reviews; peftsent {__version__}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}", file=sys.stderr)
    reference = reference_labels(args.run, texts, args.long_reviews)
    top = max(args.clients)
    serve = ["-m", "peftsent.serve", "--max-batch-size", str(args.max_batch_size), "--max-wait-ms",
             str(args.max_wait_ms), "--long-reviews", args.long_reviews,
             *(["--workers", str(args.workers)] if args.workers else [])]
    results = {"version": __version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "cpus": os.cpu_count(), "workers": args.workers or "default", "long_reviews": args.long_reviews, "load_average_start": round(os.getloadavg()[0], 1), "levels": []}

    servers = {"peftsent": lambda port: [*serve, args.run, "--port", str(port)]}
    if not args.skip_naive:
        merged = args.merged or _merged(args.run, scratch)
        (scratch / "naive.py").write_text(NAIVE_SERVER)
        servers["naive"] = lambda port: [str(scratch / "naive.py"), merged, str(port)]
    for name, command in servers.items():
        server = Server(command, scratch / f"{name}.log")
        try:
            load(server.url, texts, 1, 4)  # warm-up
            for clients in args.clients:
                row = measured(server, texts, clients, args.requests)
                row.update(server=name, agreement=_agreement(row.pop("labels"), reference), **server.memory_mib())
                results["levels"].append(row)
                print(json.dumps(row), file=sys.stderr)
            if name == "peftsent":
                one = next(r for r in results["levels"] if r["server"] == name and r["clients"] == top)
                results["one_adapter"] = {"requests_per_s": one["requests_per_s"], "peak_rss_mib": one["VmHWM"],
                                          "cpu_ms_per_request": one["cpu_ms_per_request"]}
                if args.soak:
                    first = max(1, args.soak // 10)
                    load(server.url, texts, top, first)
                    before = server.memory_mib()["VmRSS"]
                    soak = measured(server, texts, top, args.soak - first)
                    after = server.memory_mib()["VmRSS"]
                    results["soak"] = {"requests": args.soak, "rss_after_first_tenth_mib": round(before),
                                       "rss_end_mib": round(after), "growth": round(after / before - 1, 4),
                                       "errors": soak["errors"], "requests_per_s": soak["requests_per_s"],
                                       "cpu_ms_per_request": soak["cpu_ms_per_request"]}
                    print(json.dumps(results["soak"]), file=sys.stderr)
        finally:
            server.stop()

    adapters = args.adapters or variant_runs(args.run, scratch)
    targets = {"a": args.run, "b": adapters[0], "c": adapters[1]}
    references = {name: reference if name == "a" else reference_labels(target, texts, args.long_reviews)
                  for name, target in targets.items()}
    results["three_adapters"] = {}
    for mode in args.adapter_modes:
        three = Server(lambda port: [*serve, *(f"{n}={t}" for n, t in targets.items()), "--adapters", mode,
                                     "--port", str(port)], scratch / f"three-{mode}.log")
        try:
            load(three.url, texts, 1, 4, list(targets))
            row = measured(three, texts, top, args.requests, list(targets))
            results["three_adapters"][mode] = {
                "requests_per_s": row["requests_per_s"], "peak_rss_mib": three.memory_mib()["VmHWM"],
                "p99_ms": row["p99_ms"], "errors": row["errors"], "cpu_ms_per_request": row["cpu_ms_per_request"],
                "agreement": _agreement(row["labels"], references)}
            print(json.dumps({"three_adapters": mode, **results["three_adapters"][mode]}), file=sys.stderr)
        finally:
            three.stop()
    results["load_average_end"] = round(os.getloadavg()[0], 1)
    print(report(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def report(results: dict, args) -> str:
    """The markdown table and the targets."""
    lines = [f"peftsent {results['version']}, {results['date']}, {results['cpus']} CPUs, workers "
             f"{results['workers']}, long reviews {results['long_reviews']}, load average "
             f"{results['load_average_start']} -> {results['load_average_end']}; {args.requests} requests per level, "
             f"one review each",
             "", "| server | clients | requests/s | CPU ms/request | p50 ms | p95 ms | p99 ms | agreement with predict "
             "| errors | peak RSS MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["levels"]:
        lines.append(f"| {r['server']} | {r['clients']} | {r['requests_per_s']} | {r['cpu_ms_per_request']} | "
                     f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['agreement']} | {r['errors']} | "
                     f"{r['VmHWM']:.0f} |")
    top = max(args.clients)
    ours = next((r for r in results["levels"] if r["server"] == "peftsent" and r["clients"] == top), None)
    naive = next((r for r in results["levels"] if r["server"] == "naive" and r["clients"] == top), None)
    lines.append("")
    if ours and naive:
        lines.append(f"at {top} clients: peftsent / naive requests/s = {ours['requests_per_s'] / naive['requests_per_s']:.2f}x "
                     f"(target >= 4x), peftsent p99 {ours['p99_ms']} ms (target <= 2000); CPU ms/request "
                     f"{ours['cpu_ms_per_request']} vs {naive['cpu_ms_per_request']} "
                     f"({naive['cpu_ms_per_request'] / max(ours['cpu_ms_per_request'], 1e-9):.2f}x less)")
    one = results.get("one_adapter")
    for mode, three in (results.get("three_adapters") or {}).items() if one else ():
        lines.append(f"three adapters ({mode}) / one: requests/s {three['requests_per_s'] / one['requests_per_s']:.2f}x "
                     f"(target >= 0.7x), peak RSS {three['peak_rss_mib'] / one['peak_rss_mib']:.2f}x (target <= 1.2x): "
                     f"{three['requests_per_s']} vs {one['requests_per_s']} requests/s, "
                     f"{three['peak_rss_mib']:.0f} vs {one['peak_rss_mib']:.0f} MiB, CPU ms/request "
                     f"{three['cpu_ms_per_request']} vs {one['cpu_ms_per_request']}, p99 {three['p99_ms']} ms, "
                     f"agreement with predict {three['agreement']}, errors {three['errors']}")
    soak = results.get("soak")
    if soak:
        lines.append(f"soak of {soak['requests']} requests: RSS {soak['rss_after_first_tenth_mib']} -> "
                     f"{soak['rss_end_mib']} MiB ({100 * soak['growth']:+.1f} %, target <= +10 %), "
                     f"{soak['errors']} errors, {soak['requests_per_s']} requests/s")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
