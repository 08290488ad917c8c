"""The language model of the reference, written from TransformerLens' definitions
(`HookedTransformer` with attn_only=True, normalization_type='LN',
positional_embedding_type='shortformer'), independently of stagewise: in numpy (float64) and,
when torch is importable, as a torch module with TransformerLens' parameter names.

Used by check_lm_checkpoint.py and by scripts/convert_lm_checkpoints.py's test.
"""
import numpy as np

EPS = 1e-5


def layer_norm(x, w, b):
    x = x - x.mean(-1, keepdims=True)
    scale = np.sqrt((x * x).mean(-1, keepdims=True) + EPS)
    return x / scale * w + b


def numpy_logits(sd, tokens, n_layers):
    """Logits [batch, pos, vocab] of integer tokens [batch, pos] from a state dict of arrays."""
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()}
    tokens = np.asarray(tokens)
    t = tokens.shape[1]
    resid = sd["embed.W_E"][tokens]  # [b, t, d_model]
    pos = sd["pos_embed.W_pos"][:t]  # [t, d_model]
    for l in range(n_layers):
        p = f"blocks.{l}."
        x = layer_norm(resid, sd[p + "ln1.w"], sd[p + "ln1.b"])
        xqk = x + pos
        q = np.einsum("btm,hme->bthe", xqk, sd[p + "attn.W_Q"]) + sd[p + "attn.b_Q"]
        k = np.einsum("btm,hme->bthe", xqk, sd[p + "attn.W_K"]) + sd[p + "attn.b_K"]
        v = np.einsum("btm,hme->bthe", x, sd[p + "attn.W_V"]) + sd[p + "attn.b_V"]
        d_head = q.shape[-1]
        scores = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(d_head)
        mask = np.tril(np.ones((t, t), dtype=bool))
        scores = np.where(mask, scores, -np.inf)
        scores = scores - scores.max(-1, keepdims=True)
        pattern = np.exp(scores)
        pattern /= pattern.sum(-1, keepdims=True)
        z = np.einsum("bhqk,bkhe->bqhe", pattern, v)
        resid = resid + np.einsum("bqhe,hem->bqm", z, sd[p + "attn.W_O"]) + sd[p + "attn.b_O"]
    x = layer_norm(resid, sd["ln_final.w"], sd["ln_final.b"])
    return x @ sd["unembed.W_U"] + sd["unembed.b_U"]


def torch_model(cfg):
    """A torch module with TransformerLens' parameter names and shapes (no buffers)."""
    import torch
    from torch import nn

    c, nh, dh, v, n_ctx = cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_vocab"], cfg["n_ctx"]

    class LN(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(c))
            self.b = nn.Parameter(torch.zeros(c))

        def forward(self, x):
            x = x - x.mean(-1, keepdim=True)
            return x / (x.pow(2).mean(-1, keepdim=True) + EPS).sqrt() * self.w + self.b

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_Q = nn.Parameter(torch.empty(nh, c, dh))
            self.W_O = nn.Parameter(torch.empty(nh, dh, c))
            self.b_Q = nn.Parameter(torch.zeros(nh, dh))
            self.b_O = nn.Parameter(torch.zeros(c))
            self.W_K = nn.Parameter(torch.empty(nh, c, dh))
            self.W_V = nn.Parameter(torch.empty(nh, c, dh))
            self.b_K = nn.Parameter(torch.zeros(nh, dh))
            self.b_V = nn.Parameter(torch.zeros(nh, dh))

        def forward(self, xqk, x):
            q = torch.einsum("btm,hme->bthe", xqk, self.W_Q) + self.b_Q
            k = torch.einsum("btm,hme->bthe", xqk, self.W_K) + self.b_K
            v = torch.einsum("btm,hme->bthe", x, self.W_V) + self.b_V
            t = q.shape[1]
            s = torch.einsum("bqhe,bkhe->bhqk", q, k) / dh ** 0.5
            s = s.masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool)), float("-inf"))
            z = torch.einsum("bhqk,bkhe->bqhe", s.softmax(-1), v)
            return torch.einsum("bqhe,hem->bqm", z, self.W_O) + self.b_O

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = LN()
            self.attn = Attn()

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_E = nn.Parameter(torch.empty(v, c))

    class PosEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_pos = nn.Parameter(torch.empty(n_ctx, c))

    class Unembed(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_U = nn.Parameter(torch.empty(c, v))
            self.b_U = nn.Parameter(torch.zeros(v))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = Embed()
            self.pos_embed = PosEmbed()
            self.blocks = nn.ModuleList([Block() for _ in range(cfg["n_layers"])])
            self.ln_final = LN()
            self.unembed = Unembed()

        def forward(self, tokens):
            resid = self.embed.W_E[tokens]
            pos = self.pos_embed.W_pos[: tokens.shape[1]]
            for blk in self.blocks:
                x = blk.ln1(resid)
                resid = resid + blk.attn(x + pos, x)
            return self.ln_final(resid) @ self.unembed.W_U + self.unembed.b_U

    return Model()


def transformer_lens_model(cfg):
    """TransformerLens' own HookedTransformer for the config, or None if it does not import."""
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    tl_cfg = HookedTransformerConfig(
        n_layers=cfg["n_layers"],
        d_model=cfg["d_model"],
        d_head=cfg["d_head"],
        n_heads=cfg["n_heads"],
        n_ctx=cfg["n_ctx"],
        d_vocab=cfg["d_vocab"],
        act_fn=None,
        normalization_type="LN",
        attn_only=True,
        positional_embedding_type="shortformer",
        device="cpu",
    )
    return HookedTransformer(tl_cfg)
