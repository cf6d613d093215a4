"""Step parity with PyTorch: replays the steps `collapse-lab parity-dump` recorded, on a PyTorch
twin of the run's networks, method and optimizer, and compares.

    python bench/torch_parity.py DUMP_DIR... [--tolerance-step 1e-4] [--tolerance-free 1e-3]

Each DUMP_DIR holds config.toml (the resolved run config), views.safetensors (the exact two
views of every step), steps.safetensors (collapse-lab's loss, pos/neg cosine, lr, τ and gradient
norm per step) and state-k.safetensors (every tensor before step k, k = 0..K: online and target
weights and batch-norm statistics, momentum buffers, queue; PyTorch's names).

Two checks, float32 on both sides:
- Each step: the twin takes step k from collapse-lab's state k; the loss, pos_cos, neg_cos and
  gradient norm of step k and every tensor of state k + 1 must agree within --tolerance-step. A
  difference that flipping one or two ReLU inputs within 1e-5 of the kink removes is reported as
  such (float32 rounding may put such an input on either side).
- Free run: the twin runs all K steps from state 0 on its own, taking collapse-lab's ReLU branch
  decisions and max-pool taps (so that one input within rounding of a kink does not send the
  runs apart: max(a, b) = b + relu(a − b) has the same kink), and its per-step values and state K
  must agree within --tolerance-free, or within CONDITIONING × the distance PyTorch's own free
  run moves under float32 rounding alone, where that is larger: the largest of its run with the
  weights perturbed by one rounding (×(1 + 2⁻²⁴·N(0,1))), its run on channels-last kernels, on
  AVX2 kernels (where the CPU has AVX-512) and its distance from the same run in float64
  (measured and printed per run: ResNet-18's batch norms over a few pixels of a 16 px image, or
  its group norms over one pixel, are that sensitive). collapse-lab's own distance from the
  float64 run, and the free run on the twin's own branches, are printed too.

Measured: for a per-step scalar |ours − torch| / max(|torch|, 1); for a tensor
max |ours − torch| / max(max |torch|, 1e-3 · the largest entry of its group) — groups are the
online weights, online batch-norm statistics, target, velocities and queue; the floor keeps a
tensor whose true value is ~0 (a bias gradient a batch norm cancels) from being measured against
its own rounding noise. Parameters whose gradient is zero in exact arithmetic (found in float64)
are not compared. Exit 0 when every dump agrees.

Semantics are collapse-lab's, which follow the study's code: batch norm momentum 0.1 with the
unbiased running variance (PyTorch's convention), ε = 1e-5 everywhere, weight decay added to the
gradient before momentum (PyTorch's SGD), LARS as in BYOL (trust ratio η‖w‖/‖u‖ after weight
decay, biases and norm parameters excluded from both when configured), the EMA target in
training mode (its batch norms use and update batch statistics), the queue newest-first.
"""
import argparse
import copy
import math
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

EPS = 1e-5
# A free run may differ from PyTorch's by this many times the distance PyTorch's own run moves
# under float32 rounding alone (see `replay`).
CONDITIONING = 2.0
# A ReLU input this close to 0 may land on either side of the kink in float32.
KINK = 1e-5


class _Relu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, flip, branch):
        mask = x > 0 if branch is None else branch
        if flip is not None:
            mask = mask ^ flip
        ctx.save_for_backward(mask)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask.to(grad.dtype), None, None


class KinkReLU(nn.Module):
    """ReLU that remembers its inputs, and whose gradient mask can be flipped at chosen
    elements: an input within float32 rounding of 0 may fall on either side of the kink in two
    correct implementations, and flipping it tells whether that explains a difference. Given
    `branches` (per call, which elements pass the gradient), it takes those decisions instead of
    its own: a free run then follows collapse-lab's branches."""

    def __init__(self):
        super().__init__()
        self.inputs = []
        self.flips = {}
        self.branches = {}

    def forward(self, x):
        call = len(self.inputs)
        self.inputs.append(x.detach())
        return _Relu.apply(x, self.flips.get(call), self.branches.get(call))

    def branch_decisions(self):
        """Per call, the elements whose gradient passes."""
        return [(x > 0) ^ self.flips[c] if c in self.flips else x > 0 for c, x in enumerate(self.inputs)]


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, own, chosen):
        ctx.save_for_backward(chosen)
        ctx.shape = x.shape
        return x.flatten(2).gather(2, own.flatten(2)).view(own.shape)

    @staticmethod
    def backward(ctx, grad):
        (chosen,) = ctx.saved_tensors
        dx = grad.new_zeros(ctx.shape).flatten(2)
        dx.scatter_add_(2, chosen.flatten(2), grad.flatten(2))
        return dx.view(ctx.shape), None, None


