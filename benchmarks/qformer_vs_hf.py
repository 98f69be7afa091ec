"""Our Q-Former against Hugging Face's `Blip2QFormerModel` at the same config: forward + backward time.

Both models get the same random weights and inputs, in training mode (dropout on, as in training), and are
timed alternately so machine load hits them alike; the minimum and median over `--repeats` runs after a
warm-up are printed with the ratio ours / Hugging Face (< 1 = ours faster). Two modes per config:
- queries: 32 queries cross-attending to the image (stage 2, and ITC's image side);
- joint: queries + text tokens with a padding mask (ITM's pass; Hugging Face with use_qformer_text_input).
Before timing, outputs are checked equal in eval mode.

    python benchmarks/qformer_vs_hf.py                      # BLIP-2 size and MiniLM size
    python benchmarks/qformer_vs_hf.py --configs minilm --repeats 10
    python benchmarks/qformer_vs_hf.py --threads 1 --clock cpu   # on a machine busy with other work
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from transformers import Blip2QFormerModel
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from vlbridge.bridges.qformer import QFormerConfig, build_qformer, itm_mask

# name -> (Q-Former config, batch, image tokens, text tokens)
CONFIGS = {
    "blip2": (QFormerConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                            encoder_hidden_size=1024, num_query_tokens=32), 8, 257, 32),
    "minilm": (QFormerConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                             encoder_hidden_size=384, num_query_tokens=32, vocab_size=30523), 8, 256, 32),
}


def build(config: QFormerConfig):
    ours = build_qformer(config)
    hf = Blip2QFormerModel(config.to_hf())
    state = ours.state_dict()
    hf.load_state_dict({k: v for k, v in state.items() if not k.startswith(("embeddings.", "query_tokens"))})
    emb = Blip2TextEmbeddings(config.to_hf())
    emb.load_state_dict({k[len("embeddings."):]: v for k, v in state.items() if k.startswith("embeddings.")})
    return ours, hf, emb


def runners(config, ours, hf, emb, batch, n, length, mode):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(batch, n, config.encoder_hidden_size, generator=g)
    ids = torch.randint(1, config.vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[batch // 2 :, length // 2 :] = 0
    full = torch.cat([torch.ones(batch, config.num_query_tokens, dtype=torch.long), mask], 1)
    queries = ours.query_tokens

    if mode == "queries":
        def run_ours():
            return ours(image).last_hidden_state

        def run_hf():
            return hf(query_embeds=queries.expand(batch, -1, -1), encoder_hidden_states=image).last_hidden_state
    else:
        def run_ours():
            return ours(image, ids, itm_mask(config.num_query_tokens, mask)).last_hidden_state

        def run_hf():
            embeds = emb(ids, query_embeds=queries.expand(batch, -1, -1))
            return hf(query_embeds=embeds, query_length=config.num_query_tokens, attention_mask=full,
                      encoder_hidden_states=image).last_hidden_state
    return run_ours, run_hf


def step(run, params, clock=time.perf_counter) -> float:
    for p in params:
        p.grad = None
    start = clock()
    run().square().mean().backward()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                        help="which sizes to run")
    parser.add_argument("--modes", nargs="+", default=["queries", "joint"], choices=["queries", "joint"],
                        help="queries only, or queries + text")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (steadier on a busy machine; use --threads 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{args.clock} clock, min/median of {args.repeats} forward+backward steps (seconds)")
    print(f"{'config':8} {'mode':8} {'ours min':>9} {'HF min':>9} {'ours med':>9} {'HF med':>9} {'ratio(min)':>10}")
    for name in args.configs:
        config, batch, n, length = CONFIGS[name]
        torch.manual_seed(0)
        ours, hf, emb = build(config)
        params = [*ours.parameters(), *hf.parameters(), *emb.parameters()]
        for mode in args.modes:
            run_ours, run_hf = runners(config, ours, hf, emb, batch, n, length, mode)
            for m in (ours, hf, emb):
                m.eval()
            with torch.no_grad():
                diff = (run_ours() - run_hf()).abs().max().item()
            assert diff < 1e-4, f"outputs differ by {diff}"
            for m in (ours, hf, emb):
                m.train()
            step(run_ours, params), step(run_hf, params)  # warm-up
            times = {"ours": [], "hf": []}
            for _ in range(args.repeats):
                times["ours"].append(step(run_ours, params, clock))
                times["hf"].append(step(run_hf, params, clock))
            o, h = min(times["ours"]), min(times["hf"])
            print(f"{name:8} {mode:8} {o:9.3f} {h:9.3f} {statistics.median(times['ours']):9.3f} "
                  f"{statistics.median(times['hf']):9.3f} {o / h:10.3f}", flush=True)


if __name__ == "__main__":
    main()
