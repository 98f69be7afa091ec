"""MemVP's memory branch as the library runs it against the plain autograd branch, side by side.

The library's branch (``vlbridge.bridges.injections.memory_space``) sums the layers' key/value gradients
inside ``baddbmm`` (``shared_memory.py``) and draws its dropout mask 16 bits at a time (``dropout.py``).
``plain_branch`` below is the same maths in plain autograd with ``torch.nn.functional.dropout``. Measured,
each the minimum and median over ``--repeats`` interleaved runs:

- the key gradient's sum over the LM's layers: ``bmm`` then add, against ``baddbmm`` into one buffer;
- dropout forward + backward on one layer's (B, L, M) activations: ``F.dropout`` against ours;
- whole training steps (``bridge_costs.train_step``) of the text-only LM, MemVP with the plain branch and
  MemVP with the library's branch, interleaved, with their ratios to the text-only step.

    python benchmarks/memory_branch_speedups.py                  # packaged SmolLM2-135M, ~3 min
    python benchmarks/memory_branch_speedups.py --lm random      # SmolLM2-135M's shape, random weights
"""

from __future__ import annotations

import argparse
import statistics
import sys
import types
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bridge_costs  # noqa: E402  (a sibling script: the same models, batches and training step)

from vlbridge.allocator import keep_freed_memory  # noqa: E402
from vlbridge.bridges.injections.dropout import dropout  # noqa: E402
from vlbridge.flops import LMShape  # noqa: E402


def plain_branch(self, layer: int, x, memory):
    """The branch in plain autograd: s * F.dropout(phi(x K^T)) V, each layer's key/value gradient a new tensor."""
    scores = x @ memory.keys.to(x.dtype).transpose(1, 2)  # (B, L, M)
    weights = F.dropout(self._phi[layer](scores), self.dropout, self.training)
    return self.scale * (weights @ memory.values.to(x.dtype))  # (B, L, d)


def timings(functions: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function, interleaved ``repeats`` times after one warm-up call each."""
    for fn in functions.values():
        fn()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            times[name].append(bridge_costs.timed(fn))
    return times


def report(title: str, times: dict[str, list[float]], unit: float, unit_name: str, base: str | None = None) -> dict:
    print(f"\n{title}")
    rows = {}
    for name, values in times.items():
        low, mid = min(values), statistics.median(values)
        rows[name] = {"min": low, "median": mid}
        line = f"  {name:<24} min {low * unit:8.2f} {unit_name}   median {mid * unit:8.2f} {unit_name}"
        if base is not None and name != base:
            line += f"   / {base}: {low / min(times[base]):.3f}x min, {mid / statistics.median(times[base]):.3f}x median"
        print(line)
    return rows


def layer_sums(batch: int, text: int, slots: int, width: int, layers: int) -> dict:
    """Summing dK = sum_l dS_l^T x_l over the layers, both ways."""
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(batch, text, slots, generator=g) for _ in range(layers)]  # dS_l (B, L, M)
    inputs = [torch.randn(batch, text, width, generator=g) for _ in range(layers)]  # x_l (B, L, d)

    def bmm_then_add():
        total = None
        for d_s, x in zip(grads, inputs):
            term = d_s.transpose(1, 2) @ x
            total = term if total is None else total.add_(term)  # as autograd sums into its buffer

    def baddbmm_in_place():
        total = grads[0].transpose(1, 2) @ inputs[0]
        for d_s, x in zip(grads[1:], inputs[1:]):
            torch.baddbmm(total, d_s.transpose(1, 2), x, out=total)

    return {"bmm then add": bmm_then_add, "baddbmm in place": baddbmm_in_place}


def dropouts(batch: int, text: int, slots: int, p: float) -> dict:
    x = torch.randn(batch, text, slots, requires_grad=True)
    grad = torch.randn(batch, text, slots)
    return {"F.dropout": lambda: F.dropout(x, p, True).backward(grad),
            "16-bit mask": lambda: dropout(x, p, True).backward(grad)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", default="smollm2-135m", help="as in bridge_costs.py")
    parser.add_argument("--repeats", type=int, default=25, help="interleaved timed runs of each whole step")
    parser.add_argument("--part-repeats", type=int, default=50, help="interleaved timed runs of each part")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text", type=int, default=64)
    parser.add_argument("--visual", type=int, default=256)
    parser.add_argument("--slots", type=int, default=320)
    parser.add_argument("--vision-dim", type=int, default=768)
    parser.add_argument("--answer", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the vlbridge command and bridge_costs.py do

    lm = bridge_costs.load_lm(args.lm)
    shape = LMShape.of(lm)
    text = bridge_costs.build("text", lm, args.vision_dim, args.slots)
    memvp = bridge_costs.build("memvp", lm, args.vision_dim, args.slots)
    injection = memvp.bridge.injection
    dims = (args.batch, args.text, args.slots)
    print(f"LM {args.lm} ({shape.layers} layers, d={shape.width}), batch {args.batch}, L={args.text}, "
          f"n={args.visual}, M={args.slots}, dropout {injection.dropout}, {torch.get_num_threads()} threads")

    report(f"key gradient summed over {shape.layers} layers (per step)",
           timings(layer_sums(*dims, shape.width, shape.layers), args.part_repeats), 1e3, "ms", "bmm then add")
    report("dropout forward + backward on one layer's (B, L, M) activations",
           timings(dropouts(*dims, injection.dropout), args.part_repeats), 1e3, "ms", "F.dropout")

    text_batch = bridge_costs.make_batch("text", args.batch, args.text, args.visual, args.vision_dim, args.answer,
                                         shape.vocab)
    image_batch = bridge_costs.make_batch("memvp", args.batch, args.text, args.visual, args.vision_dim, args.answer,
                                          shape.vocab)
    library_branch = injection.branch
    plain = types.MethodType(plain_branch, injection)

    def memvp_step(branch):
        def step():
            injection.branch = branch
            bridge_costs.train_step(memvp, image_batch, "memvp")
        return step

    text.train()
    memvp.train()
    steps = timings({"text-only": lambda: bridge_costs.train_step(text, text_batch, "text"),
                     "memvp, plain branch": memvp_step(plain),
                     "memvp, library branch": memvp_step(library_branch)}, args.repeats)
    del injection.branch  # the class's branch again
    report("whole training steps", steps, 1.0, "s", "text-only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
