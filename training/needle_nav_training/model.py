"""3-D U-Net with CBAM on every skip and a transformer bottleneck (the method's network).

Layout (base width b, default 8; 3 poolings; any Z, Y, X divisible by 8):

    enc1  [b]    two (Conv3d 3x3x3 + BN + ReLU)       full resolution
    pool  2x2x2 max
    enc2  [2b]   two Conv-BN-ReLU                      1/2
    pool
    enc3  [4b]   two Conv-BN-ReLU                      1/4
    pool
    bott  [w]    two Conv-BN-ReLU, then positional depthwise conv (added) and
                 transformer blocks over the voxels as tokens            1/8
    dec3  ConvTranspose3d 2x2x2/2 -> [4b], concat CBAM(enc3) -> two Conv-BN-ReLU
    dec2  ... -> [2b], concat CBAM(enc2)
    dec1  ... -> [b],  concat CBAM(enc1)
    head  Conv3d 1x1x1 -> 4 classes (logits; `VesselUNetExport` appends softmax)

Everything is shape-agnostic: no fixed-size embeddings, attention is written with plain
matmuls so the legacy ONNX exporter produces a graph with dynamic N, Z, Y, X.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from . import NUM_CLASSES


class ConvUnit(nn.Module):
    """Two (Conv3d 3x3x3 pad 1 + BatchNorm3d + ReLU)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.block(x)


class ChannelAttention(nn.Module):
    """CBAM channel attention: shared MLP over global average- and max-pooled features, sigmoid."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        hidden = max(channels // reduction, 2)
        self.mlp = nn.Sequential(
            nn.Conv3d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, channels, 1),
        )

    def forward(self, x):
        avg = x.mean(dim=(2, 3, 4), keepdim=True)
        mx = x.amax(dim=(2, 3, 4), keepdim=True)
        return x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))


class SpatialAttention(nn.Module):
    """CBAM spatial attention: 7x7x7 conv over the channel-wise max and mean maps, sigmoid."""

    def __init__(self, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv3d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x):
        maps = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(maps))


class CBAM(nn.Module):
    """Channel attention, then spatial attention."""

    def __init__(self, channels: int):
        super().__init__()
        self.channel = ChannelAttention(channels)
        self.spatial = SpatialAttention()

    def forward(self, x):
        return self.spatial(self.channel(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens [N, L, C] (explicit matmuls: exports cleanly)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, t):
        n = t.shape[0]
        qkv = self.qkv(t).reshape(n, -1, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [N, H, L, D]
        att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim)), dim=-1)
        out = torch.matmul(att, v).permute(0, 2, 1, 3).reshape(n, -1, self.heads * self.head_dim)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """LayerNorm -> MHSA -> residual; LayerNorm -> Linear-GELU-Linear -> residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, t):
        t = t + self.attn(self.norm1(t))
        return t + self.ffn(self.norm2(t))


class TransformerBottleneck(nn.Module):
    """Voxels of the deepest feature map as tokens; positional information from a depthwise
    3x3x3 conv added to the features (works at any spatial size)."""

    def __init__(self, dim: int, heads: int, depth: int = 1, mlp_ratio: int = 2):
        super().__init__()
        self.pos = nn.Conv3d(dim, dim, 3, padding=1, groups=dim)
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)])

    def forward(self, x):
        x = x + self.pos(x)
        n, c = x.shape[0], x.shape[1]
        t = x.flatten(2).transpose(1, 2)  # [N, L, C]
        for b in self.blocks:
            t = b(t)
        return t.transpose(1, 2).reshape(x.shape)


class UpUnit(nn.Module):
    """ConvTranspose3d 2x2x2 stride 2, concatenate the CBAM-weighted skip, two Conv-BN-ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose3d(cin, cout, 2, stride=2)
        self.cbam = CBAM(cskip)
        self.conv = ConvUnit(cout + cskip, cout)

    def forward(self, x, skip):
        return self.conv(torch.cat([self.up(x), self.cbam(skip)], dim=1))


class VesselUNet(nn.Module):
    def __init__(self, base: int = 8, bottleneck: int = 64, heads: int = 4, depth: int = 1,
                 mlp_ratio: int = 2, num_classes: int = NUM_CLASSES):
        super().__init__()
        c1, c2, c3 = base, 2 * base, 4 * base
        self.config = dict(base=base, bottleneck=bottleneck, heads=heads, depth=depth,
                           mlp_ratio=mlp_ratio, num_classes=num_classes)
        self.enc1 = ConvUnit(1, c1)
        self.enc2 = ConvUnit(c1, c2)
        self.enc3 = ConvUnit(c2, c3)
        self.pool = nn.MaxPool3d(2)
        self.bott = ConvUnit(c3, bottleneck)
        self.transformer = TransformerBottleneck(bottleneck, heads, depth, mlp_ratio)
        self.dec3 = UpUnit(bottleneck, c3, c3)
        self.dec2 = UpUnit(c3, c2, c2)
        self.dec1 = UpUnit(c2, c1, c1)
        self.head = nn.Conv3d(c1, num_classes, 1)

    def forward(self, x):
        """Logits [N, 4, Z, Y, X]."""
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool(s1))
        s3 = self.enc3(self.pool(s2))
        b = self.transformer(self.bott(self.pool(s3)))
        d = self.dec3(b, s3)
        d = self.dec2(d, s2)
        d = self.dec1(d, s1)
        return self.head(d)


class VesselUNetExport(nn.Module):
    """The exported graph: logits -> softmax over the class axis."""

    def __init__(self, net: VesselUNet):
        super().__init__()
        self.net = net

    def forward(self, ct):
        return F.softmax(self.net(ct), dim=1)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
