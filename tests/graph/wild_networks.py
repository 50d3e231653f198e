"""Networks written the way their authors write them, for the wild-networks tests.

Each entry of ``CONVERTING`` is ``name -> (factory, input shape)``; each of
``REFUSED`` is ``name -> (factory, the exact error message up to "Supported")``.
The code follows the published sources' style (SIREN paper's ``SineLayer``,
lucidrains' ``siren-pytorch`` as used by DWSNets, the PyTorch tutorial's LeNet,
torchvision's ``BasicBlock``, MobileNet's depthwise separable block), written
here from their descriptions.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nft_pyg.graph import register_activation


# --- SIREN (Sitzmann et al. 2020), the paper's code style -------------------------
class SineLayer(nn.Module):
    def __init__(self, in_features, out_features, bias=True, is_first=False, omega_0=30):
        super().__init__()
        self.omega_0 = omega_0
        self.is_first = is_first
        self.in_features = in_features
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.init_weights()

    def init_weights(self):
        with torch.no_grad():
            bound = 1 / self.in_features if self.is_first else \
                np.sqrt(6 / self.in_features) / self.omega_0
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, input):
        return torch.sin(self.omega_0 * self.linear(input))


class PaperSiren(nn.Module):
    def __init__(self, in_features=2, hidden_features=16, hidden_layers=2, out_features=1,
                 outermost_linear=True, first_omega_0=30, hidden_omega_0=30.):
        super().__init__()
        self.net = [SineLayer(in_features, hidden_features, is_first=True,
                              omega_0=first_omega_0)]
        for _ in range(hidden_layers):
            self.net.append(SineLayer(hidden_features, hidden_features, omega_0=hidden_omega_0))
        if outermost_linear:
            final_linear = nn.Linear(hidden_features, out_features)
            with torch.no_grad():
                bound = np.sqrt(6 / hidden_features) / hidden_omega_0
                final_linear.weight.uniform_(-bound, bound)
            self.net.append(final_linear)
        else:
            self.net.append(SineLayer(hidden_features, out_features, omega_0=hidden_omega_0))
        self.net = nn.Sequential(*self.net)

    def forward(self, coords):
        coords = coords.clone().detach().requires_grad_(True)
        output = self.net(coords)
        return output, coords


class PaperSirenNet(PaperSiren):
    """The paper's network with a forward returning the output only."""

    def forward(self, coords):
        return self.net(coords)


# --- siren-pytorch (lucidrains), the layers DWSNets' INRs are made of -------------------
class Sine(nn.Module):
    def __init__(self, w0=1.):
        super().__init__()
        self.w0 = w0

    def forward(self, x):
        return torch.sin(self.w0 * x)


class Siren(nn.Module):
    def __init__(self, dim_in, dim_out, w0=1., c=6., is_first=False, use_bias=True,
                 activation=None):
        super().__init__()
        self.dim_in = dim_in
        self.is_first = is_first
        weight = torch.zeros(dim_out, dim_in)
        bias = torch.zeros(dim_out) if use_bias else None
        w_std = (1 / dim_in) if self.is_first else (math.sqrt(c / dim_in) / w0)
        weight.uniform_(-w_std, w_std)
        if bias is not None:
            bias.uniform_(-w_std, w_std)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if use_bias else None
        self.activation = Sine(w0) if activation is None else activation

    def forward(self, x):
        out = F.linear(x, self.weight, self.bias)
        out = self.activation(out)
        return out


class DWSNetsINR(nn.Module):
    def __init__(self, in_features=2, n_layers=3, hidden_features=16, out_features=1):
        super().__init__()
        layers = [Siren(in_features, hidden_features, w0=30., is_first=True)]
        for _ in range(n_layers - 2):
            layers.append(Siren(hidden_features, hidden_features, w0=30.))
        layers.append(nn.Linear(hidden_features, out_features))
        self.seq = nn.Sequential(*layers)

    def forward(self, x):
        return self.seq(x)


# --- sines written in other ways ------------------------------------------------------
class SinBuffer(nn.Module):
    def __init__(self, w0=30.):
        super().__init__()
        self.register_buffer("w0", torch.tensor(w0))

    def forward(self, x):
        return torch.sin(self.w0 * x)


class SinParameter(nn.Module):
    def __init__(self, w0=25.):
        super().__init__()
        self.w0 = nn.Parameter(torch.tensor(w0))

    def forward(self, x):
        return torch.sin(x * self.w0)


class SinLiteral(nn.Module):
    def forward(self, x):
        return torch.sin(30 * x)


def sine_variants():
    return nn.Sequential(nn.Linear(2, 8), SinBuffer(), nn.Linear(8, 8), SinParameter(),
                         nn.Linear(8, 8), SinLiteral(), nn.Linear(8, 1))


