"""Loads an exported encoder (collapse-lab export RUN --format torch) into torchvision's
resnet18 strictly (fc aside) and checks that it gives collapse-lab's features on the same
images. Exit 0 when every feature agrees to 1e-4 relative (of the largest feature), 1 otherwise.

    python bench/torch_features.py --encoder RUN/encoder.torch.safetensors --data DATA.safetensors

DATA holds `images` (N, 3, H, W, normalised) and `features` (N, 512): collapse-lab's encoder
output in evaluation mode (batch norm with its running statistics).
"""
import argparse
import sys

import torch
import torchvision
from safetensors.torch import load_file

TOLERANCE = 1e-4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"])
    args = ap.parse_args()
    model = torchvision.models.resnet18()
    if args.stem == "cifar":
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    state = load_file(args.encoder)
    result = model.load_state_dict(state, strict=False)
    if sorted(result.missing_keys) != ["fc.bias", "fc.weight"] or result.unexpected_keys:
        print(f"strict load failed: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
        return 1
    model.fc = torch.nn.Identity()
    model.eval()
    data = load_file(args.data)
    with torch.no_grad():
        ours = data["features"].double()
        theirs = model(data["images"]).double()
    scale = ours.abs().max().item()
    diff = (ours - theirs).abs().max().item()
    rel = diff / max(scale, 1e-30)
    print(f"resnet18 strict load ok (fc aside); features {tuple(theirs.shape)}: max |Δ| {diff:.3e}, relative {rel:.3e} (tolerance {TOLERANCE:g})")
    return 0 if rel <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
