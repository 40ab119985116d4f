"""Token log-likelihoods of S models of one class at once, their parameters stacked along a
leading seed axis (covpipe.vectorized trains seeds this way).

STACKED maps a model class to two functions:
    inputs(template model, prompt (n, P), response (n, L)) -> {name: (n, ...)}, once per seed, and
    fn(template model, params {name: (S, ...)}, {name: (S, B, ...)}) -> (S, B, L) token log-likelihoods, nats.
A seed's numbers never depend on the other seeds of its stack: per-seed products, never one
matmul over the stack.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sequences import context_windows

CACHE_FLOATS = 2**24  # per seed: precompute the AR-linear norms when they fit in 64 MB


def token_inputs(model, prompt, response) -> dict:
    """Per-sequence inputs of a class that reads tokens: the tokens. prompt (n, P), response (n, L)."""
    return {"prompt": prompt, "response": response}


def ar_linear_inputs(model, prompt, response) -> dict:
    """The AR-linear logits <theta, phi> = B (<theta, c> + <theta, e_v>) / ||c + e_v|| need the norms,
    which do not depend on theta: computed once per training sequence, not once per step."""
    feats = model.features
    windows = torch.from_numpy(
        context_windows(prompt.cpu().numpy(), response.cpu().numpy(), feats.window - 1, model.vocab.bos)
    ).to(response.device)  # (n, L, w-1)
    if windows.shape[-1] == 0 or response.numel() * feats.vocab_size > CACHE_FLOATS:
        return {"windows": windows, "response": response}
    _, norm = feats.sum_and_norms(windows, model.theta.dtype)
    # c itself is cheaper to gather again from the small table each step than to read back from memory
    return {"windows": windows, "norm": norm, "response": response}  # (n, L, w-1), (n, L, V), (n, L)


def ar_linear_token_log_probs(model, params, batch):
    """The AR-linear class (covpipe.models.ar_linear) for S parameter vectors theta (S, d)."""
    feats = model.features
    if "norm" in batch:
        c, norm = feats.context_sum(batch["windows"], params["theta"].dtype), batch["norm"]
    else:
        c, norm = feats.sum_and_norms(batch["windows"], params["theta"].dtype)
    e = feats.table[0, : feats.vocab_size].to(device=c.device, dtype=c.dtype)  # (V, d)
    return _ARLinearLogLik.apply(params["theta"], c, norm, e, batch["response"], feats.scale)


class _ARLinearLogLik(torch.autograd.Function):
    """log pi_theta(y | context) at every position for S thetas, gradient written out.

    The logits are B (<theta, c> + <theta, e_v>) / ||c + e_v|| (covpipe.features), so
    d loss / d theta = B (sum_pos w_pos c_pos + sum_v u_v e_v) with u = (dlogits / norm) and
    w = sum_v u: two passes over the stacked arrays instead of autograd's several (the stack of
    16 seeds does not fit in cache, so passes over memory are the cost).
    theta (S, d); c (S, B, L, d); norm (S, B, L, V); e (V, d); y (S, B, L). Returns (S, B, L).
    """

    @staticmethod
    def forward(ctx, theta, c, norm, e, y, scale):
        s, b, length, d = c.shape
        # <theta_s, c> by one matrix-vector product per seed: the same kernel whatever the group's size
        ct = torch.stack([torch.mv(c[i].view(-1, d), theta[i]) for i in range(s)]).view(s, b, length, 1)
        logits = scale * (ct + (e * theta[:, None, :]).sum(-1)[:, None, None, :]) / norm  # (S, B, L, V)
        lse = logits.logsumexp(-1, keepdim=True)
        out = logits.gather(-1, y.unsqueeze(-1)) - lse
        ctx.save_for_backward(c, norm, e, y, logits.sub_(lse).exp_())  # the softmax, computed in place
        ctx.scale = scale
        return out.squeeze(-1)

    @staticmethod
    def backward(ctx, grad):
        c, norm, e, y, probs = ctx.saved_tensors
        # d out / d logits = onehot(y) - p, times grad; then through the / norm
        u = (probs * -grad[..., None]).scatter_add_(-1, y.unsqueeze(-1), grad.unsqueeze(-1)).div_(norm)
        # per seed or by sums, never one matmul over the stack: a seed's gradient must not depend on its group
        s, _, _, d = c.shape
        w = u.sum(-1)  # (S, B, L)
        d_theta = torch.stack([torch.mv(c[i].view(-1, d).T, w[i].reshape(-1)) for i in range(s)]) + (
            u.sum((1, 2))[:, :, None] * e
        ).sum(1)  # (S, d)
        return ctx.scale * d_theta, None, None, None, None, None


class StackedGRU(torch.autograd.Function):
    """One GRU layer (PyTorch's gate equations) with a separate weight set per seed.

    x: (T, S, In + 1, B) inputs whose last row is 1 (it carries the input biases); w_in:
    (S, 3H, In + 1) = [w_ih | b_ih + (b_hr, b_hz, 0)]; w_hh: (S, 3H, H) and b_hn: (S, H), rows in
    nn.GRU's order (r, z, n). Returns the hidden states (T, S, H, B).

    Each time step works on contiguous (S, rows, B) blocks that stay in cache, with views made
    once per sequence: at these sizes an op's Python and dispatch overhead, not its arithmetic,
    is the cost, and no tensor of the whole sequence is ever permuted. The backward pass is
    written out: the forward loop stores each step's local derivatives, so a backward step is two
    multiplies and four small batched matmuls, several times fewer ops than autograd's.
    """

    @staticmethod
    def forward(ctx, x, w_in, w_hh, b_hn):
        t_len, s, _, b = x.shape
        h_dim = w_hh.shape[2]
        # w_hh's rows reordered to (n, r, z), so that the derivatives of (gh_n, gh_r, gh_z) and of
        # (gi_r, gi_z, gi_n) are the two overlapping contiguous blocks [0:3] and [1:4] of `coef`.
        w_hh_nrz = torch.cat([w_hh[:, 2 * h_dim :], w_hh[:, : 2 * h_dim]], 1)
        b_hn = b_hn[:, :, None]  # (S, H, 1)
        hs = x.new_zeros(t_len + 1, s, h_dim, b)  # slot 0: h_0 = 0; h_t at slot t + 1
        rz = x.new_empty(t_len, s, 2 * h_dim, b)
        coef = x.new_empty(t_len, s, 4, h_dim, b)  # d/dh_t of the pre-activations gh_n, gh_r, gh_z, gi_n
        n = x.new_empty(s, h_dim, b)
        xs, hs_in, hs_out = x.unbind(0), hs[:-1].unbind(0), hs[1:].unbind(0)
        rzs, rs, zs = rz.unbind(0), rz[:, :, :h_dim].unbind(0), rz[:, :, h_dim:].unbind(0)
        c_n, c_r, c_z, c_i = (coef[:, :, k].unbind(0) for k in range(4))
        for t in range(t_len):
            h, r, z = hs_in[t], rs[t], zs[t]
            gi_rz, gi_n = torch.bmm(w_in, xs[t]).split([2 * h_dim, h_dim], 1)  # biases included
            gh_n, gh_rz = torch.bmm(w_hh_nrz, h).split([h_dim, 2 * h_dim], 1)
            gh_n = gh_n + b_hn
            torch.add(gi_rz, gh_rz, out=rzs[t]).sigmoid_()
            torch.addcmul(gi_n, r, gh_n, out=n).tanh_()
            torch.lerp(n, h, z, out=hs_out[t])  # (1 - z) n + z h
            one_minus_z = 1 - z
            a_n = torch.addcmul(one_minus_z, one_minus_z * n, n, value=-1, out=c_i[t])  # (1 - z)(1 - n^2)
            torch.mul(a_n, r, out=c_n[t])
            torch.mul(a_n * gh_n, torch.addcmul(r, r, r, value=-1), out=c_r[t])  # ... r (1 - r)
            torch.mul(h - n, torch.addcmul(z, z, z, value=-1), out=c_z[t])  # (h_prev - n) z (1 - z)
        ctx.save_for_backward(x, w_in, w_hh_nrz, hs, rz, coef)
        return hs[1:]

    @staticmethod
    def backward(ctx, grad):
        x, w_in, w_hh_nrz, hs, rz, coef = ctx.saved_tensors
        t_len, s, _, h_dim, b = coef.shape
        grad = grad.contiguous()
        d_x = torch.empty_like(x)
        d_w_in, d_w_hh, d_b_hn = torch.zeros_like(w_in), torch.zeros_like(w_hh_nrz), x.new_zeros(s, h_dim)
        w_in_t, w_hh_t = w_in.transpose(1, 2), w_hh_nrz.transpose(1, 2)
        xs_t = x.transpose(2, 3).unbind(0)  # (S, B, In + 1) each
        hs_t = hs[:-1].transpose(2, 3).unbind(0)  # (S, B, H) each
        zs, grads, d_xs = rz[:, :, h_dim:].unbind(0), grad.unbind(0), d_x.unbind(0)
        c_gh, c_gi = coef[:, :, :3].unbind(0), coef[:, :, 1:].unbind(0)
        dh = torch.zeros_like(grads[0])
        for t in range(t_len - 1, -1, -1):
            dh = dh + grads[t]  # total gradient reaching h_t
            dh_ = dh[:, None]
            dgh = (c_gh[t] * dh_).view(s, 3 * h_dim, b)  # rows n, r, z
            dgi = (c_gi[t] * dh_).view(s, 3 * h_dim, b)  # rows r, z, n
            d_w_hh.baddbmm_(dgh, hs_t[t])
            d_w_in.baddbmm_(dgi, xs_t[t])
            torch.bmm(w_in_t, dgi, out=d_xs[t])
            d_b_hn += dgh[:, :h_dim].sum(-1)
            dh = torch.baddbmm(dh * zs[t], w_hh_t, dgh)
        d_w_hh = torch.cat([d_w_hh[:, h_dim:], d_w_hh[:, :h_dim]], 1)  # rows (n, r, z) -> (r, z, n)
        return d_x, d_w_in, d_w_hh, d_b_hn


def gru_token_log_probs(model, params, batch):
    """The GRU class (covpipe.models.gru) for S weight sets, any number of layers."""
    prompt, response = batch["prompt"], batch["response"]
    s, b, p = prompt.shape
    bos = torch.full((s, b, 1), model.vocab.bos, dtype=torch.int64, device=prompt.device)
    tokens = torch.cat([bos, prompt, response[..., :-1]], dim=-1).permute(2, 0, 1)  # (T, S, B)
    table = params["embed.weight"]  # (S, V_in + 1, E): one flat table, seed s's rows offset by s (V_in + 1)
    offset = (torch.arange(s, device=prompt.device) * table.shape[1])[None, :, None]
    x = F.embedding(tokens + offset, table.reshape(-1, table.shape[-1])).transpose(2, 3)  # (T, S, E, B)
    for k in range(model.rnn.num_layers):
        w_ih, b_ih, w_hh, b_hh = (params[f"rnn.{w}_l{k}"] for w in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))
        h_dim = w_hh.shape[2]
        # The input biases (b_ih, and b_hh's r and z parts, which add to the same pre-activations)
        # ride on a constant input row of ones; b_hn stays apart, it sits inside r * (...).
        bias = b_ih + torch.cat([b_hh[:, : 2 * h_dim], torch.zeros_like(b_hh[:, 2 * h_dim :])], 1)
        ones = x.new_ones(x.shape[0], s, 1, b)
        x = StackedGRU.apply(
            torch.cat([x, ones], 2), torch.cat([w_ih, bias[:, :, None]], 2), w_hh, b_hh[:, 2 * h_dim :]
        )
    states = x[p:].permute(1, 2, 0, 3).reshape(s, h_dim, -1)  # (S, H, L*B)
    logits = torch.baddbmm(params["head.bias"][:, :, None], params["head.weight"], states)  # (S, V, L*B)
    steps = torch.log_softmax(logits.view(s, logits.shape[1], -1, b), dim=1)  # (S, V, L, B)
    picked = steps.gather(1, response.permute(0, 2, 1).unsqueeze(1)).squeeze(1)  # (S, L, B)
    return picked.transpose(1, 2)  # (S, B, L)


STACKED = {  # class: (per-sequence inputs, computed once per seed; batched token log-likelihoods)
    "ar_linear": (ar_linear_inputs, ar_linear_token_log_probs),
    "gru": (token_inputs, gru_token_log_probs),
}
