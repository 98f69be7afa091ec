"""ITC negatives gathered across 2 gloo processes equal one process with the whole batch."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vlbridge.bridges.qformer import QFormerConfig, build_blip2_stage1, build_qformer
from vlbridge.bridges.qformer.distributed import gather_padded, world

B = 3  # per process


def setup():
    torch.manual_seed(0)
    config = QFormerConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=24, encoder_hidden_size=8, num_query_tokens=3, embed_dim=8,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = build_blip2_stage1(build_qformer(config), 29, embed_dim=8)
    for name, p in model.named_parameters():
        if name != "temp":
            p.data.add_(0.1 * torch.randn_like(p))
    images = torch.randn(2 * B, 5, 8)
    ids = torch.randint(2, 29, (2 * B, 6))
    ids[:, 0] = 1
    mask = torch.ones(2 * B, 6, dtype=torch.long)
    mask[:B, 5:] = 0  # the first process's texts are one token shorter: it sends (B, 5)
    return model, images, ids * mask, mask


def worker(rank, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        model, images, ids, mask = setup()
        part = slice(rank * B, rank * B + B)
        length = 5 if rank == 0 else 6
        local_ids, local_mask = ids[part, :length], mask[part, :length]
        gathered = gather_padded(local_ids, 0)
        out = model(images[part], local_ids, local_mask)
        out["itc"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"world": world(), "itc": out["itc"].detach(), "itm": out["itm"].detach(),
                    "gathered": gathered, "grads": grads}, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_itc_over_two_processes_equals_one_big_batch(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    model, images, ids, mask = setup()
    assert [r["world"] for r in results] == [(0, 2), (1, 2)]
    assert torch.equal(results[0]["gathered"], ids)  # padded to the longest, in rank order
    full = model(images, ids, mask)
    full["itc"].backward()
    # the global loss is the mean of the per-process losses; gradients are their average (as DDP does)
    torch.testing.assert_close((results[0]["itc"] + results[1]["itc"]) / 2, full["itc"].detach(), atol=1e-5, rtol=0)
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        got = (results[0]["grads"][name] + results[1]["grads"][name]) / 2
        torch.testing.assert_close(got, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    assert all(torch.isfinite(r["itm"]) for r in results)
