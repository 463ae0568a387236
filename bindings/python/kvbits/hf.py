"""Calibrating a bit plan from a PyTorch / Hugging Face `transformers` causal LM.

    from kvbits import hf
    plan = hf.calibrate(model, texts, tokenizer=tok, out="model.kvbplan")

Queries and keys are captured with forward hooks on every attention module (Llama, Qwen2,
Qwen3, Mistral layouts: separate q_proj / k_proj, optional per-head q_norm / k_norm as in Qwen3,
split-half RoPE, GQA) and on the model's rotary embedding, whose cos/sin are applied exactly as
the model applies them, so the captured tensors are the post-RoPE queries and keys the model
attends with (the keys equal its own cache). The calibrator's statistics do not depend on RoPE,
but post-RoPE capture lets the same hooks feed a kvbits cache. torch and transformers are
imported only when these functions run.
"""
from .calibrator import Calibrator
from .context import Backend, Context
from .errors import InvalidArgument, Unsupported
from .plan import ModelShape, RopeLayout


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _rope_theta(config):
    theta = getattr(config, "rope_theta", None)
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if theta is None and isinstance(params, dict):
        theta = params.get("rope_theta")
    return float(theta) if theta is not None else 10000.0


def model_shape(config):
    """The kvbits ModelShape of a transformers config (split-half RoPE, GQA)."""
    c = _text_config(config)
    n_q = int(c.num_attention_heads)
    n_kv = int(getattr(c, "num_key_value_heads", None) or n_q)
    head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // n_q)
    rotary = int(head_dim * float(getattr(c, "partial_rotary_factor", 1.0) or 1.0))
    return ModelShape(n_layers=int(c.num_hidden_layers), n_q_heads=n_q, n_kv_heads=n_kv, head_dim=head_dim,
                      rotary_dim=rotary, rope_layout=RopeLayout.SPLIT_HALF, rope_theta=_rope_theta(c))


def _rotate_half(x):
    import torch
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class QKCapture:
    """Forward hooks that hand each attention layer's post-RoPE queries and keys to a callback:
    on_qk(layer, q [batch, tokens, n_q_heads, head_dim], k [batch, tokens, n_kv_heads, head_dim])
    (torch tensors in the model's dtype and device). Use as a context manager around forward
    passes; the hooks are removed on exit."""

    def __init__(self, model, on_qk):
        self.on_qk = on_qk
        self.shape = model_shape(model.config)
        self._handles = []
        self._rope = None  # (cos, sin) of the latest rotary-embedding call
        self._attn = [(name, m) for name, m in model.named_modules()
                      if hasattr(m, "q_proj") and hasattr(m, "k_proj")]
        if len(self._attn) != self.shape.n_layers:
            raise Unsupported(f"found {len(self._attn)} attention modules with q_proj and k_proj, but the config says "
                              f"{self.shape.n_layers} layers; kvbits.hf knows Llama, Qwen2, Qwen3 and Mistral layouts")
        self._rotary = [m for _, m in model.named_modules() if type(m).__name__.endswith("RotaryEmbedding")]
        if not self._rotary:
            raise Unsupported("no rotary embedding module (a class named *RotaryEmbedding) found in the model")

    def __enter__(self):
        for m in self._rotary:
            self._handles.append(m.register_forward_hook(self._keep_rope))
        for index, (_, attn) in enumerate(self._attn):
            layer = int(getattr(attn, "layer_idx", index) if getattr(attn, "layer_idx", None) is not None else index)
            self._hook_attention(layer, attn)
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def _keep_rope(self, module, args, output):
        self._rope = output

    def _hook_attention(self, layer, attn):
        seen = {}

        def keep(key):
            def hook(module, args, output):
                seen[key] = output
            return hook

        for key in ("q_proj", "k_proj", "q_norm", "k_norm"):
            sub = getattr(attn, key, None)
            if sub is not None:
                self._handles.append(sub.register_forward_hook(keep(key)))

        def done(module, args, output):
            q = seen.pop("q_norm", None)
            k = seen.pop("k_norm", None)
            q_lin, k_lin = seen.pop("q_proj"), seen.pop("k_proj")
            d = self.shape.head_dim
            q = q_lin.view(*q_lin.shape[:-1], -1, d) if q is None else q
            k = k_lin.view(*k_lin.shape[:-1], -1, d) if k is None else k
            self.on_qk(layer, *self._apply_rope(q, k))

        self._handles.append(attn.register_forward_hook(done))

    def _apply_rope(self, q, k):
        """The model's own RoPE, q * cos + rotate_half(q) * sin, on [batch, tokens, heads, dim]."""
        if self._rope is None:
            raise Unsupported("the rotary embedding did not run before attention")
        cos, sin = self._rope
        if cos.dim() == 2:  # older transformers: a [positions, dim] table; inputs start at position 0
            cos, sin = cos[: q.shape[1]].unsqueeze(0), sin[: q.shape[1]].unsqueeze(0)
        if cos.shape[-1] != q.shape[-1]:
            raise Unsupported(f"rotary embedding of {cos.shape[-1]} dims on heads of {q.shape[-1]}: "
                              "partial rotary is not handled by kvbits.hf")
        cos, sin = cos.unsqueeze(2).to(q.dtype), sin.unsqueeze(2).to(q.dtype)
        return (q * cos) + (_rotate_half(q) * sin), (k * cos) + (_rotate_half(k) * sin)


