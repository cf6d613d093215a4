"""Step parity with PyTorch: replays the steps `collapse-lab parity-dump` recorded, on a PyTorch
twin of the run's networks, method and optimizer, and compares.

    python bench/torch_parity.py DUMP_DIR... [--tolerance-first 1e-4] [--tolerance-last 1e-3]

Each DUMP_DIR holds config.toml (the resolved run config), init.safetensors (initial online and
target weights and the queue, in PyTorch's names), views.safetensors (the exact two views of
every step), steps.safetensors (collapse-lab's loss, pos/neg cosine, lr, τ and gradient norm per
step) and final.safetensors (every tensor after the last step). The twin starts from the same
weights and consumes the same views with the same lr and τ; compared are the loss, pos_cos,
neg_cos and gradient norm at every step, and every parameter, batch-norm statistic, momentum
buffer and queue entry of the online and target networks after the last step.

Measured: for a per-step scalar |ours − torch| / max(|torch|, 1); for a tensor
max |ours − torch| / max(max |torch|, 1e-3 · the largest entry of its group) — groups are the
online weights, online batch-norm statistics, target, velocities and queue; the floor keeps a
tensor whose true value is ~0 (a bias gradient a batch norm cancels) from being measured against
its own rounding noise. The first step must agree within --tolerance-first, every
later step and the final state within --tolerance-last. Exit 0 when every dump agrees.

Semantics are collapse-lab's, which follow the study's code: batch norm momentum 0.1 with the
unbiased running variance (PyTorch's convention), ε = 1e-5 everywhere, weight decay added to the
gradient before momentum (PyTorch's SGD), LARS as in BYOL (trust ratio η‖w‖/‖u‖ after weight
decay, biases and norm parameters excluded from both when configured), the EMA target in
training mode (its batch norms use and update batch statistics), the queue newest-first.
"""
import argparse
import copy
import math
import sys
import tomllib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

EPS = 1e-5
# A ReLU input this close to 0 may land on either side of the kink in float32.
KINK = 1e-5


class _Relu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, flip):
        mask = x > 0
        if flip is not None:
            mask = mask ^ flip
        ctx.save_for_backward(mask)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask.to(grad.dtype), None


class KinkReLU(nn.Module):
    """ReLU that remembers its inputs, and whose gradient mask can be flipped at chosen
    elements: an input within float32 rounding of 0 may fall on either side of the kink in two
    correct implementations, and flipping it tells whether that explains a difference."""

    def __init__(self):
        super().__init__()
        self.inputs = []
        self.flips = {}

    def forward(self, x):
        call = len(self.inputs)
        self.inputs.append(x.detach())
        return _Relu.apply(x, self.flips.get(call))


