"""fp32 vs bf16 autocast for the stage-1 UNet phase on this CPU: step time and loss curve, side by side.

Two copies of the same freshly initialised UNet + text encoder (``--preset``) train on the latent cache of a
``train-image`` run (``OUTPUT/latents.pt``, e.g. one made with ``until=latents``), one in float32 and one under
bf16 autocast (float32 weights and optimiser), with identical random draws, steps interleaved (A, B, A, B, ...)
so that a shared, changing machine load falls on both alike. Reported per arm: wall and process-CPU seconds
per step, and the mean loss over windows of steps.

    python benchmarks/stage1_precision.py --run ~/.cache/shanshui/runs/precision --steps 60 --out results.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    from shanshui.models.presets import make_components
    from shanshui.schedulers import make_scheduler
    from shanshui.training.image_stage import _gen, diffusion_step_loss

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a train-image output folder with latents.pt and a checkpoint")
    ap.add_argument("--preset", default="bundled2")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--objective", default="v", choices=["v", "eps"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.run).expanduser()
    cache = torch.load(run / "latents.pt", map_location="cpu", weights_only=True)
    states = sorted((run / "checkpoints").glob("checkpoint-*/trainer_state.json"))
    scaling = float(json.loads(states[-1].read_text())["scaling_factor"])
    objective = ({"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
                 if args.objective == "v" else {})
    sched = make_scheduler("ddpm", objective=objective)
    comps = make_components(args.preset, seed=0, tokenizer_corpus=["mountains", "fog"], tokenizer_merges=50)
    # token ids of the cache come from the run's own tokenizer: size the embedding table to match
    vocab = int(cache["ids"].max()) + 1
    te = comps["text_encoder"]
    if te.config.vocab_size < vocab:
        te.resize_token_embeddings(vocab)
    arms = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        unet, text = copy.deepcopy(comps["unet"]).train(), copy.deepcopy(te).train()
        opt = torch.optim.AdamW([{"params": unet.parameters(), "lr": args.lr},
                                 {"params": text.parameters(), "lr": args.lr / 2}], weight_decay=0.01)
        arms[name] = dict(unet=unet, text=text, opt=opt, dtype=dtype, loss=[], wall=[], cpu=[])
    empty = torch.zeros_like(cache["ids"][:1])
    for step in range(args.steps):
        for name, a in arms.items():
            g = _gen(0, "unet", step)
            idx = torch.randint(0, len(cache["mean"]), (args.batch,), generator=g)
            t0, c0 = time.perf_counter(), time.process_time()
            loss = diffusion_step_loss(a["unet"], a["text"], sched, cache["mean"][idx], cache["std"][idx],
                                       cache["ids"][idx], empty, scaling, 0.1, g, autocast_dtype=a["dtype"])
            a["opt"].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(a["unet"].parameters()) + list(a["text"].parameters()), 1.0)
            a["opt"].step()
            a["wall"].append(time.perf_counter() - t0)
            a["cpu"].append(time.process_time() - c0)
            a["loss"].append(float(loss))
        if (step + 1) % 10 == 0:
            print(f"step {step + 1}: " + ", ".join(f"{n} loss {a['loss'][-1]:.4f} {a['wall'][-1]:.2f}s"
                                                   for n, a in arms.items()), flush=True)
    w = args.window
    result = {"settings": vars(args) | {"run": str(run), "threads": torch.get_num_threads()}, "arms": {}}
    for name, a in arms.items():
        result["arms"][name] = {
            "wall_s_per_step": float(np.mean(a["wall"][1:])), "cpu_s_per_step": float(np.mean(a["cpu"][1:])),
            "loss_windows": [float(np.mean(a["loss"][i:i + w])) for i in range(0, len(a["loss"]), w)],
            "loss": a["loss"],
        }
    f, b = result["arms"]["fp32"], result["arms"]["bf16"]
    result["speedup_wall"] = f["wall_s_per_step"] / b["wall_s_per_step"]
    result["speedup_cpu"] = f["cpu_s_per_step"] / b["cpu_s_per_step"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("speedup_wall", "speedup_cpu")}),
          {n: (round(a["wall_s_per_step"], 3), [round(x, 4) for x in a["loss_windows"]])
           for n, a in result["arms"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