class LookAlikeSine(nn.Module):
    """Named like a sine activation, but adds one."""

    def __init__(self, w0=30.):
        super().__init__()
        self.w0 = w0

    def forward(self, x):
        return torch.sin(self.w0 * x) + 1


LookAlikeSine.__name__ = "Sine"


# --- LeNet-5 --------------------------------------------------------------------------------
class LeNet(nn.Module):
    """The PyTorch 60-minute blitz network (functional pooling and activations)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNetView(LeNet):
    def forward(self, x):
        x = F.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = F.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = torch.tanh(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return self.fc3(x)


class LeNetNumFlat(LeNet):
    """The old tutorial's ``x.view(-1, self.num_flat_features(x))``."""

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, self.num_flat_features(x))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    def num_flat_features(self, x):
        size = x.size()[1:]
        num_features = 1
        for s in size:
            num_features *= s
        return num_features


# --- MLPs written in several styles -------------------------------------------------------------
class LoopMLP(nn.Module):
    def __init__(self, widths=(4, 16, 16, 3)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = F.leaky_relu(layer(x), 0.2)
        return self.layers[-1](x)


class GeluEluMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        x = F.gelu(self.fc1(x), approximate="tanh")
        x = F.elu(self.fc2(x), alpha=0.5)
        return self.fc3(x).sigmoid()


def ordered_dict_mlp():
    return nn.Sequential(OrderedDict([("fc1", nn.Linear(4, 8)), ("act1", nn.SiLU()),
                                      ("drop", nn.Dropout(0.1)), ("fc2", nn.Linear(8, 8)),
                                      ("norm", nn.LayerNorm(8)), ("act2", nn.Tanh()),
                                      ("fc3", nn.Linear(8, 2))]))


def weight_norm_mlp():
    return nn.Sequential(nn.utils.weight_norm(nn.Linear(4, 8)), nn.ReLU(),
                         nn.utils.weight_norm(nn.Linear(8, 2)))


def parametrized_weight_norm_mlp():
    wn = nn.utils.parametrizations.weight_norm
    return nn.Sequential(wn(nn.Linear(4, 8)), nn.ReLU(), wn(nn.Linear(8, 8)), nn.ReLU(),
                         nn.Linear(8, 2))


class ResidualMLP(nn.Module):
    def __init__(self, dim=8, hidden=12, blocks=2):
        super().__init__()
        self.inp = nn.Linear(3, dim)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(),
                                                  nn.Linear(hidden, dim)) for _ in range(blocks))
        self.out = nn.Linear(dim, 2)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class ResidualMLPFromInput(nn.Module):
    """h + f(h) on the network's input itself (the input layer joins the stream)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(4, 10), nn.Linear(10, 4), nn.Linear(4, 2)

    def forward(self, x):
        x = x + self.fc2(torch.tanh(self.fc1(x)))
        return self.out(x)


# --- ResNet ---------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` with an identity shortcut."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, norm=True):
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=not norm)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=not norm)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class SmallResNet(nn.Module):
    def __init__(self, norm=True, downsample=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8) if norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, norm=norm), BasicBlock(8, 8, norm=norm))
        down = nn.Sequential(nn.Conv2d(8, 12, 1, 2, bias=False), nn.BatchNorm2d(12)) \
            if downsample else None
        self.layer2 = BasicBlock(8, 12, 2, down) if downsample else nn.Identity()
        width = 12 if downsample else 8
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width, 5)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class PreActBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1)
        self.bn2, self.conv2 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + x


def preact_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), PreActBlock(4))


# --- other CNNs --------------------------------------------------------------------------------
def depthwise_separable():
    """A MobileNet-style block (ReLU for ReLU6)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def grouped_cnn():
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding="same"), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, groups=4, padding="valid"), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 2 * 2, 3))


class ReshapeCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding="same")
        self.c2 = nn.Conv2d(4, 4, 3, padding="same", padding_mode="circular")
        self.fc = nn.Linear(4 * 3 * 3, 2)

    def forward(self, x):
        x = F.adaptive_max_pool2d(F.silu(self.c1(x)), 6)
        x = F.adaptive_avg_pool2d(torch.relu(self.c2(x)), (3, 3))
        return self.fc(x.reshape(x.shape[0], -1))


def conv1d_net():
    return nn.Sequential(nn.Conv1d(2, 4, 5, padding=2), nn.ELU(), nn.AvgPool1d(2),
                         nn.Conv1d(4, 4, 3, dilation=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4, 3))


# --- user-declared activations -------------------------------------------------------------------
class OpaqueSine(nn.Module):
    """Computes sin(w x) through numpy: tracing cannot follow it."""

    def __init__(self, frequency=3.0):
        super().__init__()
        self.frequency = frequency

    def forward(self, x):
        return torch.from_numpy(np.sin(self.frequency * x.detach().numpy()))


