import torch

from needle_nav_training.model import CBAM, TransformerBottleneck, VesselUNet, VesselUNetExport, parameter_count


def test_any_size_divisible_by_8_gives_4_class_logits_of_the_same_size():
    torch.manual_seed(0)
    net = VesselUNet(base=4).eval()
    for shape in [(1, 1, 16, 16, 16), (2, 1, 8, 24, 40)]:
        with torch.no_grad():
            out = net(torch.randn(*shape))
        assert out.shape == (shape[0], 4, *shape[2:])


def test_export_wrapper_ends_with_softmax_over_classes():
    net = VesselUNetExport(VesselUNet(base=4)).eval()
    with torch.no_grad():
        p = net(torch.randn(1, 1, 16, 16, 16))
    assert torch.allclose(p.sum(1), torch.ones(1, 16, 16, 16), atol=1e-5)
    assert (p >= 0).all()


def test_default_network_is_small_for_cpu():
    net = VesselUNet()
    n = parameter_count(net)
    assert 100_000 < n < 1_000_000, n
    assert net.transformer.blocks[0].attn.heads == 4
    assert net.bott.block[0].out_channels == 64


def test_cbam_and_transformer_keep_shapes_and_use_spatial_information():
    torch.manual_seed(0)
    cbam = CBAM(8)
    x = torch.randn(2, 8, 6, 8, 10)
    assert cbam(x).shape == x.shape
    tb = TransformerBottleneck(16, 4).eval()
    y = torch.randn(1, 16, 2, 3, 4)
    out = tb(y)
    assert out.shape == y.shape
    # Self-attention mixes tokens: changing one voxel changes the output elsewhere.
    y2 = y.clone()
    y2[0, :, 0, 0, 0] += 5.0
    assert (tb(y2) - out)[0, :, 1, 2, 3].abs().max() > 1e-4


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = VesselUNet(base=4)
    out = net(torch.randn(2, 1, 16, 16, 16))
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
