"""An independent, literal transcription of the Caffe reference FCNs for the tests.

Layer names, paddings, kernel sizes and crop offsets as in shelhamer/fcn.berkeleyvision.org
`voc-fcn{32,16,8}s/net.py` (and the torchfcn port's key names): conv1_1 padded by 100,
ceil-mode pooling, fc6 7x7 unpadded, deconvs 64/32 (32s), 4 + 32/16 (16s), 4 + 4 + 16/8 (8s),
crops 19 (32s); 5, 27 (16s); 5, 9, 31 (8s). Written plainly, on purpose unlike fcnseg's code.
"""

import torch.nn.functional as F
from torch import nn

BLOCKS = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]


class ReferenceFCN(nn.Module):
    def __init__(self, arch: str, n_class: int = 21, atonce: bool = False):
        super().__init__()
        self.arch, self.atonce = arch, atonce
        for b, (cin, cout, n) in enumerate(BLOCKS, start=1):
            for i in range(1, n + 1):
                pad = 100 if (b, i) == (1, 1) else 1
                self.add_module(f"conv{b}_{i}", nn.Conv2d(cin if i == 1 else cout, cout, 3, 1, pad))
        self.fc6 = nn.Conv2d(512, 4096, 7)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.score_fr = nn.Conv2d(4096, n_class, 1)
        if arch == "fcn32s":
            self.upscore = nn.ConvTranspose2d(n_class, n_class, 64, 32, bias=False)
        else:
            self.score_pool4 = nn.Conv2d(512, n_class, 1)
            self.upscore2 = nn.ConvTranspose2d(n_class, n_class, 4, 2, bias=False)
        if arch == "fcn16s":
            self.upscore16 = nn.ConvTranspose2d(n_class, n_class, 32, 16, bias=False)
        if arch == "fcn8s":
            self.score_pool3 = nn.Conv2d(256, n_class, 1)
            self.upscore_pool4 = nn.ConvTranspose2d(n_class, n_class, 4, 2, bias=False)
            self.upscore8 = nn.ConvTranspose2d(n_class, n_class, 16, 8, bias=False)

    def forward(self, x):
        H, W = x.shape[2:]
        h = x
        pools = {}
        for b, (_, _, n) in enumerate(BLOCKS, start=1):
            for i in range(1, n + 1):
                h = F.relu(getattr(self, f"conv{b}_{i}")(h))
            h = F.max_pool2d(h, 2, 2, ceil_mode=True)
            pools[b] = h
        h = F.relu(self.fc6(h))
        h = F.relu(self.fc7(h))
        h = self.score_fr(h)
        if self.arch == "fcn32s":
            return self.upscore(h)[:, :, 19 : 19 + H, 19 : 19 + W]
        up2 = self.upscore2(h)
        p4 = pools[4] * 0.01 if self.atonce else pools[4]
        p4 = self.score_pool4(p4)[:, :, 5 : 5 + up2.size(2), 5 : 5 + up2.size(3)]
        h = up2 + p4
        if self.arch == "fcn16s":
            return self.upscore16(h)[:, :, 27 : 27 + H, 27 : 27 + W]
        up4 = self.upscore_pool4(h)
        p3 = pools[3] * 0.0001 if self.atonce else pools[3]
        p3 = self.score_pool3(p3)[:, :, 9 : 9 + up4.size(2), 9 : 9 + up4.size(3)]
        h = up4 + p3
        return self.upscore8(h)[:, :, 31 : 31 + H, 31 : 31 + W]