class KinkMaxPool(nn.Module):
    """3×3 max pooling, stride 2, padding 1, whose choice of tap per window can be set: the
    maximum of two taps within float32 rounding of each other is a kink like the ReLU's
    (max(a, b) = b + relu(a − b)), and the gradient goes to whichever tap wins. Given `branches`
    (per call, the chosen tap of every window), its gradient follows those choices; the value
    stays its own maximum."""

    def __init__(self):
        super().__init__()
        self.choices = []
        self.branches = {}

    def forward(self, x):
        call = len(self.choices)
        _, own = F.max_pool2d(x.detach(), 3, 2, 1, return_indices=True)
        self.choices.append(own)
        return _MaxPool.apply(x, own, self.branches.get(call, own))


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


class BatchNormPart(nn.BatchNorm1d):
    """Batch norm taken apart (collapse-lab's head norms `bn_center`, `bn_scale`,
    `bn_detached`, `ghost_bn`), written for this check from their definitions: γ, β, running
    statistics and counter as batch norm's, momentum 0.1 towards the batch mean and unbiased
    variance; evaluation uses the running statistics the part uses."""

    def __init__(self, c, kind, ghost):
        super().__init__(c, eps=EPS, momentum=0.1)
        self.kind, self.ghost = kind, ghost

    def track(self, mean, unbiased):
        with torch.no_grad():
            self.running_mean.copy_(self.running_mean * 0.9 + mean.detach() * 0.1)
            self.running_var.copy_(self.running_var * 0.9 + unbiased.detach() * 0.1)
            self.num_batches_tracked += 1

    def forward(self, x):
        w, b = self.weight, self.bias
        if not self.training:
            rm, rv = self.running_mean, self.running_var
            if self.kind == "bn_center":
                return (x - rm) * w + b
            if self.kind == "bn_scale":
                return x / torch.sqrt(rv + EPS) * w + b
            return (x - rm) / torch.sqrt(rv + EPS) * w + b
        if self.kind == "ghost_bn":
            outs, means, variances = [], [], []
            for part in x.split(self.ghost):
                n = part.shape[0]
                mean = part.mean(0)
                var = ((part - mean) ** 2).mean(0)
                outs.append((part - mean) / torch.sqrt(var + EPS))
                means.append(mean)
                variances.append(var * n / max(n - 1, 1))
            self.track(torch.stack(means).mean(0), torch.stack(variances).mean(0))
            return torch.cat(outs) * w + b
        n = x.shape[0]
        mean = x.mean(0)
        var = ((x - mean) ** 2).mean(0)
        self.track(mean, var * n / max(n - 1, 1))
        if self.kind == "bn_center":
            return (x - mean) * w + b
        if self.kind == "bn_scale":
            return x / torch.sqrt(var + EPS) * w + b
        # bn_detached: the statistics are constants in the backward pass.
        return (x - mean.detach()) / torch.sqrt(var.detach() + EPS) * w + b


