"""Plain-PyTorch stand-ins for fla's Triton kernels, so train.py can be smoke-tested on a CPU.

Only for `train.py --device cpu` (tools/train/smoke-test): fla's HGRN2 layers call Triton kernels
that need a GPU. install() replaces, inside fla's modules, the functions HGRN2 uses with slow
PyTorch versions of the same semantics (including fla's defaults: q scaled by dk^-0.5, the gate
norm's eps 1e-5); the model classes, configuration, saving and loading stay fla's own. The
configuration must have fuse_norm=False and fuse_swiglu=False (train.py sets them on the CPU).
"""

import torch
import torch.nn.functional as F


def naive_gla(q, k, v, g=None, gk=None, scale=None, initial_state=None, output_final_state=False,
              state_v_first=False, cu_seqlens=None, **kwargs):
    """[B, T, H, K] q, k, log-gates; [B, T, H, V] v. The recurrence of fla.ops.gla, one step at a time."""
    if cu_seqlens is not None:
        raise NotImplementedError("cu_seqlens")
    gates = gk if gk is not None else g
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    scale = dk ** -0.5 if scale is None else scale
    state = q.new_zeros(b, h, dk, dv, dtype=torch.float32)
    if initial_state is not None:
        state = initial_state.float().transpose(-1, -2) if state_v_first else initial_state.float()
    outputs = []
    for i in range(t):
        state = state * gates[:, i].float().exp()[..., None] + \
            k[:, i].float()[..., None] * v[:, i].float()[..., None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, i].float() * scale, state))
    o = torch.stack(outputs, 1).to(v.dtype)
    final = None
    if output_final_state:
        final = state.transpose(-1, -2) if state_v_first else state
    return o, final


def rms_norm_linear(x, norm_weight, norm_bias, linear_weight, linear_bias, residual=None,
                    eps=1e-5, prenorm=False, residual_in_fp32=False):
    if residual is not None or prenorm:
        raise NotImplementedError("residual/prenorm")
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * norm_weight.float()
    if norm_bias is not None:
        y = y + norm_bias.float()
    return F.linear(y.to(linear_weight.dtype), linear_weight, linear_bias)


def short_convolution_forward(self, x, residual=None, mask=None, cache=None,
                              output_final_state=False, cu_seqlens=None, **kwargs):
    if residual is not None or cache is not None or cu_seqlens is not None:
        raise NotImplementedError("residual/cache/cu_seqlens")
    if mask is not None:
        x = x * mask.unsqueeze(-1)
    width = self.kernel_size[0]
    y = F.conv1d(x.transpose(1, 2), self.weight, self.bias, padding=width - 1,
                 groups=self.weight.shape[0])[..., :x.shape[1]].transpose(1, 2)
    if self.activation is not None:
        y = F.silu(y)
    final = None
    if output_final_state:
        final = F.pad(x.transpose(1, 2), (width, 0))[..., -width:]
    return y, final


def install():
    import fla.layers.hgrn2 as hgrn2_layer
    import fla.modules.mlp as mlp
    from fla.modules import ShortConvolution

    hgrn2_layer.chunk_gla = naive_gla
    hgrn2_layer.fused_recurrent_gla = naive_gla
    hgrn2_layer.fused_chunk_gla = naive_gla
    hgrn2_layer.swish = F.silu
    hgrn2_layer.rms_norm_linear = rms_norm_linear
    mlp.swiglu = lambda x, y: F.silu(x) * y
    ShortConvolution.forward = short_convolution_forward