class WSConv2d(nn.Conv2d):
    """Convolution with a weight-standardised kernel (per output channel, biased variance)."""

    def forward(self, x):
        w = self.weight
        flat = w.reshape(w.shape[0], -1)
        mean = flat.mean(1, keepdim=True)
        var = ((flat - mean) ** 2).mean(1, keepdim=True)
        w = ((flat - mean) / torch.sqrt(var + EPS)).reshape_as(w)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def conv(cin, cout, k, stride, enc):
    cls = WSConv2d if enc["ws"] else nn.Conv2d
    return cls(cin, cout, k, stride, k // 2, bias=enc["norm"] == "none")


def norm2d(c, enc):
    kind = enc["norm"]
    if kind == "bn":
        return nn.BatchNorm2d(c, eps=EPS, momentum=0.1)
    if kind in ("gn", "gn_ws"):
        return nn.GroupNorm(min(enc["groups"], c), c, eps=EPS)
    return nn.Identity()


def norm1d(c, kind, groups):
    if kind == "bn":
        return nn.BatchNorm1d(c, eps=EPS, momentum=0.1)
    if kind == "ln":
        return nn.LayerNorm(c, eps=EPS)
    if kind == "gn":
        return nn.GroupNorm(min(groups, c), c, eps=EPS)
    return nn.Identity()


class ConvNet(nn.Sequential):
    """One Sequential(conv, norm, ReLU) per stage, then global average pooling."""

    def __init__(self, cin, width, depth, enc):
        stages = []
        for i in range(depth):
            out = width << i
            stages.append(nn.Sequential(conv(cin, out, 3, 1 if i == 0 else 2, enc), norm2d(out, enc), KinkReLU()))
            cin = out
        super().__init__(*stages)

    def forward(self, x):
        return super().forward(x).mean((2, 3))


class Block(nn.Module):
    def __init__(self, cin, cout, stride, enc):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, cout, 3, stride, enc), norm2d(cout, enc)
        self.conv2, self.bn2 = conv(cout, cout, 3, 1, enc), norm2d(cout, enc)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride, enc), norm2d(cout, enc))
        self.relu1, self.relu2 = KinkReLU(), KinkReLU()

    def forward(self, x):
        h = self.relu1(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu2(h + skip)


class ResNet18(nn.Module):
    """torchvision's layout with a chosen width, stem and normalization."""

    def __init__(self, cin, width, stem, enc):
        super().__init__()
        k, s = (7, 2) if stem == "imagenet" else (3, 1)
        self.conv1, self.bn1 = conv(cin, width, k, s, enc), norm2d(width, enc)
        self.relu = KinkReLU()
        self.imagenet = stem == "imagenet"
        c = width
        for stage in range(4):
            out = width << stage
            blocks = [Block(c, out, 2 if stage > 0 else 1, enc), Block(out, out, 1, enc)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
            c = out

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        if self.imagenet:
            h = F.max_pool2d(h, 3, 2, 1)
        for stage in range(4):
            h = getattr(self, f"layer{stage + 1}")(h)
        return h.mean((2, 3))


def head(cin, cfg, groups):
    return nn.Sequential(
        nn.Linear(cin, cfg["hidden"]), norm1d(cfg["hidden"], cfg["norm"], groups), KinkReLU(), nn.Linear(cfg["hidden"], cfg["out"])
    )


class Online(nn.Module):
    def __init__(self, cfg, cin):
        super().__init__()
        m = cfg["model"]
        enc = {"norm": m["encoder_norm"], "ws": m["encoder_norm"] == "gn_ws", "groups": m["gn_groups"]}
        if m["encoder"] == "convnet":
            self.encoder = ConvNet(cin, m["width"], m["depth"], enc)
            out = m["width"] << (m["depth"] - 1)
        else:
            self.encoder = ResNet18(cin, m["width"], m["resnet_stem"], enc)
            out = m["width"] << 3
        self.projector = head(out, m["projector"], m["gn_groups"])
        method = cfg["method"]["name"]
        self.predictor = head(m["projector"]["out"], m["predictor"], m["gn_groups"]) if method in ("byol", "simsiam", "contrastive") else None

    def forward(self, x):
        y = self.encoder(x)
        z = self.projector(y)
        p = self.predictor(z) if self.predictor is not None else None
        return y, z, p


class Target(nn.Module):
    def __init__(self, online):
        super().__init__()
        self.encoder = copy.deepcopy(online.encoder)
        self.projector = copy.deepcopy(online.projector)

    def forward(self, x):
        return self.projector(self.encoder(x))


def l2n(x):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def normalized_l2(p, z):
    return (2 - 2 * (l2n(p) * l2n(z)).sum(-1)).mean()


def negative_cosine(p, z):
    return -(l2n(p) * l2n(z)).sum(-1).mean()


def nt_xent(z0, z1, t):
    b = z0.shape[0]
    z = torch.cat([l2n(z0), l2n(z1)])
    sim = z @ z.t() / t
    sim = sim - torch.eye(2 * b) * 1e9
    pos = (l2n(z0) * l2n(z1)).sum(-1) / t
    return (torch.logsumexp(sim, 1) - torch.cat([pos, pos])).mean()


def info_nce(q, k, negatives, t):
    qn, kn = l2n(q), l2n(k)
    pos = (qn * kn).sum(-1, keepdim=True) / t
    logits = torch.cat([pos, qn @ negatives.t() / t], 1)
    return (torch.logsumexp(logits, 1) - pos.squeeze(1)).mean()


def pos_neg(z, zt):
    """collapse-lab's symmetric pos/neg cosine of (z0 vs z′1) and (z1 vs z′0)."""
    out = []
    for a, b in ((z[0], zt[1]), (z[1], zt[0])):
        a, b = l2n(a.detach()), l2n(b.detach())
        n = a.shape[0]
        pos = (a * b).sum().double()
        every = (a.sum(0) * b.sum(0)).sum().double()
        out.append((pos.item() / n, (every - pos).item() / (n * n - n)))
    return (out[0][0] + out[1][0]) / 2, (out[0][1] + out[1][1]) / 2


def excluded(name, module_of):
    """Biases and normalization parameters (LARS's exclusions)."""
    owner = module_of[name.rsplit(".", 1)[0]]
    return name.endswith("bias") or isinstance(owner, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm))


class Optimizer:
    """SGD (PyTorch's) and LARS as in BYOL; the velocity starts as the first update."""

    def __init__(self, cfg, online):
        self.cfg = cfg
        self.params = list(online.named_parameters())
        self.module_of = dict(online.named_modules())
        self.velocity = {}

    def step(self, lr):
        c = self.cfg
        lars = c["name"] == "lars"
        with torch.no_grad():
            for name, p in self.params:
                if p.grad is None:
                    continue
                skip = lars and c["lars_exclude_bias_and_norm"] and excluded(name, self.module_of)
                u = p.grad.clone()
                if c["weight_decay"] > 0 and not skip:
                    u = u + p * c["weight_decay"]
                if lars and not skip:
                    w_norm = math.sqrt(float(p.pow(2).sum()))
                    u_norm = math.sqrt(float(u.pow(2).sum()))
                    factor = c["lars_eta"] * w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
                    u = u * factor
                v = self.velocity.get(name)
                v = u if v is None or c["momentum"] == 0 else v * c["momentum"] + u
                self.velocity[name] = v
                p.sub_(v * lr)


def group(name):
    """online weights, online buffers, target, velocity or queue: a tensor's scale of reference."""
    head = name.split(".", 1)[0]
    if head == "online" and ("running_" in name):
        return "online-buffers"
    return head


def compare(a, b, floor):
    """max |a − b| / max(max |b|, floor) for tensors."""
    a, b = a.double(), b.double()
    scale = max(b.abs().max().item() if b.numel() else 0.0, floor)
    diff = (a - b).abs().max().item() if b.numel() else 0.0
    return diff / scale if scale > 0 else diff


class Twin:
    """The PyTorch twin of a run: online and target networks, queue and optimizer."""

    def __init__(self, cfg, cin):
        self.method = cfg["method"]["name"]
        self.temperature = cfg["method"]["temperature"]
        self.online = Online(cfg, cin)
        self.target = Target(self.online) if self.method in ("byol", "moco", "contrastive") else None
        self.queue = None
        self.opt = Optimizer(cfg["optim"], self.online)

    def load(self, state):
        strip = lambda prefix: {k[len(prefix):]: v.clone() for k, v in state.items() if k.startswith(prefix)}
        self.online.load_state_dict(strip("online."), strict=True)
        if self.target is not None:
            self.target.load_state_dict(strip("target."), strict=True)
        self.opt.velocity = strip("velocity.")
        self.queue = state["queue"].clone() if "queue" in state else None

    def state(self):
        out = {f"online.{k}": v for k, v in self.online.state_dict().items()}
        if self.target is not None:
            out.update({f"target.{k}": v for k, v in self.target.state_dict().items()})
        out.update({f"velocity.{k}": v for k, v in self.opt.velocity.items()})
        if self.queue is not None:
            out["queue"] = self.queue
        return out

    def loss(self, v0, v1):
        self.online.train()
        _, z0, p0 = self.online(v0)
        _, z1, p1 = self.online(v1)
        if self.target is not None:
            self.target.train()
            with torch.no_grad():
                zt0, zt1 = self.target(v0), self.target(v1)
        else:
            zt0, zt1 = z0.detach(), z1.detach()
        m, t, q = self.method, self.temperature, self.queue
        if m == "byol":
            loss = normalized_l2(p0, zt1) + normalized_l2(p1, zt0)
        elif m == "simsiam":
            loss = 0.5 * (negative_cosine(p0, zt1) + negative_cosine(p1, zt0))
        elif m == "simclr":
            loss = nt_xent(z0, z1, t)
        elif m == "moco":
            loss = info_nce(z0, zt1, q, t) + info_nce(z1, zt0, q, t)
        else:
            loss = info_nce(p0, zt1, q, t) + info_nce(p1, zt0, q, t)
        return loss, (z0, z1), (zt0, zt1)

    def step(self, v0, v1, lr, tau):
        """One training step; returns (loss, pos_cos, neg_cos, gradient norm)."""
        self.online.zero_grad(set_to_none=True)
        loss, z, zt = self.loss(v0, v1)
        pos, neg = pos_neg(z, zt)
        loss.backward()
        grads = [p.grad for p in self.online.parameters() if p.grad is not None]
        gnorm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
        self.opt.step(lr)
        with torch.no_grad():
            if self.target is not None:
                for (_, t), (_, o) in zip(self.target.named_parameters(), self.online.named_parameters()):
                    t.copy_(t * tau + o * (1 - tau))
            if self.queue is not None:
                fresh = l2n(torch.cat(zt))
                n = min(fresh.shape[0], self.queue.shape[0])
                self.queue = torch.cat([fresh[:n], self.queue[: self.queue.shape[0] - n]])
        return loss.item(), pos, neg, gnorm


def zero_gradient_params(twin, v0, v1):
    """Parameters whose gradient is zero in exact arithmetic (e.g. the bias of a linear layer a
    batch norm follows: the norm subtracts it again), found in float64: their f32 gradient, and
    whatever LARS or momentum make of it, is rounding noise in both implementations."""
    double = copy.deepcopy(twin)
    double.online.double()
    if double.target is not None:
        double.target.double()
    if double.queue is not None:
        double.queue = double.queue.double()
    loss, _, _ = double.loss(v0.double(), v1.double())
    loss.backward()
    peak = {n: p.grad.abs().max().item() for n, p in double.online.named_parameters() if p.grad is not None}
    top = max(peak.values())
    return {n for n, g in peak.items() if g <= 1e-9 * top}


def state_errors(ours, theirs, skip):
    """Largest relative error over the tensors of a state, and the ones above nothing (all)."""
    scale = {}
    for name, v in theirs.items():
        if v.is_floating_point() and v.numel():
            g = group(name)
            scale[g] = max(scale.get(g, 0.0), v.detach().abs().max().item())
    errors, problems = {}, []
    only = sorted(set(ours) ^ set(theirs))
    if only:
        problems.append(f"tensors on one side only: {only[:6]}")
    for name in sorted(set(ours) & set(theirs)):
        if any(name.endswith(f".{s}") and name.split(".", 1)[0] in ("online", "velocity") for s in skip):
            continue
        if name.endswith("num_batches_tracked"):
            if int(ours[name]) != int(theirs[name]):
                problems.append(f"{name}: {int(ours[name])} vs {int(theirs[name])}")
            continue
        errors[name] = compare(ours[name], theirs[name].detach(), 1e-3 * scale.get(group(name), 0.0))
    return errors, problems


def replay(dump, tol_step, tol_free):
    dump = Path(dump)
    cfg = tomllib.loads((dump / "config.toml").read_text())
    views = load_file(str(dump / "views.safetensors"))
    steps = load_file(str(dump / "steps.safetensors"))
    k_steps = steps["loss"].shape[0]
    states = [load_file(str(dump / f"state-{k}.safetensors")) for k in range(k_steps + 1)]
    cin = views["view0.0"].shape[1]
    twin = Twin(cfg, cin)
    failures = []

    def check_scalars(k, got, tol, worst):
        for what, ours, theirs in zip(("loss", "pos_cos", "neg_cos", "grad_norm"), (steps[w][k].item() for w in ("loss", "pos_cos", "neg_cos", "grad_norm")), got):
            err = abs(ours - theirs) / max(abs(theirs), 1.0)
            worst = max(worst, err)
            if not err <= tol:
                failures.append(f"step {k} {what}: ours {ours:.8g} torch {theirs:.8g} (rel {err:.2e})")
        return worst

    # Step parity: every step from collapse-lab's own state before it.
    twin.load(states[0])
    skip = zero_gradient_params(twin, views["view0.0"], views["view1.0"])
    relus = [m for m in twin.online.modules() if isinstance(m, KinkReLU)]

    def forced(k, flips):
        """Step k from collapse-lab's state k; the largest error against its step k and state
        k + 1, and the messages of what exceeds the tolerance."""
        twin.load(states[k])
        for i, r in enumerate(relus):
            r.inputs, r.flips = [], flips.get(i, {})
        got = twin.step(views[f"view0.{k}"], views[f"view1.{k}"], steps["lr"][k].item(), steps["tau"][k].item())
        errors, problems = state_errors(states[k + 1], twin.state(), skip)
        worst, messages = 0.0, [f"after step {k}: {p}" for p in problems]
        names = ("loss", "pos_cos", "neg_cos", "grad_norm")
        for what, theirs in zip(names, got):
            ours = steps[what][k].item()
            err = abs(ours - theirs) / max(abs(theirs), 1.0)
            worst = max(worst, err)
            if not err <= tol_step:
                messages.append(f"step {k} {what}: ours {ours:.8g} torch {theirs:.8g} (rel {err:.2e})")
        for name, err in errors.items():
            worst = max(worst, err)
            if not err <= tol_step:
                messages.append(f"after step {k}: {name} rel {err:.2e}")
        return worst, messages

    worst_step, kinks = 0.0, []
    for k in range(k_steps):
        worst, messages = forced(k, {})
        if messages:
            # Inputs of a ReLU within float32 rounding of its kink: the two implementations may
            # put them on different sides. A difference one or two such flips explain is not a
            # difference in the step.
            near = sorted(
                (x.abs().flatten()[j].item(), i, call, j)
                for i, r in enumerate(relus)
                for call, x in enumerate(r.inputs)
                for j in torch.nonzero(x.abs().flatten() < KINK).flatten().tolist()
            )[:6]
            tries = [[c] for c in near] + [[a, b] for n, a in enumerate(near) for b in near[n + 1 :]]
            best = None
            for flip in tries:
                flips = {}
                for _, i, call, j in flip:
                    shape = relus[i].inputs[call].shape
                    mask = flips.setdefault(i, {}).setdefault(call, torch.zeros(shape, dtype=torch.bool))
                    mask.view(-1)[j] = True
                w, m = forced(k, flips)
                if best is None or w < best[0]:
                    best = (w, m, flip)
            if best is not None and not best[1]:
                worst, messages = best[0], []
                kinks.append(f"step {k}: {len(best[2])} ReLU input(s) at {', '.join(f'{c[0]:.1e}' for c in best[2])} from the kink")
        worst_step = max(worst_step, worst)
        failures.extend(messages)
    # K steps run freely from the first state.
    twin.load(states[0])
    worst_free = 0.0
    for k in range(k_steps):
        got = twin.step(views[f"view0.{k}"], views[f"view1.{k}"], steps["lr"][k].item(), steps["tau"][k].item())
        worst_free = check_scalars(k, got, tol_free, worst_free)
    errors, problems = state_errors(states[k_steps], twin.state(), skip)
    failures.extend(f"after {k_steps} free steps: {p}" for p in problems)
    for name, err in errors.items():
        worst_free = max(worst_free, err)
        if not err <= tol_free:
            failures.append(f"after {k_steps} free steps: {name} rel {err:.2e}")
    label = f"{dump.name:<26} {twin.method:<12} {k_steps:>2} steps"
    print(f"{label}  each step {worst_step:.1e}  {k_steps} free steps {worst_free:.1e}  " + ("ok" if not failures else "DIFFERS"))
    if skip:
        print(f"    not compared (zero gradient in exact arithmetic): {', '.join(sorted(skip))}")
    for kink in kinks:
        print(f"    explained by a ReLU kink flip, {kink}")
    for f in failures[:10]:
        print(f"    {f}")
    return not failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dumps", nargs="+")
    ap.add_argument("--tolerance-step", type=float, default=1e-4)
    ap.add_argument(
        "--tolerance-free",
        type=float,
        default=math.inf,
        help="also require the K free-running steps to agree this well (default: reported only; "
        "a ReLU input within rounding of its kink, flipped in one step, grows over the next)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    ok = [replay(d, args.tolerance_step, args.tolerance_free) for d in args.dumps]
    print(f"{sum(ok)} of {len(ok)} dumps agree")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