class OpaqueWrong(nn.Module):
    """Registered as ReLU, but computes something else."""

    def forward(self, x):
        return torch.from_numpy(np.maximum(x.detach().numpy(), 0.1))


register_activation(OpaqueSine, "sine", lambda module: {"w0": module.frequency})
register_activation(OpaqueWrong, "relu")


# --- refused shapes of code ----------------------------------------------------------
class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x, y):
        return self.fc(x) + y


def hooked():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    net[0].register_forward_hook(lambda module, args, output: output * 2)
    return net


def pre_hooked():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    net[2].register_forward_pre_hook(lambda module, args: (args[0] + 1,))
    return net


CONVERTING = {
    "siren paper SineLayer net": (lambda: PaperSirenNet(), (7, 2)),
    "siren paper, last SineLayer": (lambda: PaperSirenNet(outermost_linear=False), (7, 2)),
    "siren paper .net": (lambda: PaperSiren().net, (7, 2)),
    "DWSNets INR (siren-pytorch layers)": (lambda: DWSNetsINR(), (7, 2)),
    "siren-pytorch Siren layer alone": (lambda: Siren(2, 5, w0=30., is_first=True), (7, 2)),
    "sine as buffer, parameter, literal": (sine_variants, (7, 2)),
    "nft_pyg.Sine SIREN": (lambda: nn.Sequential(nn.Linear(2, 8), __import__("nft_pyg").Sine(30.),
                                                 nn.Linear(8, 1)), (7, 2)),
    "LeNet-5 functional": (LeNet, (3, 1, 32, 32)),
    "LeNet-5 view(x.size(0), -1), tanh, avg pool": (LeNetView, (3, 1, 32, 32)),
    "ModuleList loop, F.leaky_relu(x, 0.2)": (LoopMLP, (5, 4)),
    "F.gelu(tanh), F.elu(alpha), .sigmoid()": (GeluEluMLP, (5, 4)),
    "OrderedDict Sequential, dropout, LayerNorm": (ordered_dict_mlp, (5, 4)),
    "weight_norm MLP": (weight_norm_mlp, (5, 4)),
    "parametrizations.weight_norm MLP": (parametrized_weight_norm_mlp, (5, 4)),
    "residual MLP": (ResidualMLP, (5, 3)),
    "residual MLP on the input": (ResidualMLPFromInput, (5, 4)),
    "small ResNet (BasicBlock, BatchNorm)": (lambda: SmallResNet(), (2, 3, 8, 8)),
    "small ResNet without BatchNorm": (lambda: SmallResNet(norm=False), (2, 3, 8, 8)),
    "MobileNet-style depthwise separable": (depthwise_separable, (2, 3, 8, 8)),
    "grouped convs, padding same / valid": (grouped_cnn, (2, 4, 6, 6)),
    "functional adaptive pools, reshape, circular": (ReshapeCNN, (2, 1, 9, 9)),
    "Conv1d, dilation, ELU, AvgPool1d": (conv1d_net, (2, 2, 16)),
    "registered opaque sine": (lambda: nn.Sequential(nn.Linear(2, 6), OpaqueSine(),
                                                     nn.Linear(6, 1)), (7, 2)),
}

REFUSED = {
    "siren paper forward (returns output, coords)": (
        lambda: PaperSiren(),
        "the network (PaperSiren): it calls the tensor method .requires_grad_(), which has no "
        "neuron-graph form."),
    "look-alike Sine: sin(w0 x) + 1": (
        lambda: nn.Sequential(nn.Linear(2, 4), LookAlikeSine(), nn.Linear(4, 1)),
        "module 1 (Sine): it adds a constant to its activations, which is not an element-wise "
        "activation the graph knows."),
    "forward hook": (
        hooked,
        "module 0 (Linear): it has forward hooks, which change what it computes and cannot be "
        "kept in a graph; remove them before converting."),
    "forward pre-hook": (
        pre_hooked,
        "module 2 (Linear): it has forward pre-hooks, which change what it computes and cannot "
        "be kept in a graph; remove them before converting."),
    "LeNet num_flat_features": (
        LeNetNumFlat,
        "the network (LeNetNumFlat): its forward has Python control flow (if / for / while) "
        "that depends on tensor values."),
    "ResNet projection shortcut": (
        lambda: SmallResNet(downsample=True),
        "module layer2 (BasicBlock): its forward branches: a layer reads a value other than the "
        "previous layer's output (only residual additions h + f(h) with an identity shortcut "
        "can join two branches; a projection shortcut is not supported)."),
    "pre-activation residual block": (
        preact_net,
        "module 1 (PreActBlock): its residual addition adds the value after '0', but that value "
        "is not what the next weight layer reads ('1.bn1' comes first); supported: h + f(h) "
        "where h is a layer's output after its norm and activation and f starts with a Linear "
        "or Conv (not a pre-activation block)."),
    "GroupNorm": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(),
                              nn.Conv2d(4, 2, 1)),
        "module 1 (GroupNorm): GroupNorm(2, 4) normalises each channel with statistics over "
        "its group and the spatial positions, which per-neuron norm parameters (BatchNorm, "
        "LayerNorm over a Linear layer) cannot hold."),
    "ReLU6 (MobileNetV2)": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Conv2d(4, 2, 1)),
        "module 1 (ReLU6) is not supported."),
    "Swish written as x * sigmoid(x)": (
        lambda: nn.Sequential(nn.Linear(3, 4), Swish(), nn.Linear(4, 2)),
        "module 1 (Swish): it multiplies two activations (a gate), which no neuron graph can "
        "hold."),
    "two inputs": (
        TwoInputs,
        "the network (TwoInputs): its forward takes more than one input."),
    "registered activation that is wrong": (
        lambda: nn.Sequential(nn.Linear(3, 4), OpaqueWrong(), nn.Linear(4, 2)),
        None),  # the message holds a measured difference; checked by prefix in the test
    "padding='same' with an even kernel": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 2, padding="same")),
        "module 0 (Conv2d): padding='same' with kernel_size=(2, 2) and dilation=(1, 1) pads "
        "unevenly (more on one side), which integer padding cannot express."),
}


