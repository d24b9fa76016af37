"""``peftsent serve`` over real HTTP on 127.0.0.1: a server subprocess, httpx clients, a headless browser."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from peftsent.merge import merge
from peftsent.predict import main as predict_main
from peftsent.recipe import resolve_recipe
from peftsent.serve import main as serve_main
from peftsent.train import train

from conftest import tiny_recipe

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["a great movie, loved it", "awful and boring plot", "the acting was not very good but the story was the best",
         "good", "the worst film, hated the actor"]
LIMITS = ["--max-texts", "8", "--max-chars", "500"]


@pytest.fixture(scope="module")
def runs(tiny_models, reviews_csv, tmp_path_factory):
    """Two LoRA runs on one tiny RoBERTa base (adapters initialised away from identity, so they differ; its
    classification head is a module of its own, which peft's mixed batches refuse) and the first one's merged
    directory."""
    root = tmp_path_factory.mktemp("serve-runs")
    lora = {"name": "lora", "init_lora_weights": False}
    a = train(resolve_recipe(tiny_recipe(tiny_models["roberta"], reviews_csv, root / "a", lora, seed=1)))
    b = train(resolve_recipe(tiny_recipe(tiny_models["roberta"], reviews_csv, root / "b", lora, seed=2,
                                         learning_rate=0.05)))
    merged, _ = merge(a)
    return {"a": a, "b": b, "m": Path(merged)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: list[str], log: Path):
    """A ``python -m peftsent.serve`` subprocess on a free port, once /health answers: (process, base url)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    handle = log.open("w")
    process = subprocess.Popen([sys.executable, "-m", "peftsent.serve", *args, "--port", str(port)],
                               stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"serve did not answer /health in 120 s:\n{log.read_text()}")


def _stop(process) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    """One server: runs a and b sharing their base, and the merged directory; 300 ms batching window."""
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    process, url = _start([f"a={runs['a']}", f"b={runs['b']}", f"m={runs['m']}", "--dtype", "float32",
                           "--max-wait-ms", "300", *LIMITS], log)
    yield url
    assert _stop(process) == 0, log.read_text()


def _predict_cli(target, texts, capsys) -> list[dict]:
    capsys.readouterr()
    assert predict_main([str(target), *texts, "--dtype", "float32"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _close(served: list[dict], expected: list[dict]) -> None:
    """Same labels and probabilities within 2e-6 (mixed batches run the adapter unmerged: float32 rounding)."""
    assert [p["label"] for p in served] == [p["label"] for p in expected]
    for got, want in zip(served, expected):
        assert got["probabilities"].keys() == want["probabilities"].keys()
        for name, value in want["probabilities"].items():
            assert got["probabilities"][name] == pytest.approx(value, abs=2e-6)
        assert got["score"] == got["probabilities"][got["label"]]


def _post(url, payload, **kwargs):
    return httpx.post(f"{url}/v1/predict", json=payload, timeout=60, **kwargs)


def _batches(url) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("peftsent_batch_size_count")))


def test_mixed_batch_of_two_adapters_agrees_with_predict(server, runs, capsys):
    """Requests for a and b arriving together run in one forward pass on the shared base, each row through its
    own adapter, and give predict's numbers for each run (temperature included)."""
    before = _batches(server)
    answers, threads = {}, []
    for key in ("a", "b", "a2", "b2"):
        def ask(key=key):
            answers[key] = _post(server, {"texts": TEXTS, "model": key[0]})
        threads.append(threading.Thread(target=ask))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answer.status_code == 200 for answer in answers.values()), {k: v.text for k, v in answers.items()}
    assert _batches(server) - before < 4  # at least two requests shared a batch
    expected = {name: _predict_cli(runs[name], TEXTS, capsys) for name in ("a", "b")}
    assert expected["a"] != expected["b"]  # the two adapters differ, so mixing them up would show
    for key, answer in answers.items():
        body = answer.json()
        assert body["model"] == key[0]
        _close(body["predictions"], expected[key[0]])
    models = {m["name"]: m for m in httpx.get(f"{server}/v1/models", timeout=10).json()["models"]}
    assert models["a"]["shares_base_with"] == ["a", "b"] and models["m"]["shares_base_with"] == ["m"]
    assert models["a"]["labels"] == ["negative", "positive"]


