"""Screen `small` variants quickly: train_ds.py's recipe re-implemented in one plain loop.

    python benchmarks/codec_screen.py export OUT DIR      # val/train segments -> DIR/*.npz
    python benchmarks/codec_screen.py run DIR '[{"name": "base"},
        {"name": "lat128", "over": {"latent_dim": 128, "codebook_dim": 128}}]'

`run` trains each variant (CodecConfig("small").replace(**over)) for `steps` (1500)
steps with what train_ds.py does on CPU: AdamW lr 1e-3, betas (0.8, 0.99), linear warmup
over min(200, steps / 5) steps then linear decay to 0, gradient clipping 1.0, batches of 16
random 0.5 s crops (the first of 4 offsets that is at least half real audio), fp32 (TF32
off), seed 0. It prints the 6 kbps validation masked SNR every 500 steps and saves
DIR/out/NAME.pt ({"config", "state"}); `benchmarks/codec_real_speech.py` scores those after
`save_codec`. It exists because a 1500-step train_ds.py run of `small` took 40-60 min on
the shared 2-core machine but 40-60 s on one GPU (no DeepSpeed, no loader there: the
segments travel as one .npz). Data order differs from train_ds.py's loader; the final
choice is still measured with train_ds.py itself.
"""

import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from telucodec.configs import get_config  # noqa: E402
from telucodec.discriminator import MultiScaleSTFTDiscriminator  # noqa: E402
from telucodec.losses import CodecLoss, discriminator_loss  # noqa: E402
from telucodec.model import Codec  # noqa: E402

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def export(data: str, out: str) -> None:
    """OUT's train and val segments -> DIR/{train,val}.npz (int16 audio, bit-packed mask)."""
    from shards import loader, read_samples

    os.makedirs(out, exist_ok=True)
    for split in ("train", "val"):
        paths = [e.path for e in loader.shard_entries(data, split)]
        samples = list(read_samples(paths))
        audio = np.stack([s["audio"] for s in samples])
        mask = np.stack([s["mask"] for s in samples])
        np.savez(
            f"{out}/{split}.npz",
            audio=np.round(audio * 32767).astype(np.int16),
            mask=np.packbits(mask, axis=1),
            n=mask.shape[1],
        )


def load(directory, split):
    z = np.load(f"{directory}/{split}.npz")
    audio = torch.from_numpy(z["audio"].astype(np.float32) / 32767)
    mask = torch.from_numpy(np.unpackbits(z["mask"], axis=1)[:, : int(z["n"])].astype(bool))
    return audio.to(dev), mask.to(dev)


def batches(train_a, train_m, steps, batch=16, crop=8000, seed=0):
    g = np.random.default_rng(seed)
    n = train_a.shape[0]
    order = []
    for _ in range(steps):
        if len(order) < batch:
            order += list(g.permutation(n))
        idx, order = order[:batch], order[batch:]
        starts = []
        for i in idx:
            best, bv = 0, -1
            for _ in range(4):
                s = int(g.integers(0, 16000 - crop + 1))
                v = int(train_m[i, s : s + crop].sum())
                if v > bv:
                    best, bv = s, v
                if 2 * v >= crop:
                    break
            starts.append(best)
        a = torch.stack([train_a[i, s : s + crop] for i, s in zip(idx, starts, strict=True)])
        m = torch.stack([train_m[i, s : s + crop] for i, s in zip(idx, starts, strict=True)])
        yield a[:, None], m


def lr_at(step, total, peak=1e-3, warmup=200):
    warmup = max(1, min(warmup, total // 5))
    if step < warmup:
        return peak * step / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


@torch.no_grad()
def val_snr(model, val_a, val_m, nq=12):
    model.eval()
    est = model(val_a[:, None], n_quantizers=nq).audio[:, 0]
    m = val_m.double()
    sig = (val_a.double() ** 2 * m).sum(1)
    err = ((val_a - est).double() ** 2 * m).sum(1)
    model.train()
    return float((10 * torch.log10(sig / err)).mean())


def run(data, name, over, steps=1500, disc=False):
    cfg = get_config("small").replace(**over)
    if disc:
        cfg = cfg.replace(use_discriminator=True)
    torch.manual_seed(0)
    model = Codec(cfg).to(dev)
    loss_fn = CodecLoss(cfg).to(dev)
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.0
    )
    d = d_opt = None
    if cfg.use_discriminator:
        d = MultiScaleSTFTDiscriminator(cfg).to(dev)
        d_opt = torch.optim.AdamW(
            d.parameters(), lr=1e-3, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.0
        )
    torch.manual_seed(1)
    out_dir = os.environ["OUT"]
    t0 = time.time()
    curve = []
    for step, (audio, mask) in enumerate(batches(*data["train"], steps), start=1):
        lr = lr_at(step - 1, steps)
        for o in [opt] + ([d_opt] if d_opt else []):
            for gr in o.param_groups:
                gr["lr"] = lr
        out = model(audio)
        est = out.audio.float()
        if d is not None:
            dl = discriminator_loss(d, audio, est, mask)
            d_opt.zero_grad()
            dl.backward()
            torch.nn.utils.clip_grad_norm_(d.parameters(), 1.0)
            d_opt.step()
            d.requires_grad_(False)
        terms = loss_fn(audio, est, mask, out, discriminator=d)
        if d is not None:
            d.requires_grad_(True)
        opt.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 500 == 0:
            curve.append((step, round(val_snr(model, *data["val"]), 2)))
    torch.save({"config": cfg.to_dict(), "state": model.state_dict()}, f"{out_dir}/{name}.pt")
    print(
        json.dumps(
            {"name": name, "over": over, "curve": curve, "seconds": round(time.time() - t0, 1)}
        ),
        flush=True,
    )


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("export", "run"):
        sys.exit(__doc__.split("\n\n")[1])
    if sys.argv[1] == "export":
        export(sys.argv[2], sys.argv[3])
        sys.exit(0)
    directory = sys.argv[2]
    os.environ.setdefault("OUT", f"{directory}/out")  # the device runner sets its own
    os.makedirs(os.environ["OUT"], exist_ok=True)
    data = {split: load(directory, split) for split in ("train", "val")}
    for v in json.loads(sys.argv[3]):
        run(data, v["name"], v.get("over", {}), v.get("steps", 1500), v.get("disc", False))