def _batches(texts, tokenizer, token_ids, max_length, batch_size, device):
    """(input_ids, attention_mask) batches, right-padded so every real token keeps its position."""
    import torch
    if (texts is None) == (token_ids is None):
        raise InvalidArgument("give either texts (with a tokenizer) or token_ids")
    if texts is not None:
        if tokenizer is None:
            raise InvalidArgument("texts need a tokenizer")
        texts = [texts] if isinstance(texts, str) else list(texts)
        side, pad = tokenizer.padding_side, tokenizer.pad_token
        tokenizer.padding_side = "right"
        if pad is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        try:
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(list(texts[i:i + batch_size]), return_tensors="pt", padding=True, truncation=True,
                                max_length=max_length)
                yield enc["input_ids"].to(device), enc["attention_mask"].to(device)
        finally:
            tokenizer.padding_side = side
            if pad is None:
                tokenizer.pad_token = pad
        return
    if isinstance(token_ids, torch.Tensor) and token_ids.dim() == 2:
        token_ids = list(token_ids)
    seqs = [torch.as_tensor(s, dtype=torch.long).reshape(-1)[:max_length] for s in token_ids]
    for i in range(0, len(seqs), batch_size):
        chunk = [s for s in seqs[i:i + batch_size] if len(s)]
        if not chunk:
            continue
        width = max(len(s) for s in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, :len(s)], mask[row, :len(s)] = s, 1
        yield ids.to(device), mask.to(device)


def calibrate(model, texts=None, *, tokenizer=None, token_ids=None, max_length=512, batch_size=1, out=None,
              context=None, **plan_options):
    """Runs `model` over texts (with `tokenizer`) or token-id sequences, feeds every layer's
    post-RoPE queries and keys to a kvbits calibrator and returns the plan (also saved to `out`
    when given). plan_options go to Calibrator.build_plan (k_avg_bits, v_bits, method, ...).
    Padding tokens are never observed."""
    import numpy as np
    import torch

    shape = model_shape(model.config)
    device = next(model.parameters()).device
    own_context = context is None
    ctx = Context(Backend.CPU) if own_context else context
    n_tokens = 0
    try:
        with Calibrator(ctx, shape) as cal:
            mask_rows = None

            def observe(layer, q, k):
                rows = mask_rows
                q = q[rows].detach().to(torch.float32).cpu().numpy()
                k = k[rows].detach().to(torch.float32).cpu().numpy()
                cal.observe(layer, q=np.ascontiguousarray(q), k=np.ascontiguousarray(k))

            was_training = model.training
            model.eval()
            try:
                with QKCapture(model, observe), torch.no_grad():
                    for ids, mask in _batches(texts, tokenizer, token_ids, max_length, batch_size, device):
                        mask_rows = mask.bool()
                        model(input_ids=ids, attention_mask=mask, use_cache=False)
                        n_tokens += int(mask_rows.sum())
            finally:
                model.train(was_training)
            if n_tokens == 0:
                raise InvalidArgument("no tokens to calibrate on (empty texts or token_ids)")
            plan = cal.build_plan(**plan_options)
    finally:
        if own_context:
            ctx.close()
    if out is not None:
        plan.save(out)
    return plan
