#!/usr/bin/env python3
"""Writes the `ballast import` test fixtures with the engines' own serialisers.

Run with torch, safetensors and numpy installed (`pip install torch safetensors
numpy`); it rewrites tests/fixtures/import/ in place. Deterministic (fixed seed).

The model is DeepSeek-V3's layout at small scale: 6 hidden layers, the first 2
dense, 4 MoE layers of 16 routed experts, 4 experts per token.

- sglang/: what `/dump_expert_distribution_record` writes in `stat` mode
  (`_StatAccumulator.dump` in python/sglang/srt/eplb/expert_distribution.py):
  `torch.save` of {rank, logical_count, average_utilization_rate_over_window},
  `logical_count` an int32 [buffer steps, hidden layers, experts] tensor on the
  GPU. There is no GPU here, so the storage's location tag is set to "cuda:0"
  through torch's own tagger registry, which is exactly what `torch.save`
  writes for a tensor on the first GPU; the bytes are torch's own.
- trtllm/: what EXPERT_STATISTIC_PATH holds after EXPERT_STATISTIC_ITER_RANGE
  (tensorrt_llm/_torch/expert_statistic.py): meta_info.json and one
  rank{r}.safetensors per rank, key "{iter}_{layer}" (absolute layer) holding
  torch.bincount's int64 counts, written by safetensors.torch.save_file.
- Bad variants: a negative count, a key past the last MoE layer, a
  `per_token` mode dump.
- expected.json beside each good fixture: the MoE rows summed over steps and
  each step's total, computed here with numpy for the tests to check against.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

HIDDEN_LAYERS = 6
FIRST_MOE_LAYER = 2
EXPERTS = 16
TOP_K = 4
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "import"

rng = np.random.default_rng(14)
# A fixed skew over experts per layer, so the load is visibly unbalanced.
popularity = rng.dirichlet(np.full(EXPERTS, 0.6), size=HIDDEN_LAYERS)


def route(tokens: int, layer: int) -> torch.Tensor:
    """Top-k expert ids of `tokens` tokens at `layer`, as a router picks them."""
    picks = [
        rng.choice(EXPERTS, size=TOP_K, replace=False, p=popularity[layer])
        for _ in range(tokens)
    ]
    return torch.tensor(np.array(picks, dtype=np.int32).reshape(tokens, TOP_K))


def counts(tokens: int, layer: int) -> torch.Tensor:
    return torch.bincount(route(tokens, layer).flatten(), minlength=EXPERTS)


def expected(steps: np.ndarray) -> dict:
    """steps: [step, MoE layer, expert]; steps without tokens are left out."""
    moe = steps.astype(np.int64)
    totals = [int(s.sum()) for s in moe if s.sum() > 0]
    return {"load": moe.sum(axis=0).tolist(), "step_totals": totals, "total": int(moe.sum())}


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def sglang() -> None:
    out = fresh(OUT / "sglang")
    buffer_size = 8
    # Steps 0..5 recorded (step 3 an idle pass with no tokens), 6 and 7 never
    # filled: the circular buffer as dumped before it wrapped.
    tokens = [23, 31, 17, 0, 40, 12]
    logical_count = torch.zeros((buffer_size, HIDDEN_LAYERS, EXPERTS), dtype=torch.int32)
    for step, n in enumerate(tokens):
        for layer in range(FIRST_MOE_LAYER, HIDDEN_LAYERS):
            logical_count[step, layer] = counts(n, layer).to(torch.int32)
    # torch.save asks the registered taggers for each storage's location; this
    # one answers as torch's CUDA tagger does for device 0.
    torch.serialization.register_package(0, lambda storage: "cuda:0", lambda s, loc: s)
    dump = {"rank": 0, "logical_count": logical_count, "average_utilization_rate_over_window": None}
    torch.save(dump, out / "expert_distribution_recorder_1765000000.123456.pt")
    (out / "expected.json").write_text(
        json.dumps(expected(logical_count[:, FIRST_MOE_LAYER:].numpy())) + "\n"
    )
    bad = logical_count.clone()
    bad[1, FIRST_MOE_LAYER + 1, 5] = -3
    dump["logical_count"] = bad
    torch.save(dump, out / "negative.pt")
    # A `per_token` mode dump (`_DetailAccumulator.dump`): not a `stat` one.
    per_token = {
        "records": [],
        "last_physical_to_logical_map": torch.arange(EXPERTS).repeat(HIDDEN_LAYERS, 1),
    }
    torch.save(per_token, out / "per_token.pt")


def trtllm_records(ranks: int, iters: range) -> list:
    """Each rank's records: {"{iter}_{layer}": int64 counts}."""
    return [
        {
            f"{it}_{layer}": counts(int(rng.integers(5, 30)), layer)
            for it in iters
            for layer in range(FIRST_MOE_LAYER, HIDDEN_LAYERS)
        }
        for _ in range(ranks)
    ]


def write_trtllm(path: Path, records: list) -> None:
    fresh(path)
    meta = {"num_experts": EXPERTS, "num_experts_per_token": TOP_K}
    (path / "meta_info.json").write_text(json.dumps(meta))
    for rank, rec in enumerate(records):
        save_file(rec, str(path / f"rank{rank}.safetensors"))


def trtllm() -> None:
    # EXPERT_STATISTIC_ITER_RANGE=100-106 on two ranks (attention DP).
    iters = range(100, 106)
    records = trtllm_records(2, iters)
    write_trtllm(OUT / "trtllm", records)
    # Older releases also wrote co-occurrence files beside the rank files.
    save_file({"100_2": torch.zeros((EXPERTS, EXPERTS), dtype=torch.int64)},
              str(OUT / "trtllm" / "cooccurrence_rank0.safetensors"))
    steps = np.array([
        [
            sum(rec[f"{it}_{layer}"].numpy() for rec in records)
            for layer in range(FIRST_MOE_LAYER, HIDDEN_LAYERS)
        ]
        for it in iters
    ])
    (OUT / "trtllm" / "expected.json").write_text(json.dumps(expected(steps)) + "\n")

    negative = trtllm_records(1, range(100, 102))
    negative[0]["101_3"][7] = -1
    write_trtllm(OUT / "trtllm_negative", negative)

    past_last = trtllm_records(1, range(100, 102))
    past_last[0][f"101_{HIDDEN_LAYERS}"] = counts(9, HIDDEN_LAYERS - 1)
    write_trtllm(OUT / "trtllm_bad_key", past_last)


def topology() -> None:
    spec = {
        "num_layers": HIDDEN_LAYERS - FIRST_MOE_LAYER,
        "num_logical_experts": EXPERTS,
        "num_groups": 4,
        "num_nodes": 2,
        "gpus_per_node": 2,
        "slots_per_gpu": 5,
        "first_moe_layer": FIRST_MOE_LAYER,
    }
    (OUT / "topology.json").write_text(json.dumps(spec, indent=2) + "\n")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    topology()
    sglang()
    trtllm()
