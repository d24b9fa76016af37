"""Resident memory over a ``peftsent train`` run: RSS every ``--every`` optimizer steps and after each
evaluation, and the process's peak at the end (Linux ``/proc/self/status``: VmRSS, VmHWM).

    python benchmarks/rss_steps.py recipes/quick/lora.yaml data.max_train_samples=800 \\
        train.num_train_epochs=1 data.max_eval_samples=200 eval.also=[] train.output_dir=/tmp/rss --overwrite
    python benchmarks/rss_steps.py --pad-to-multiple-of 1 recipes/quick/lora.yaml ...   # batches padded to
                                                                                       # their own longest row

Everything after the options goes to ``peftsent.train`` as is. ``--pad-to-multiple-of`` replaces
:data:`peftsent.speed.PAD_TO_MULTIPLE_OF` (32) for this process: 1 reproduces the padding before it existed.
``--inference-autocast`` scores the final evaluation as peftsent did before bf16 storage (float32 weights under
bf16 autocast in place of :func:`peftsent.speed.inference_precision`). RSS is also printed before and after the
final evaluation.
Run one at a time on an otherwise idle machine: the peak is what the memory table of docs/performance.md compares.
"""

from __future__ import annotations

import argparse
import sys
import time


def _rss_mib() -> dict:
    """{"VmRSS": MiB now, "VmHWM": peak MiB so far} of this process."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                values[key] = int(value.split()[0]) // 1024
    return values


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [--every N] [--pad-to-multiple-of N] [--inference-autocast] RECIPE [key=value ...] [train options]")
    parser.add_argument("--every", type=int, default=10, help="print RSS every N optimizer steps (default 10)")
    parser.add_argument("--pad-to-multiple-of", type=int, default=None,
                        help="batch padding multiple for this run (default: peftsent's, 32; 1: longest row)")
    parser.add_argument("--inference-autocast", action="store_true",
                        help="bf16 inference as float32 weights under autocast (before bf16 storage)")
    args, train_args = parser.parse_known_args()

    import transformers

    import peftsent.speed
    import peftsent.train

    if args.pad_to_multiple_of is not None:
        if args.pad_to_multiple_of < 1:
            parser.error(f"--pad-to-multiple-of: expected a positive number of tokens, found {args.pad_to_multiple_of}")
        peftsent.speed.BatchPadding.__init__.__defaults__ = (args.pad_to_multiple_of,)
    if args.inference_autocast:
        import contextlib

        import torch

        @contextlib.contextmanager
        def autocast_precision(model, dtype):
            if peftsent.speed.resolve_dtype(dtype) != "bfloat16":
                yield 0
                return
            with torch.autocast(device_type=peftsent.speed.device_of(model), dtype=torch.bfloat16):
                yield 0

        peftsent.speed.inference_precision = autocast_precision
    real_final = peftsent.train._final_evaluation

    def final_evaluation(*a, **k):
        rss = _rss_mib()
        print(f"before the final evaluation: RSS {rss['VmRSS']} MiB, peak {rss['VmHWM']} MiB", file=sys.stderr,
              flush=True)
        out = real_final(*a, **k)
        rss = _rss_mib()
        print(f"after the final evaluation: RSS {rss['VmRSS']} MiB, peak {rss['VmHWM']} MiB", file=sys.stderr,
              flush=True)
        return out

    peftsent.train._final_evaluation = final_evaluation
    started = time.perf_counter()

    class Report(transformers.TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step % args.every == 0:
                rss = _rss_mib()
                print(f"step {state.global_step}: RSS {rss['VmRSS']} MiB, peak {rss['VmHWM']} MiB, "
                      f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

        def on_evaluate(self, targs, state, control, **kwargs):
            rss = _rss_mib()
            print(f"after evaluation: RSS {rss['VmRSS']} MiB, peak {rss['VmHWM']} MiB", file=sys.stderr, flush=True)

    real_init = transformers.Trainer.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.add_callback(Report())

    transformers.Trainer.__init__ = init
    print(f"after imports: {_rss_mib()} MiB", file=sys.stderr)
    code = peftsent.train.main(train_args)
    rss = _rss_mib()
    print(f"end: RSS {rss['VmRSS']} MiB, process peak {rss['VmHWM']} MiB "
          f"(padding to multiples of {peftsent.speed.BatchPadding.__init__.__defaults__[0]}, bf16 inference "
          f"{'under autocast' if args.inference_autocast else 'with bf16 weights'})", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