class DoubledLinear(nn.Linear):
    """A Linear subclass with its own forward: never trusted as a Linear."""

    def forward(self, x):
        return super().forward(x) * 2


REFUSED["Linear subclass with its own forward"] = (
    lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), DoubledLinear(4, 2)),
    "module 2 (DoubledLinear): it returns its activations times 2; a product with a constant "
    "is supported only inside a sine, sin(w0 * x).")


class CifarBlock(nn.Module):
    """The BasicBlock of the widely copied pytorch-cifar ResNets: an empty
    ``nn.Sequential`` as the identity shortcut, functional ReLUs."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, 1, stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class CifarResNet(nn.Module):
    def __init__(self, planes=(8, 8), num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(CifarBlock(8, planes[0]), CifarBlock(planes[0], planes[0]))
        self.layer2 = CifarBlock(planes[0], planes[1], stride=1 if planes[1] == 8 else 2)
        self.linear = nn.Linear(planes[1], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = F.adaptive_avg_pool2d(out, 1)
        out = out.view(out.size(0), -1)
        return self.linear(out)


CONVERTING["pytorch-cifar ResNet (empty Sequential shortcut)"] = (CifarResNet, (2, 3, 8, 8))
REFUSED["pytorch-cifar ResNet with a projection shortcut"] = (
    lambda: CifarResNet(planes=(8, 16)),
    "module layer2 (CifarBlock): its forward branches: a layer reads a value other than the "
    "previous layer's output (only residual additions h + f(h) with an identity shortcut can "
    "join two branches; a projection shortcut is not supported).")


class MnistExample(nn.Module):
    """The network of PyTorch's MNIST example (examples/mnist/main.py)."""

    def __init__(self, log_softmax=True):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        self.conv2 = nn.Conv2d(4, 8, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(8 * 5 * 5, 16)
        self.fc2 = nn.Linear(16, 10)
        self.log_softmax = log_softmax

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        if self.log_softmax:
            return F.log_softmax(x, dim=1)
        return x


CONVERTING["PyTorch MNIST example, logits"] = (lambda: MnistExample(False), (2, 1, 14, 14))
REFUSED["PyTorch MNIST example with log_softmax"] = (
    MnistExample,
    "the network (MnistExample): it calls F.log_softmax, which has no neuron-graph form.")


def torch_pruned_mlp():
    """An MLP pruned with torch.nn.utils.prune (weight_orig * weight_mask)."""
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 2))
    nn.utils.prune.random_unstructured(net[0], "weight", amount=0.5)
    nn.utils.prune.l1_unstructured(net[2], "bias", amount=0.3)
    return net


CONVERTING["torch.nn.utils.prune MLP"] = (torch_pruned_mlp, (5, 4))


class NumpyTanh(nn.Module):
    """Computes tanh through numpy and is not registered."""

    def forward(self, x):
        return torch.from_numpy(np.tanh(x.detach().numpy()))


REFUSED["unregistered numpy activation"] = (
    lambda: nn.Sequential(nn.Linear(3, 4), NumpyTanh(), nn.Linear(4, 2)),
    "module 1 (NumpyTanh): its forward uses tensor values or shapes in Python code (e.g. "
    "len(x), int(x.shape[1]), a numpy call), which cannot be followed without running it "
    "(error: invalid __array_struct__); register_activation can declare an activation.")