def norm1d(c, kind, groups, ghost=16):
    if kind == "bn":
        return nn.BatchNorm1d(c, eps=EPS, momentum=0.1)
    if kind in ("bn_center", "bn_scale", "bn_detached", "ghost_bn"):
        return BatchNormPart(c, kind, ghost)
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
        self.pool = KinkMaxPool()
        c = width
        for stage in range(4):
            out = width << stage
            blocks = [Block(c, out, 2 if stage > 0 else 1, enc), Block(out, out, 1, enc)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
            c = out

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        if self.imagenet:
            h = self.pool(h)
        for stage in range(4):
            h = getattr(self, f"layer{stage + 1}")(h)
        return h.mean((2, 3))


def head(cin, cfg, groups, ghost):
    return nn.Sequential(
        nn.Linear(cin, cfg["hidden"]), norm1d(cfg["hidden"], cfg["norm"], groups, ghost), KinkReLU(), nn.Linear(cfg["hidden"], cfg["out"])
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
        self.projector = head(out, m["projector"], m["gn_groups"], m["ghost_batch"])
        method = cfg["method"]["name"]
        self.predictor = head(m["projector"]["out"], m["predictor"], m["gn_groups"], m["ghost_batch"]) if method in ("byol", "simsiam", "contrastive") else None

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

    def __init__(self, cfg, cin, dtype=torch.float32, channels_last=False):
        self.method = cfg["method"]["name"]
        self.temperature = cfg["method"]["temperature"]
        self.dtype = dtype
        # Channels-last runs PyTorch's other convolution kernels: the same function, rounded
        # differently.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.online = Online(cfg, cin).to(dtype=dtype, memory_format=self.memory_format)
        self.target = Target(self.online) if self.method in ("byol", "moco", "contrastive") else None
        self.queue = None
        self.opt = Optimizer(cfg["optim"], self.online)

    def load(self, state):
        """Load a state (in its own precision) into this twin's precision."""
        cast = lambda v: v.to(self.dtype) if v.is_floating_point() else v
        state = {k: cast(v) for k, v in state.items()}
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
        v0, v1 = (v.to(self.dtype).contiguous(memory_format=self.memory_format) for v in (v0, v1))
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


# Set in a child process that only runs the free run and saves it here.
CHILD_OUT = os.environ.get("COLLAPSE_LAB_PARITY_CHILD_OUT")
HAS_AVX512 = "avx512f" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False


def avx2_free_run(dump):
    """PyTorch's free run of `dump` (on collapse-lab's branches) with its kernels capped at AVX2."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "free.pt"
        env = dict(os.environ, COLLAPSE_LAB_PARITY_CHILD_OUT=str(out), ONEDNN_MAX_CPU_ISA="AVX2",
                   MKL_ENABLE_INSTRUCTIONS="AVX2", ATEN_CPU_CAPABILITY="avx2")
        subprocess.run([sys.executable, __file__, str(dump)], env=env, check=True, stdout=subprocess.DEVNULL)
        return torch.load(out, weights_only=False)


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

    names = ("loss", "pos_cos", "neg_cos", "grad_norm")
    ours_scalars = [tuple(steps[w][k].item() for w in names) for k in range(k_steps)]

    def step_views(model, k):
        return model.step(views[f"view0.{k}"], views[f"view1.{k}"], steps["lr"][k].item(), steps["tau"][k].item())

    # Step parity: every step from collapse-lab's own state before it.
    twin.load(states[0])
    skip = zero_gradient_params(twin, views["view0.0"], views["view1.0"])
    relus = [m for m in twin.online.modules() if isinstance(m, KinkReLU)]
    pools = [m for m in twin.online.modules() if isinstance(m, KinkMaxPool)]

    def forced(k, flips):
        """Step k from collapse-lab's state k; the largest error against its step k and state
        k + 1, and the messages of what exceeds the tolerance."""
        twin.load(states[k])
        for i, r in enumerate(relus):
            r.inputs, r.flips, r.branches = [], flips.get(i, {}), {}
        for p in pools:
            p.choices, p.branches = [], {}
        got = step_views(twin, k)
        errors, problems = state_errors(states[k + 1], twin.state(), skip)
        worst, messages = 0.0, [f"after step {k}: {p}" for p in problems]
        for what, ours, theirs in zip(names, ours_scalars[k], got):
            err = abs(ours - theirs) / max(abs(theirs), 1.0)
            worst = max(worst, err)
            if not err <= tol_step:
                messages.append(f"step {k} {what}: ours {ours:.8g} torch {theirs:.8g} (rel {err:.2e})")
        for name, err in errors.items():
            worst = max(worst, err)
            if not err <= tol_step:
                messages.append(f"after step {k}: {name} rel {err:.2e}")
        return worst, messages

    worst_step, kinks, branches, taps = 0.0, [], [], []
    for k in range(k_steps):
        worst, messages = forced(k, {})
        chosen = {}
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
                    best = (w, m, flip, flips)
            if best is not None and not best[1]:
                worst, messages, chosen = best[0], [], best[3]
                kinks.append(f"step {k}: {len(best[2])} ReLU input(s) at {', '.join(f'{c[0]:.1e}' for c in best[2])} from the kink")
            forced(k, chosen)
        # collapse-lab's branch decisions at step k, as the forced step (with its flips) saw them.
        branches.append([r.branch_decisions() for r in relus])
        taps.append([p.choices for p in pools])
        worst_step = max(worst_step, worst)
        failures.extend(messages)

    # K steps run freely from the first state, following collapse-lab's ReLU branches: float32
    # rounding moves two correct runs apart, and the ReLU kink turns an input within rounding of 0
    # into a different gradient, which later steps amplify. With the branches shared, what is
    # left is everything else a run accumulates (momentum, EMA target, running statistics,
    # queue, schedules). The branches PyTorch would have taken differently are counted.
    def free_run(follow, perturb=False, channels_last=False, dtype=torch.float32):
        free = Twin(cfg, cin, dtype=dtype, channels_last=channels_last)
        free.load(states[0])
        if perturb:
            # One rounding's worth of noise on every weight.
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in free.online.parameters():
                    p.mul_(1 + 2.0**-24 * torch.randn(p.shape, generator=gen))
        own = [m for m in free.online.modules() if isinstance(m, KinkReLU)]
        own_pools = [m for m in free.online.modules() if isinstance(m, KinkMaxPool)]
        got, overridden, nearest, windows = [], 0, 0.0, 0
        for k in range(k_steps):
            for i, r in enumerate(own):
                r.inputs, r.branches = [], dict(enumerate(branches[k][i])) if follow else {}
            for i, p in enumerate(own_pools):
                p.choices, p.branches = [], dict(enumerate(taps[k][i])) if follow else {}
            got.append(step_views(free, k))
            for i, r in enumerate(own):
                for call, x in enumerate(r.inputs):
                    differ = (x > 0) != branches[k][i][call]
                    overridden += int(differ.sum())
                    if differ.any():
                        nearest = max(nearest, x[differ].abs().max().item())
            for i, p in enumerate(own_pools):
                windows += sum(int((c != t).sum()) for c, t in zip(p.choices, taps[k][i]))
        worst = max((abs(x - y) / max(abs(y), 1.0) for sa, sb in zip(ours_scalars, got) for x, y in zip(sa, sb)), default=0.0)
        errors, problems = state_errors(states[k_steps], free.state(), skip)
        return max([worst, *errors.values()]), errors, problems, (overridden, nearest, windows), (free.state(), got)

    worst_free, errors, problems, (overridden, nearest, windows), (state32, got32) = free_run(True)
    if CHILD_OUT:
        # A child run on another instruction set (`avx2_free_run`): hand back the free run.
        torch.save((state32, got32), CHILD_OUT)
        return True
    worst_own, _, _, (own_flips, _, own_windows), _ = free_run(False)

    def apart(run, reference):
        """The largest error of a free run's (state K, per-step values) against a reference's."""
        (state, got), (state_ref, got_ref) = run, reference
        errors, _ = state_errors(state, state_ref, skip)
        scalars = (abs(x - y) / max(abs(y), 1.0) for sa, sb in zip(got, got_ref) for x, y in zip(sa, sb))
        return max([*scalars, *errors.values()])

    def moved(other):
        """How far PyTorch's own free run (on collapse-lab's branches) moves under `other`."""
        return apart((state32, got32), other[-1])

    # PyTorch against itself: how far float32 rounding alone carries this run in K steps.
    perturbed = moved(free_run(True, perturb=True))
    channels_last = moved(free_run(True, channels_last=True))
    # The same run in float64: how far float32 rounding at every operation of every step carries
    # PyTorch's run from the exact one (a perturbation of the first state alone understates it
    # where a network amplifies rounding, as the ResNet-18 with group norms over one pixel does).
    exact = free_run(True, dtype=torch.float64)
    float64 = moved(exact)
    ours_from_exact = apart((states[k_steps], ours_scalars), exact[-1])
    # The same free run with PyTorch's kernels on AVX2 (a child process: the instruction set is
    # chosen at start-up): what a change of instruction set alone, such as ours between gemm's
    # AVX2 and AVX-512 kernels, does to a run. 0 where the CPU has no AVX-512 (same kernels).
    other_isa = moved((avx2_free_run(dump),)) if HAS_AVX512 else 0.0
    sensitivity = max(perturbed, channels_last, other_isa, float64)
    failures.extend(f"after {k_steps} free steps: {p}" for p in problems)
    # Where float32 rounding alone moves PyTorch farther than the tolerance (a ResNet-18's batch
    # norms over a few pixels), no float32 implementation can do better: the bound is then that
    # measured distance, with CONDITIONING's room for two independently rounded runs.
    bound = max(tol_free, CONDITIONING * sensitivity)
    if not worst_free <= bound:
        failures.append(f"after {k_steps} free steps: {worst_free:.2e} > {bound:.2e}")
        for name, err in sorted(errors.items(), key=lambda e: -e[1])[:5]:
            failures.append(f"after {k_steps} free steps: {name} rel {err:.2e}")
    label = f"{dump.name:<26} {twin.method:<12} {k_steps:>2} steps"
    print(
        f"{label}  each step {worst_step:.1e}  {k_steps} free steps {worst_free:.1e}"
        f" (PyTorch vs itself: one rounding on the weights {perturbed:.1e}, channels-last {channels_last:.1e},"
        f" AVX2 kernels {other_isa:.1e}, float64 {float64:.1e}; collapse-lab from float64 {ours_from_exact:.1e})  "
        + ("ok" if not failures else "DIFFERS")
    )
    print(
        f"    free run on its own branches: {worst_own:.1e} ({own_flips} ReLU input(s) on the other side"
        + (f", {own_windows} max-pool window(s) on another tap" if pools else "")
        + f"); on collapse-lab's: {overridden} input(s) overridden, the farthest {nearest:.1e} from the kink"
        + (f", {windows} max-pool window(s)" if pools else "")
    )
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
        default=1e-3,
        help="the K free-running steps (on collapse-lab's ReLU branches) must agree this well, or "
        "within CONDITIONING times what float32 rounding alone does to PyTorch's own run",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    ok = [replay(d, args.tolerance_step, args.tolerance_free) for d in args.dumps]
    print(f"{sum(ok)} of {len(ok)} dumps agree")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
