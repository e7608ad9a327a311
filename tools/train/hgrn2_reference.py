"""An HGRN2 language model written out token by token in plain PyTorch, independent of fla.

It reads a checkpoint's tensors by their safetensors names and runs shared/HGRN2.md's computation
one token at a time (any dtype; float64 for a reference). One switch says how the gate norm meets
the recurrence output o = S q:

  - gate_norm="fla": as fla 0.6.0 computes it. fla's GLA kernels multiply q by dk^-0.5 (their
    default `scale`, which HGRN2Attention does not override), and HGRN2Attention calls
    rms_norm_linear(o, g_norm.weight, ...) without an eps, so that norm uses its default 1e-5
    rather than config.norm_eps. With o' = dk^-0.5 o:  rmsnorm(o', eps 1e-5).
  - gate_norm="spec": shared/HGRN2.md as written: rmsnorm(o, norm_eps), no scale.

The two agree when mean(o^2) is far above dk * 1e-5 (random weights at a large scale, as in the
golden fixtures) and differ where it is not (a trained model's small activations): train.py
measures by how much on the trained model.
"""

import torch
import torch.nn.functional as F


def _rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class ReferenceHGRN2:
    """One sequence at a time: step(token) returns the logits after that token."""

    def __init__(self, tensors, config, *, gate_norm="fla", dtype=torch.float64, device="cpu"):
        if gate_norm not in ("fla", "spec"):
            raise ValueError(f"gate_norm must be 'fla' or 'spec', got {gate_norm!r}")
        self.w = {name: t.to(device=device, dtype=dtype) for name, t in tensors.items()}
        self.dtype, self.device = dtype, device
        d = config["hidden_size"]
        self.num_layers = config["num_hidden_layers"]
        expand_ratio, num_heads = config.get("expand_ratio"), config.get("num_heads")
        if expand_ratio is None:
            expand_ratio = d // num_heads
        self.dk = expand_ratio
        self.heads = d // self.dk
        self.dv = d // self.heads
        self.eps = config.get("norm_eps", 1e-6)
        self.use_conv = config.get("use_short_conv", False)
        self.conv_size = config.get("conv_size", 4)
        self.use_lower_bound = config.get("use_lower_bound", True)
        self.tied = config.get("tie_word_embeddings", False)
        if gate_norm == "fla":
            self.q_scale, self.gate_eps = self.dk ** -0.5, 1e-5
        else:
            self.q_scale, self.gate_eps = 1.0, self.eps
        if self.use_lower_bound:
            lb = self.w["model.lower_bounds"].softmax(0)
            self.lower_bounds = lb.cumsum(0) - lb[0]
        self.o_mean_square = [[] for _ in range(self.num_layers)]  # per layer, per step: mean(o^2)
        self.reset()

    def reset(self):
        zeros = lambda *shape: torch.zeros(*shape, dtype=self.dtype, device=self.device)
        self.states = [zeros(self.heads, self.dv, self.dk) for _ in range(self.num_layers)]
        d = self.heads * self.dv
        self.windows = [[zeros(d, self.conv_size) for _ in range(3)]
                        for _ in range(self.num_layers)]

    def _conv(self, layer, which, name, x):
        window = torch.cat([self.windows[layer][which][:, 1:], x[:, None]], dim=1)
        self.windows[layer][which] = window
        return (window * self.w[name][:, 0, :]).sum(-1)

    @torch.no_grad()
    def step(self, token):
        w = self.w
        x = w["model.embeddings.weight"][token]
        for l in range(self.num_layers):
            p = f"model.layers.{l}."
            a = _rms_norm(x, w[p + "attn_norm.weight"], self.eps)
            q = w[p + "attn.q_proj.weight"] @ a
            f = w[p + "attn.f_proj.weight"] @ a
            v = w[p + "attn.i_proj.weight"] @ a
            if self.use_conv:
                q = self._conv(l, 0, p + "attn.q_conv1d.weight", q)
                f = self._conv(l, 1, p + "attn.f_conv1d.weight", f)
                v = self._conv(l, 2, p + "attn.i_conv1d.weight", v)
            q = q * torch.sigmoid(q)
            log_g = F.logsigmoid(f)
            if self.use_lower_bound and l > 0:
                lb = self.lower_bounds[l]
                log_g = torch.logaddexp(lb.log(), torch.log1p(-lb) + log_g)
            k = 1 - log_g.exp()
            q, k, log_g = (t.view(self.heads, self.dk) for t in (q, k, log_g))
            v = v.view(self.heads, self.dv)
            s = self.states[l] * log_g.exp()[:, None, :] + v[:, :, None] * k[:, None, :]
            self.states[l] = s
            o = torch.einsum("hvk,hk->hv", s, q * self.q_scale).reshape(-1)
            self.o_mean_square[l].append(float(o.pow(2).mean()) / self.q_scale ** 2)
            x = x + w[p + "attn.o_proj.weight"] @ _rms_norm(o, w[p + "attn.g_norm.weight"],
                                                             self.gate_eps)
            m = _rms_norm(x, w[p + "mlp_norm.weight"], self.eps)
            gate = w[p + "mlp.gate_proj.weight"] @ m
            x = x + w[p + "mlp.down_proj.weight"] @ (F.silu(gate) * (w[p + "mlp.up_proj.weight"] @ m))
        head = w["model.embeddings.weight"] if self.tied else w["lm_head.weight"]
        return head @ _rms_norm(x, w["model.norm.weight"], self.eps)

    def log_probs(self, ids):
        """log p(ids[t] | ids[<t]) for t >= 1, from a fresh state."""
        self.reset()
        out = []
        for t in range(len(ids) - 1):
            logits = self.step(ids[t])
            out.append((logits.log_softmax(-1)[ids[t + 1]]).item())
        return out

    def greedy(self, prompt, new_tokens, eos_ids):
        """Greedy continuation (EOS allowed; stops after generating one)."""
        self.reset()
        for token in prompt[:-1]:
            self.step(token)
        ids, last = [], prompt[-1]
        for _ in range(new_tokens):
            last = int(self.step(last).argmax())
            ids.append(last)
            if last in eos_ids:
                break
        return ids

