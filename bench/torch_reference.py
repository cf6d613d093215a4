"""The PyTorch reference for `collapse-lab bench`: the same network and the same step, with as
many threads as ours. `--what byol-step` (the default): two views; online encoder → projector
→ predictor forward + backward on both; target encoder → projector forward on both;
symmetric 2 − 2·cos loss; SGD with momentum and weight decay; EMA update of the target.
`--what step`: one view through encoder → projector, the mean squared projection as the
loss, backward, SGD. Prints one JSON line with the fields collapse-lab's bench prints.
Benchmark-only: nothing else needs PyTorch.

    python bench/torch_reference.py --width 32 --depth 4 --image-size 32 --batch 256 --threads 2
"""
import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_net(width: int, depth: int, channels: int) -> nn.Sequential:
    """3×3 conv → BN → ReLU per stage (stride 2 after the first), global average pool: the
    layout of collapse-lab's `convnet` (no conv bias before batch norm)."""
    layers = []
    c = channels
    for i in range(depth):
        out = width << i
        layers += [nn.Conv2d(c, out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                   nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or inp != out:
            self.shortcut = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


def resnet18(width: int, channels: int) -> nn.Sequential:
    """ResNet-18 with collapse-lab's `cifar` stem (3×3/1 conv, no max pool)."""
    layers = [nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    c = width
    for stage in range(4):
        out = width << stage
        for b in range(2):
            layers.append(BasicBlock(c, out, 2 if stage > 0 and b == 0 else 1))
            c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--encoder", choices=["convnet", "resnet18"], default="convnet")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--out", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--what", choices=["step", "byol-step"], default="byol-step")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    if a.encoder == "convnet":
        encoder, feat = conv_net(a.width, a.depth, 3), a.width << (a.depth - 1)
    else:
        encoder, feat = resnet18(a.width, 3), a.width << 3
    online = nn.ModuleDict({"encoder": encoder, "projector": mlp(feat, a.hidden, a.out)}).to(dev)
    predictor = mlp(a.out, a.hidden, a.out).to(dev)
    target = copy.deepcopy(online)
    for q in target.parameters():
        q.requires_grad_(False)
    params = list(online.parameters()) + list(predictor.parameters())
    opt = torch.optim.SGD(params, lr=0.8, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(2, a.batch, 3, a.image_size, a.image_size, device=dev)

    def project(net, v):
        return net["projector"](net["encoder"](v))

    def loss_fn(pred, z):
        return (2 - 2 * F.cosine_similarity(pred, z, dim=-1)).mean()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    fwd, bwd, upd, total = [], [], [], []
    for i in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        if a.what == "step":
            loss = project(online, x[0]).pow(2).mean()
        else:
            z0, z1 = project(online, x[0]), project(online, x[1])
            p0, p1 = predictor(z0), predictor(z1)
            with torch.no_grad():
                t0z, t1z = project(target, x[0]), project(target, x[1])
            loss = loss_fn(p0, t1z) + loss_fn(p1, t0z)
        loss.item()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        if a.what == "byol-step":
            with torch.no_grad():
                for tq, oq in zip(target.parameters(), online.parameters()):
                    tq.mul_(0.996).add_(oq, alpha=0.004)
        sync()
        t3 = time.perf_counter()
        if i >= a.warmup:
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
            upd.append((t3 - t2) * 1e3)
            total.append((t3 - t0) * 1e3)
    step = statistics.median(total)
    print(json.dumps({
        "what": a.what, "impl": "pytorch", "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "method": "byol",
        "encoder": a.encoder, "image_size": a.image_size, "batch_size": a.batch,
        "threads": str(a.threads), "step_ms": round(step, 3),
        "forward_ms": round(statistics.median(fwd), 3), "backward_ms": round(statistics.median(bwd), 3),
        "update_ms": round(statistics.median(upd), 3), "images_per_s": round(a.batch / (step / 1e3), 1),
    }))


if __name__ == "__main__":
    main()