def test_merged_dir_and_single_adapter_agree_with_predict(server, runs, capsys, tmp_path):
    _close(_post(server, {"texts": TEXTS, "model": "m"}).json()["predictions"], _predict_cli(runs["m"], TEXTS, capsys))
    process, url = _start([str(runs["a"]), "--dtype", "float32", "--max-wait-ms", "1500"],
                          tmp_path / "single.log")  # merged in memory; a batch waits 1.5 s for company
    try:
        body = _post(url, {"texts": TEXTS}).json()  # one model: "model" may be left out
        assert body["model"] == "default"
        _close(body["predictions"], _predict_cli(runs["a"], TEXTS, capsys))
        # SIGTERM with a request in flight (waiting for its batch): it is answered, then the server exits 0
        # and takes no more requests
        slow = {}
        thread = threading.Thread(target=lambda: slow.update(answer=_post(url, {"texts": TEXTS})))
        thread.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        thread.join(timeout=60)
        assert slow["answer"].status_code == 200
        _close(slow["answer"].json()["predictions"], body["predictions"])
        assert process.wait(timeout=60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=5)
    finally:
        _stop(process)


@pytest.mark.parametrize("payload, status, words", [
    (b"{not json", 400, "not valid JSON"),
    ({"model": "a"}, 422, "missing field 'texts'"),
    ({"texts": "one review", "model": "a"}, 422, "non-empty list"),
    ({"texts": ["fine"], "model": "nope"}, 404, 'unknown model "nope"; served: a, b, m'),
    ({"texts": ["fine", "  "], "model": "a"}, 422, "empty at indices [1]"),
    ({"texts": ["fine", 3], "model": "a"}, 422, "not strings at indices [1]"),
    ({"texts": ["fine"] * 9, "model": "a"}, 413, "9 texts in one request; at most 8"),
    ({"texts": ["fine", "good " * 101], "model": "a"}, 413, "longer than 500 characters"),
    ({"texts": ["fine"], "modle": "a"}, 422, "unknown field(s) 'modle'"),
])
def test_bad_requests_are_4xx_naming_the_problem(server, payload, status, words):
    if isinstance(payload, bytes):
        answer = httpx.post(f"{server}/v1/predict", content=payload, timeout=30,
                            headers={"content-type": "application/json"})
    else:
        answer = _post(server, payload)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]
    assert _post(server, {"texts": ["fine"], "model": "a"}).status_code == 200  # the server goes on


def test_too_large_body_is_refused_before_reading(server):
    answer = httpx.post(f"{server}/v1/predict", content=b"x" * 10_000_000, timeout=30,
                        headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "at most" in answer.json()["error"]


def test_concurrent_clients_get_their_own_answers(server):
    """16 clients at once over three models: each answer is the one its text gets alone."""
    alone = {(m, t): _post(server, {"texts": [t], "model": m}).json()["predictions"][0]
             for m in ("a", "b", "m") for t in TEXTS[:3]}
    jobs = [(m, t) for m, t in alone] * 2
    answers = [None] * len(jobs)

    def ask(i):
        answers[i] = _post(server, {"texts": [jobs[i][1]], "model": jobs[i][0]})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for job, answer in zip(jobs, answers):
        assert answer.status_code == 200
        _close(answer.json()["predictions"], [alone[job]])


def test_a_client_that_leaves_does_not_stall_the_batch(server):
    # one leaves in the middle of its body, one before its answer comes
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{\"texts\": [\"go")
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server}/v1/predict", json={"texts": TEXTS * 1, "model": "b"}, timeout=0.05)
    started = time.monotonic()
    answer = _post(server, {"texts": TEXTS, "model": "a"})
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == len(TEXTS)
    assert time.monotonic() - started < 30


def test_metrics_health_and_models(server):
    _post(server, {"texts": ["fine"], "model": "a"})
    _post(server, {"texts": [""], "model": "a"})
    text = httpx.get(f"{server}/metrics", timeout=10).text
    for name in ('peftsent_requests_total{model="a",status="200"}', 'peftsent_errors_total{reason="empty_text"}',
                 "peftsent_batch_size_bucket", "peftsent_request_latency_seconds_bucket", 'peftsent_texts_total'):
        assert name in text
    assert httpx.get(f"{server}/health", timeout=10).json() == {"status": "ok", "models": ["a", "b", "m"]}
    limits = httpx.get(f"{server}/v1/models", timeout=10).json()["limits"]
    assert limits == {"max_texts": 8, "max_chars": 500}


