"""Train the default byte-level model on the corpus from prepare_data.py.

    python training/train.py --data ~/.cache/pyllmcodec/train --out ~/.cache/pyllmcodec/run1

Resumable: a checkpoint (model + optimiser + step + RNG) is written atomically
every ``--ckpt-every`` steps to ``OUT/ckpt.pt``; rerunning the same command
continues from it.  The learning rate follows warmup-stable-decay (WSD): linear
warmup, a constant plateau, then a linear decay over the last ``--decay``
fraction of ``--steps``; so a run can be ended early by resuming with a smaller
``--steps`` (the decay then starts at once).

The weights at the step where the decay starts are also kept, once, in
``OUT/pre_decay.pt``: an annealed model re-warmed to a high rate loses much of
what it gained (docs/MODEL.md, run7 and run8), so a later continuation should
start from these instead of ``final.pt``.

``--init-from RUN/final.pt`` starts a new run from an earlier run's weights (its
model shape wins over the shape flags) with a fresh optimiser and schedule:
how the default model 0.2 continued 0.1 on the larger source set v2.

Samples are random windows of ``ctx`` bytes; the model sees BOS then the window
minus its last byte and predicts every byte of the window -- exactly how the
codec codes a chunk.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyllmcodec.nets.bytelm import BOS, ByteLM, ByteLMConfig


def batch(data: np.ndarray, rng: np.random.Generator, bs: int, ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    starts = rng.integers(0, len(data) - ctx, size=bs)
    y = np.stack([data[s:s + ctx] for s in starts]).astype(np.int64)
    x = np.empty_like(y)
    x[:, 0] = BOS
    x[:, 1:] = y[:, :-1]
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def evaluate(model: ByteLM, data: np.ndarray, ctx: int, max_windows: int = 64) -> float:
    """Bits/byte on consecutive ctx-sized windows of ``data`` (as the codec chunks)."""
    model.eval()
    n = min(max_windows, len(data) // ctx)
    y = torch.from_numpy(data[: n * ctx].astype(np.int64).reshape(n, ctx))
    x = torch.cat([torch.full((n, 1), BOS), y[:, :-1]], 1)
    tot = 0.0
    for i in range(0, n, 16):
        lo = model(x[i:i + 16])
        tot += F.cross_entropy(lo.reshape(-1, 256), y[i:i + 16].reshape(-1), reduction="sum").item()
    model.train()
    return tot / (n * ctx) / math.log(2)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _last_lr(out: Path) -> float | None:
    """The learning rate of the last logged training step of the run in ``out``."""
    lr = None
    with open(out / "log.jsonl") as f:
        for ln in f:
            rec = json.loads(ln) if ln.strip() else {}
            lr = rec.get("lr", lr) if "step" in rec else lr
    return lr


def lr_at(step: int, a: argparse.Namespace) -> float:
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    decay_start = int(a.steps * (1 - a.decay))
    if step < decay_start:
        return a.lr
    return a.lr * max(0.0, (a.steps - step) / max(1, a.steps - decay_start)) + a.lr * 0.01


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache/pyllmcodec/train")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-kv-head", type=int, default=1)
    ap.add_argument("--d-mlp", type=int, default=1024)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--decay", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--init-from", type=Path, default=None,
                    help="checkpoint (final.pt or ckpt.pt) whose weights and shape start a new run")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    train = np.fromfile(a.data / "train.bin", dtype=np.uint8)
    val = np.fromfile(a.data / "val.bin", dtype=np.uint8)
    init = torch.load(a.init_from, weights_only=False) if a.init_from else None
    if init is not None:
        cfg = ByteLMConfig(**init["config"])
        a.n_layer, a.d_model, a.n_head, a.n_kv_head, a.d_mlp = (
            cfg.n_layer, cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.d_mlp)
        if a.ctx > cfg.ctx:
            raise SystemExit(f"--ctx {a.ctx} exceeds the initial model's context {cfg.ctx}")
    else:
        cfg = ByteLMConfig(n_layer=a.n_layer, d_model=a.d_model, n_head=a.n_head, n_kv_head=a.n_kv_head,
                           d_mlp=a.d_mlp, ctx=a.ctx)
    torch.manual_seed(a.seed)
    model = ByteLM(cfg)
    if init is not None:
        model.load_state_dict(init["model"])
        print(f"initialised from {a.init_from} (step {init.get('step')})", file=sys.stderr)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and "pos" not in n and "tok" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(a.seed)
    step = 0
    ck = a.out / "ckpt.pt"
    log = open(a.out / "log.jsonl", "a")
    if ck.exists():
        s = torch.load(ck, weights_only=False)
        model.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        step = s["step"]
        rng.bit_generator.state = s["rng"]
        print(f"resumed at step {step}", file=sys.stderr)
    # every start is logged with its data and schedule, so a run whose data or
    # --steps changed on a resume keeps the record of when
    print(json.dumps({"start_step": step, "data": str(a.data), "steps": a.steps, "lr": a.lr,
                      "threads": a.threads, "time": time.time()}), file=log, flush=True)
    print(f"params {model.n_params()} cfg {cfg}", file=sys.stderr)
    (a.out / "config.json").write_text(json.dumps({"model": cfg.to_dict(), "train": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}}, indent=1))
    t0 = time.time()
    tok0 = start = step
    pre = a.out / "pre_decay.pt"
    decay_start = int(a.steps * (1 - a.decay))
    while step < a.steps:
        # the last weights reached at the plateau rate: at the decay's first
        # step, or on a resume (shorter --steps) into the decay from a plateau
        if (step == decay_start or (step == start and step > decay_start and _last_lr(a.out) == a.lr)) \
                and step > 0 and not pre.exists():
            _save_atomic({"model": model.state_dict(), "config": cfg.to_dict(), "step": step}, pre)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a)
        x, y = batch(train, rng, a.bs, a.ctx)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            lo = model(x)
        loss = F.cross_entropy(lo.float().reshape(-1, 256), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        rec = {"step": step, "loss_bpb": loss.item() / math.log(2), "lr": lr_at(step - 1, a),
               "tok_s": (step - tok0) * a.bs * a.ctx / (time.time() - t0), "time": time.time()}
        if step % a.eval_every == 0 or step == a.steps:
            rec["val_bpb"] = evaluate(model, val, a.ctx)
        if step % 10 == 0 or "val_bpb" in rec:
            print(json.dumps(rec), file=log, flush=True)
        if step % a.ckpt_every == 0 or step == a.steps:
            tmp = ck.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "rng": rng.bit_generator.state, "config": cfg.to_dict()}, tmp)
            os.replace(tmp, ck)
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": step}, a.out / "final.pt")
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