def test_adapters_on_one_base_share_what_they_leave_unchanged(runs):
    """A second adapter on the base adds only the layers it changes (merged) and its head: the embeddings and
    every tensor the adapters leave alone are one tensor in memory; each scores as it does alone."""
    from peftsent.serve import load_models, score

    alone = {name: load_models([(name, str(runs[name]))], dtype="float32")[name] for name in ("a", "b")}
    both = load_models([("a", str(runs["a"])), ("b", str(runs["b"]))], dtype="float32")
    models = [both["a"].loaded.model, both["b"].loaded.model]

    def tensors(model):
        return {name: p for name, p in model.named_parameters()}

    a, b = tensors(models[0]), tensors(models[1])
    shared = [name for name in a if name in b and a[name] is b[name]]
    embeddings = [name for name in shared if "embeddings" in name]
    assert embeddings and all(a[name] is b[name] for name in a if "embeddings" in name)
    changed = [name for name in a if name.endswith("base_layer.weight")]  # the layers LoRA merged into
    assert changed and not set(changed) & set(shared)
    unique = {id(p): p.numel() for model in models for p in model.parameters()}
    alone_a = sum(p.numel() for p in alone["a"].loaded.model.parameters())
    own_b = sum(p.numel() for name, p in b.items() if name not in shared)
    assert sum(unique.values()) == alone_a + own_b < 2 * alone_a
    assert both["a"].shared_with == both["b"].shared_with == ["a", "b"]
    from peftsent.serve import worker_copy

    assert both["a"].loaded.tokenizer is both["b"].loaded.tokenizer  # equal tokenizers: one object
    assert len({id(entry.loaded.tokenizer) for entry in worker_copy(both).values()}) == 1  # one copy a worker
    together = score([(both["a"], TEXTS), (both["b"], TEXTS[::-1])])
    separate = [score([(alone["a"], TEXTS)])[0], score([(alone["b"], TEXTS[::-1])])[0]]
    for got, want in zip(together, separate):
        _close(got, want)


LONG = " ".join(["the film was long and the plot was thin, but the acting was good and the ending moving"] * 12)


def test_forward_passes_of_a_few_rows_give_the_batch_numbers(runs):
    """A micro-batch scored in forward passes of FORWARD_ROWS rows (long reviews over many windows) gives the
    numbers of one pass over all of them, and of predict."""
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.serve import FORWARD_ROWS, load_models, score

    texts = [LONG, *TEXTS, LONG[::-1], LONG[: len(LONG) // 2]]
    for long_reviews in ("window", "truncate"):
        entry = load_models([("a", str(runs["a"]))], dtype="float32", long_reviews=long_reviews)["a"]
        windows = len(entry.loaded.tokenizer(LONG, truncation=True, max_length=entry.policy.max_length,
                                             stride=entry.policy.max_length // 2,
                                             return_overflowing_tokens=True)["input_ids"])
        assert long_reviews == "truncate" or windows > FORWARD_ROWS  # one review alone needs several passes
        chunked = score([(entry, texts)], FORWARD_ROWS)[0]
        whole = score([(entry, texts)], 1024)[0]
        _close(chunked, whole)
        loaded = load_target(str(runs["a"]))
        _close(chunked, list(predict_texts(loaded, texts, long_reviews=long_reviews)))


def _ask_all_at_once(url, texts, expected, repeats=3) -> None:
    """Every text for every model of ``expected`` (name -> predict's answers for ``texts``), ``repeats`` times, one
    request per text, all from concurrent clients; each answer must be predict's."""
    jobs = [(name, i) for name in expected for i in range(len(texts))] * repeats
    answers = [None] * len(jobs)

    def ask(k):
        name, i = jobs[k]
        answers[k] = _post(url, {"texts": [texts[i]], "model": name})

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for (name, i), answer in zip(jobs, answers):
        assert answer.status_code == 200, answer.text
        _close(answer.json()["predictions"], [expected[name][i]])


def test_two_workers_answer_concurrent_clients_as_predict_does(runs, capsys, tmp_path):
    """--workers 2: two threads score batches side by side, each with its own tokenizer; 24 concurrent clients over
    two adapters on one base get predict's numbers; SIGTERM exits 0."""
    texts = [*TEXTS, LONG, LONG[: len(LONG) // 3]]
    expected = {name: _predict_cli(runs[name], texts, capsys) for name in ("a", "b")}
    process, url = _start([f"a={runs['a']}", f"b={runs['b']}", "--dtype", "float32", "--workers", "2",
                           "--max-wait-ms", "5", "--max-batch-size", "4"], tmp_path / "workers.log")
    try:
        _ask_all_at_once(url, texts, expected)
        assert _batches(url) >= 2
    finally:
        assert _stop(process) == 0
    assert "2 workers" in (tmp_path / "workers.log").read_text()


@pytest.fixture(scope="module", params=["distilbert", "bert", "roberta"])
def adapter_pair(request, tiny_models, reviews_csv, tmp_path_factory):
    """Two LoRA runs on one tiny base of each architecture (their heads differ: DistilBERT's pre_classifier and
    classifier Linears, BERT's pooler module, RoBERTa's classifier module), trained apart so they differ."""
    root = tmp_path_factory.mktemp(f"pair-{request.param}")
    lora = {"name": "lora", "init_lora_weights": False}
    model = tiny_models[request.param]
    return [train(resolve_recipe(tiny_recipe(model, reviews_csv, root / name, lora, seed=seed, learning_rate=rate)))
            for name, seed, rate in (("a", 1, 0.01), ("b", 2, 0.05))]


def test_mixed_adapters_share_one_base_and_its_forward_passes(adapter_pair):
    """--adapters mixed: a second adapter adds only its own low-rank matrices and head to the one base model; the
    texts of both adapters run in the same forward passes (long reviews' windows too), each row through its own
    adapter, and give each run's predict numbers (float32); merged mode gives the same."""
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.serve import FORWARD_ROWS, load_models, score

    pairs = [("a", str(adapter_pair[0])), ("b", str(adapter_pair[1]))]
    mixed = load_models(pairs, dtype="float32", adapters="mixed")
    a, b = mixed["a"], mixed["b"]
    assert a.loaded.model is b.loaded.model and a.batch_key() == b.batch_key() and a.adapter != b.adapter
    assert a.describe()["adapters"] == "mixed"
    alone = load_target(str(adapter_pair[0]))
    own = sum(p.numel() for p in alone.model.parameters())
    total = sum(p.numel() for p in a.loaded.model.parameters())
    added = sum(p.numel() for name, p in a.loaded.model.named_parameters() if b.adapter in name)
    assert added and total == own + added  # nothing but the second adapter's own tensors
    assert added < 0.5 * own

    texts = [*TEXTS[:2], LONG]  # both adapters score the same texts: rows through the wrong adapter would show
    want = [list(predict_texts(load_target(str(target)), texts, long_reviews="window", dtype="float32"))
            for target in adapter_pair]
    assert max(abs(x["probabilities"][k] - y["probabilities"][k]) for x, y in zip(*want)
               for k in x["probabilities"]) > 1e-4

    def passes(models, long_reviews):
        entries = [models["a"], models["b"]]
        for entry in entries:
            entry.policy = entry.policy.for_scoring(long_reviews, None)
        counted = []
        hooks = [model.register_forward_pre_hook(lambda module, args: counted.append(1))
                 for model in {id(e.loaded.model): e.loaded.model for e in entries}.values()]
        try:
            return score([(entries[0], texts), (entries[1], texts)], FORWARD_ROWS), len(counted)
        finally:
            for hook in hooks:
                hook.remove()

    merged = load_models(pairs, dtype="float32")
    assert merged["a"].adapter is None and merged["a"].loaded.model is not merged["b"].loaded.model
    for long_reviews in ("window", "truncate"):
        together, mixed_passes = passes(mixed, long_reviews)
        apart, merged_passes = passes(merged, long_reviews)
        rows = len(texts) if long_reviews == "truncate" else sum(
            len(a.loaded.tokenizer(text, truncation=True, max_length=a.policy.max_length,
                                   stride=a.policy.stride or a.policy.max_length // 2,
                                   return_overflowing_tokens=True)["input_ids"]) for text in texts)
        assert mixed_passes == -(-2 * rows // FORWARD_ROWS) < merged_passes == 2 * -(-rows // FORWARD_ROWS)
        for got, alone in zip(together, apart):
            _close(got, alone)
        if long_reviews == "window":
            for got, expected in zip(together, want):
                _close(got, expected)


def test_mixed_mode_merges_what_cannot_mix(tiny_models, reviews_csv, tmp_path, capsys):
    """--adapters mixed with runs that cannot share a mixed base: a DoRA run (peft refuses adapter_names with
    DoRA) and a three-class run (its head and id2label differ) are merged on their own, saying so; two LoRA runs
    with different target_modules mix; every model gives its own run's predict numbers."""
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.serve import load_models, score

    from conftest import make_class_reviews, write_csv

    model = tiny_models["bert"]
    three = write_csv(tmp_path / "three.csv", make_class_reviews(60, 3))
    runs = {
        "dora": train(resolve_recipe(tiny_recipe(model, reviews_csv, tmp_path / "dora",
                                                 {"name": "lora", "use_dora": True, "init_lora_weights": False}))),
        "qv": train(resolve_recipe(tiny_recipe(model, reviews_csv, tmp_path / "qv",
                                               {"name": "lora", "init_lora_weights": False,
                                                "target_modules": ["query", "value"]}, seed=3))),
        "three": train(resolve_recipe(tiny_recipe(model, three, tmp_path / "three",
                                                  {"name": "lora", "init_lora_weights": False}, seed=4))),
        "all": train(resolve_recipe(tiny_recipe(model, reviews_csv, tmp_path / "all",
                                                {"name": "lora", "init_lora_weights": False,
                                                 "target_modules": "all-linear"}, seed=5, learning_rate=0.05))),
    }
    capsys.readouterr()
    served = load_models([(name, str(run)) for name, run in runs.items()], dtype="float32", adapters="mixed")
    log = capsys.readouterr().err
    assert "serving dora: a DoRA adapter cannot run in mixed batches" in log
    assert "serving three: its classes" in log
    modes = {name: entry.describe()["adapters"] for name, entry in served.items()}
    assert modes == {"dora": "merged", "qv": "mixed", "three": "merged", "all": "mixed"}
    assert served["qv"].loaded.model is served["all"].loaded.model
    assert served["three"].labels == ["negative", "neutral", "positive"]
    got = score([(served[name], TEXTS) for name in runs])
    for answers, (name, run) in zip(got, runs.items()):
        _close(answers, list(predict_texts(load_target(str(run)), TEXTS, dtype="float32")))
    from peftsent.loading import adapter_head_labels
    from peftsent.modeling import label_config
    from peftsent.rundir import Run

    for target in (runs["three"], runs["qv"], Run(runs["three"]).weights):  # the one decision of a head's classes
        assert label_config(adapter_head_labels(str(target)))["id2label"] == \
            load_target(str(target)).model.config.id2label
    solo = load_models([("solo", str(runs["qv"]))], dtype="float32", adapters="mixed")["solo"]
    assert solo.adapter is None and solo.describe()["adapters"] == "merged"  # nothing to mix with: merged
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [layer for layer in solo.loaded.model.modules() if isinstance(layer, BaseTunerLayer)]
    assert layers and all(layer.merged for layer in layers)
    _close(score([(solo, TEXTS)])[0], list(predict_texts(load_target(str(runs["qv"])), TEXTS, dtype="float32")))


def test_tokenizers_that_split_otherwise_are_not_shared(runs, tiny_models, reviews_csv, tmp_path):
    """A run that cuts from the left (model.truncation: tail) keeps a tokenizer of its own beside a head run on
    the same base, in both modes, and each scores as predict does."""
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.serve import load_models, score

    raw = tiny_recipe(tiny_models["roberta"], reviews_csv, tmp_path / "tail", {"name": "lora",
                      "init_lora_weights": False}, seed=7)
    raw["model"]["truncation"] = "tail"
    tail = train(resolve_recipe(raw))
    for mode in ("merged", "mixed"):
        served = load_models([("a", str(runs["a"])), ("t", str(tail))], dtype="float32", adapters=mode)
        assert served["a"].loaded.tokenizer is not served["t"].loaded.tokenizer
        texts = [LONG, *TEXTS]
        for name, target in (("a", runs["a"]), ("t", tail)):
            _close(score([(served[name], texts)])[0],
                   list(predict_texts(load_target(str(target)), texts, dtype="float32")))


def test_a_tokenizer_that_splits_special_tokens_is_not_shared(runs, tmp_path):
    """A model directory whose tokenizer_config.json says ``split_special_tokens: true`` reads "[SEP]" in a review
    as text, not as the separator, though its tokenizer serializes as the run's does: it keeps its own tokenizer
    and scores as predict does."""
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.serve import load_models, score

    split = shutil.copytree(runs["m"], tmp_path / "split")
    config_file = split / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["split_special_tokens"] = True
    config_file.write_text(json.dumps(config))
    texts = ["a great movie [SEP] awful and boring plot [CLS] [PAD]", *TEXTS]
    served = load_models([("a", str(runs["a"])), ("s", str(split))], dtype="float32")
    assert served["a"].loaded.tokenizer is not served["s"].loaded.tokenizer
    for name, target in (("a", runs["a"]), ("s", split)):
        _close(score([(served[name], texts)])[0], list(predict_texts(load_target(str(target)), texts, dtype="float32")))


def test_threads_share_a_mixed_base(runs):
    """Two threads scoring mixed batches on one base at once (as two workers do) each get their own rows'
    adapters: peft's per-call hooks on the shared modules would hand one thread's adapter_names to the other."""
    from concurrent.futures import ThreadPoolExecutor

    from peftsent.serve import load_models, score, worker_copy

    mixed = load_models([("a", str(runs["a"])), ("b", str(runs["b"]))], dtype="float32", adapters="mixed")
    jobs = [[(mixed["a"], TEXTS), (mixed["b"], TEXTS[:2])], [(mixed["b"], TEXTS[::-1]), (mixed["a"], TEXTS[1:4])]]
    expected = [score(job) for job in jobs]
    views = [worker_copy(mixed), worker_copy(mixed)]

    def run(k):
        job = [(views[k % 2][entry.name], texts) for entry, texts in jobs[k % 2]]
        return [score(job) for _ in range(15)]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(2)))
    for k, repeats in enumerate(results):
        for got in repeats:
            for answers, want in zip(got, expected[k]):
                _close(answers, want)


def test_rows_of_each_adapter_run_as_one_block_with_peft_numbers(runs):
    """Mixed batches run each adapter's rows as one block (speed.batch_order: by adapter, then length) and the
    LoRA layers take them as slices, not gathers: the same numbers as peft's own mixed forward, for rows in
    blocks and for rows in any order (index tensors)."""
    import types

    import torch
    from peft.tuners.lora import Linear as LoraLinear

    from peftsent.serve import _grouped_lora_forward, _row_groups, load_models
    from peftsent.speed import batch_order

    names = ["b", "a", "b", "a", "a", "c"]
    order = batch_order([5, 3, 4, 9, 1, 2], names)
    assert [names[i] for i in order] == ["a", "a", "a", "b", "b", "c"] and list(order[:3]) == [4, 1, 3]
    assert list(batch_order([5, 3, 4], None)) == [1, 2, 0]
    assert [rows for _, rows in _row_groups(["a", "a", "b"])] == [slice(0, 2), slice(2, 3)]
    assert isinstance(_row_groups(["a", "b", "a"])[0][1], torch.Tensor)

    mixed = load_models([("a", str(runs["a"])), ("b", str(runs["b"]))], dtype="float32", adapters="mixed")
    model = mixed["a"].loaded.model
    layer = next(m for m in model.modules() if isinstance(m, LoraLinear))
    peft_forward = type(layer)._mixed_batch_forward.__get__(layer)
    ours = types.MethodType(_grouped_lora_forward, layer)
    x = torch.randn(5, 7, layer.in_features)
    adapters = [mixed["a"].adapter, mixed["b"].adapter]
    with torch.inference_mode():
        for rows in ([adapters[0]] * 2 + [adapters[1]] * 3, [adapters[1], adapters[0]] * 2 + ["__base__"]):
            assert torch.equal(ours(x, adapter_names=rows), peft_forward(x, adapter_names=rows))


def test_mixed_adapters_in_bf16_stay_within_rounding_of_predict(runs):
    """In bf16 a mixed base is stored in bf16 once (low-rank matrices included); its numbers differ from
    predict's (which merges in float32 before rounding) by bf16 rounding only."""
    import torch

    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.serve import load_models, score

    mixed = load_models([("a", str(runs["a"])), ("b", str(runs["b"]))], dtype="bfloat16", adapters="mixed")
    assert {p.dtype for p in mixed["a"].loaded.model.parameters()} == {torch.bfloat16}
    got = score([(mixed["a"], TEXTS), (mixed["b"], TEXTS)])
    for answers, name in zip(got, ("a", "b")):
        want = list(predict_texts(load_target(str(runs[name])), TEXTS, dtype="bfloat16"))
        for g, w in zip(answers, want):
            for label, value in w["probabilities"].items():
                assert g["probabilities"][label] == pytest.approx(value, abs=0.02)


@pytest.mark.parametrize("options, mode, words", [
    ({"bias": "all"}, "merged", "trained the base model's biases (bias: all)"),
    ({"bias": "lora_only"}, "merged", "trained the base model's biases (bias: lora_only)"),
    ({"trainable_token_indices": {"word_embeddings": list(range(5, 30))}}, "merged", "trainable_token_indices"),
    ({"target_modules": [], "target_parameters": ["attention.self.query.weight"], "lora_dropout": 0.0}, "merged",
     "target_parameters"),
    ({"init_lora_weights": "pissa"}, "merged", "started from the base weights (init_lora_weights: pissa)"),
    ({"init_lora_weights": "olora"}, "merged", "started from the base weights (init_lora_weights: olora)"),
    ({"target_modules": ["query"], "modules_to_save": ["classifier", "LayerNorm"]}, "mixed", None),
], ids=["bias-all", "bias-lora-only", "trainable-tokens", "target-parameters", "pissa", "olora", "saves-layernorm"])
def test_mixed_mode_with_adapters_that_change_the_base(runs, tiny_models, reviews_csv, tmp_path, capsys, options,
                                                       mode, words):
    """An adapter whose run changed the base model itself (trained biases, which loading writes into the shared
    base; PiSSA and OLoRA, whose loading takes their start out of the base weights; trainable tokens and
    parameter targets, which peft does not mix per row) is merged on its own, saying
    so; one that saved a pretrained module the other did not (LayerNorm) mixes, the other's rows running the
    base's copy. Served first, as the base the other would join: both give their run's predict numbers."""
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.serve import load_models, score

    odd = train(resolve_recipe(tiny_recipe(tiny_models["roberta"], reviews_csv, tmp_path / "odd",
                                           {"name": "lora", "init_lora_weights": False, **options}, seed=7,
                                           learning_rate=0.5)))
    capsys.readouterr()
    served = load_models([("odd", str(odd)), ("a", str(runs["a"]))], dtype="float32", adapters="mixed")
    log = capsys.readouterr().err
    assert served["odd"].describe()["adapters"] == served["a"].describe()["adapters"] == mode
    if words:
        assert "serving odd: its " in log and words in log
    for answers, target in zip(score([(served["odd"], TEXTS), (served["a"], TEXTS)]), (odd, runs["a"])):
        _close(answers, list(predict_texts(load_target(str(target)), TEXTS, dtype="float32")))


def test_mixed_names_that_differ_in_punctuation_keep_their_own_adapters(runs):
    """Served names that differ only in '.', '-', '_' ('x.y', 'x_y') once mapped to one peft adapter name: loading
    the second replaced the first one's weights (its rows ran the other run's adapter) or failed to load."""
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.serve import load_models, score

    pairs = [("h", runs["a"]), ("x.y", runs["b"]), ("x_y", runs["a"]), ("x-y", runs["b"])]
    served = load_models([(name, str(run)) for name, run in pairs], dtype="float32", adapters="mixed")
    assert len({served[name].adapter for name, _ in pairs}) == 4
    want = {run: list(predict_texts(load_target(str(run)), TEXTS, dtype="float32")) for run in (runs["a"], runs["b"])}
    for answers, (name, run) in zip(score([(served[name], TEXTS) for name, _ in pairs]), pairs):
        _close(answers, want[run])


def test_mixed_adapters_in_two_precisions_keep_a_base_each(runs, tiny_models, reviews_csv, tmp_path):
    """--dtype auto with a run trained in bf16 beside float32 runs: the bf16 adapter does not share the float32
    adapters' mixed base (casting the shared base for its batches broke the batch another worker ran meanwhile:
    'mat1 and mat2 must have the same dtype'); it is merged on its own base, stored in bf16 for good."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from peftsent.serve import load_models, score, worker_copy

    bf16 = train(resolve_recipe(tiny_recipe(tiny_models["roberta"], reviews_csv, tmp_path / "bf16",
                                            {"name": "lora", "init_lora_weights": False}, seed=3, bf16=True)))
    served = load_models([("a", str(runs["a"])), ("h", str(bf16)), ("b", str(runs["b"]))], dtype="auto",
                         adapters="mixed")
    assert [served[name].dtype for name in "ahb"] == ["float32", "bfloat16", "float32"]
    assert served["a"].loaded.model is served["b"].loaded.model is not served["h"].loaded.model
    assert {p.dtype for p in served["a"].loaded.model.parameters()} == {torch.float32}
    assert {p.dtype for p in served["h"].loaded.model.parameters()} == {torch.bfloat16}
    assert served["a"].shared_with == ["a", "b"] and served["h"].shared_with == ["h"]  # nothing in common
    expected = {name: score([(served[name], TEXTS)])[0] for name in "ahb"}
    views = [worker_copy(served), worker_copy(served)]

    def run(k):
        jobs = [(views[k]["h"], TEXTS)] if k else [(views[k]["a"], TEXTS), (views[k]["b"], TEXTS)]
        return [score(jobs) for _ in range(10)]

    with ThreadPoolExecutor(2) as pool:
        mixed, alone = pool.map(run, range(2))
    for got in mixed:
        _close(got[0], expected["a"])
        _close(got[1], expected["b"])
    for got in alone:
        _close(got[0], expected["h"])


def test_mixed_adapters_over_http_with_two_workers(runs, capsys, tmp_path):
    """A server with --adapters mixed and two workers sharing the base: concurrent clients
    of both adapters get predict's numbers; /v1/models says how the adapters are held."""
    texts = [*TEXTS, LONG]
    expected = {name: _predict_cli(runs[name], texts, capsys) for name in ("a", "b")}
    process, url = _start([f"a={runs['a']}", f"b={runs['b']}", f"m={runs['m']}", "--adapters", "mixed",
                           "--dtype", "float32", "--workers", "2", "--max-wait-ms", "20", "--max-batch-size", "6"],
                          tmp_path / "mixed.log")
    try:
        _ask_all_at_once(url, texts, expected, repeats=2)
        models = {m["name"]: m for m in httpx.get(f"{url}/v1/models", timeout=10).json()["models"]}
        assert models["a"]["adapters"] == models["b"]["adapters"] == "mixed"
        assert models["m"]["adapters"] == "merged" and models["a"]["shares_base_with"] == ["a", "b"]
    finally:
        assert _stop(process) == 0
    assert "mixed with a, b" in (tmp_path / "mixed.log").read_text()


def test_user_errors_exit_2_before_serving(runs, capsys):
    assert serve_main([f"x={runs['a']}", f"x={runs['b']}"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert serve_main([str(runs["a"]), str(runs["b"])]) == 2
    assert "'default' given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve_main([str(runs["a"]), "--adapters", "shared"])
    assert "invalid choice: 'shared'" in capsys.readouterr().err
    assert serve_main(["bad name=x"]) == 2
    assert "expected NAME=TARGET" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]


def test_page_labels_a_pasted_review_in_a_browser(server, tmp_path):
    """A person's view: open /, pick a model, paste a review, press Label, read the label and probabilities."""
    if not Path(CHROMIUM).is_file():
        pytest.skip("needs Debian's chromium (apt-get install -y chromium) for the headless browser test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    expected = _post(server, {"texts": [TEXTS[0]], "model": "b"}).json()["predictions"][0]
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{server}/")
            page.wait_for_selector("#model option[value=b]", state="attached")
            page.select_option("#model", "b")
            page.fill("#text", TEXTS[0])
            page.click("#submit")
            page.wait_for_selector("#result", state="visible", timeout=30_000)
            label = page.inner_text("#label")
            rows = page.inner_text("#probabilities")
            page.screenshot(path=str(tmp_path / "serve-page.png"))
            page.screenshot(path="/tmp/serve-page.png")
            page.fill("#text", "   ")
            page.click("#submit")
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
            error = page.inner_text("#error")
        finally:
            browser.close()
    assert label == f"{expected['label']} ({expected['score']:.3f})"
    for name, value in expected["probabilities"].items():
        assert name in rows and f"{value:.4f}" in rows
    assert "empty at indices [0]" in error


def test_a_tokenizer_made_with_other_settings_is_not_the_same(runs):
    """Two tokenizers are one only if every setting they were made with is equal, their file locations aside:
    a setting the serialized backend does not show (as split_special_tokens was) keeps them apart."""
    import copy

    from peftsent.loading import load_target
    from peftsent.serve import _same_tokenizer

    a, b = load_target(str(runs["a"])).tokenizer, load_target(str(runs["b"])).tokenizer
    assert a.init_kwargs.get("name_or_path") != b.init_kwargs.get("name_or_path") and _same_tokenizer(a, b)
    other = copy.deepcopy(b)
    other.init_kwargs["clean_up_tokenization_spaces"] = not b.init_kwargs.get("clean_up_tokenization_spaces", False)
    assert not _same_tokenizer(a, other)
