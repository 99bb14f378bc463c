#!/usr/bin/env python3
"""Parity of the JAX training script's model code with the original Needle and with needle.

  /usr/bin/python3 scripts/train/parity.py [--fixtures ../shared/fixtures] [--bin build/bin]
  python3 scripts/train/parity.py --jax          # on the GPU machine: the same checks through JAX

Checks (numpy, float32 unless said; the bounds and why are printed with each number):
  forward   tiny and full fixture checkpoints (float16 pickles): encoder output and logits of
            cases A, B, C (a padded batch of two) and the contrastive embeddings, against the
            original JAX code's float32 outputs; INT4 fake quantization against the fixture's
            quantized kernels, and the INT4 forward
  losses    grads_tiny: text loss (ce + z) and CLIP loss (float64), and the fixture's gradients
            against central differences of our loss along random directions (float64)
  packing   two examples packed in one row give the logits they give alone
  classes   loss classes per character / token (vectors of tests/unit/prompt_test.cpp)
  optim     schedule, clipping, AdamW step, Newton-Schulz orthogonality, Muon step
  e2e       the trained e2e model: teacher-forced CE of golden examples (our tokenization and
            sequence building) against the original's loss_sum
  convert   (needs --bin with needle-convert and needle-eval) checkpoints written by our writer
            (the e2e model re-saved, and a fresh init_params model) go through needle-convert
            (--type f32), needle-eval --loss gives our per-example losses; --export-pkl gives
            back our float16 leaves bit for bit
Prints one line per check and "N passed, N failed"; exit status 1 on any failure.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import needle_data as D  # noqa: E402
import needle_model as M  # noqa: E402
import needle_optim as O  # noqa: E402

RESULTS = {"pass": 0, "fail": 0}
REPORT = []


def check(name, value, bound, note=""):
    ok = bool(np.isfinite(value)) and value <= bound
    RESULTS["pass" if ok else "fail"] += 1
    line = f"{'ok  ' if ok else 'FAIL'} {name}: {value:.3g} (bound {bound:g}){'  ' + note if note else ''}"
    REPORT.append(line)
    print(line, flush=True)
    return ok


def rel(a, b):
    """Max abs difference over the max abs reference value (a norm-wise relative error)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def read_ref(fix, name):
    meta = json.load(open(os.path.join(fix, "reference", name + ".json")))
    raw = open(os.path.join(fix, "reference", name + ".bin"), "rb").read()
    out = {}
    for k, v in meta.items():
        dt = np.float32 if v["dtype"] == "f32" else np.int32
        out[k] = np.frombuffer(raw, dt, v["nbytes"] // 4, v["offset"]).reshape(v["shape"])
    return out


# Bound for float32 forward parity. The original ran float32 with highest matmul precision; two
# float32 evaluations of the same 20-layer network differ by rounding alone, ~1e-6 of the largest
# value (measured: 1e-7 .. 1e-6). 1e-4 leaves a 100x margin for BLAS summation orders, while any
# architectural slip (a missing norm, RoPE layout, mask, GQA grouping, scale) moves the outputs
# by 1e-2 .. 1.
F32_BOUND = 1e-4


def forward_checks(ops, fix, name, tag="numpy", quick_int4=False):
    c, p, _ = M.load_pickle(os.path.join(fix, "checkpoints", f"{name}_np1_f16.pkl"))
    R = read_ref(fix, "ref_" + name)
    for prefix, pp in (("f32", p), ("int4", M.fake_quant_params(np, p))):
        pp = {k: ops.xp.asarray(v) for k, v in pp.items()}
        if prefix == "int4" and quick_int4:
            # The full shape's INT4 forward (case A) is enough to show the fake-quantized weights
            # are used as the original uses them; numpy on reference BLAS makes each case ~1 s.
            b = M.single_batch(R["f32_caseA_enc_tokens"], R["f32_caseA_dec_tokens"])
            enc, lg = M.forward_logits(ops, c, pp, b)
            check(f"{tag} {name} {prefix} caseA encoder output", rel(enc[0], R[f"{prefix}_caseA_enc_out"]), F32_BOUND)
            check(f"{tag} {name} {prefix} caseA logits", rel(lg[0], R[f"{prefix}_caseA_logits"]), F32_BOUND)
            continue
        for case in "AB":
            b = M.single_batch(R[f"f32_case{case}_enc_tokens"], R[f"f32_case{case}_dec_tokens"])
            enc, lg = M.forward_logits(ops, c, pp, b)
            check(f"{tag} {name} {prefix} case{case} encoder output", rel(enc[0], R[f"{prefix}_case{case}_enc_out"]), F32_BOUND)
            check(f"{tag} {name} {prefix} case{case} logits", rel(lg[0], R[f"{prefix}_case{case}_logits"]), F32_BOUND)
        el, dl = R["f32_caseC_enc_lens"], R["f32_caseC_dec_lens"]
        b = M.single_batch(R["f32_caseC_enc_tokens"], R["f32_caseC_dec_tokens"], enc_lens=el, dec_lens=dl)
        enc, lg = M.forward_logits(ops, c, pp, b)
        e_err = max(rel(np.asarray(enc)[i, :el[i]], R[f"{prefix}_caseC_enc_out"][i, :el[i]]) for i in range(2))
        l_err = max(rel(np.asarray(lg)[i, :dl[i]], R[f"{prefix}_caseC_logits"][i, :dl[i]]) for i in range(2))
        check(f"{tag} {name} {prefix} caseC (padded batch) encoder output", e_err, F32_BOUND)
        check(f"{tag} {name} {prefix} caseC (padded batch) logits", l_err, F32_BOUND)
        emb = M.contrastive_embedding(ops, c, pp, ops.xp.asarray(R["f32_contrastive_tokens"]))
        check(f"{tag} {name} {prefix} contrastive embeddings", rel(emb, R[f"{prefix}_contrastive_emb"]), F32_BOUND)
    # The fake quantizer itself: every fixture kernel must come out identical (<= 1 float32 ulp of
    # the group scale would be a rounding-order difference; we require exact equality).
    worst = 0.0
    for k, v in R.items():
        if k.startswith("fakequant/"):
            path = k[len("fakequant/"):]
            full = M.fake_quant(np, p[path])
            ours = full[: v.shape[0]] if full.ndim == 3 else full
            worst = max(worst, float(np.abs(ours - v).max()))
    check(f"{tag} {name} INT4 fake-quantized kernels (max abs diff)", worst, 0.0, "exact")
    return c


def loss_checks(fix):
    G = read_ref(fix, "grads_tiny")
    c, p, _ = M.load_pickle(os.path.join(fix, "checkpoints", "tiny_np1_f16.pkl"), np.float64)
    ops = M.numpy_ops(np.float64)
    b = {"enc_tokens": G["src"], "enc_seg": G["enc_seg"], "dec_in": G["tgt_in"], "dec_out": G["tgt_out"],
         "dec_seg": G["dec_seg"], "dec_cls": G["loss_class"]}
    b["enc_pos"] = np.broadcast_to(np.arange(b["enc_tokens"].shape[1]), b["enc_tokens"].shape)
    b["dec_pos"] = np.broadcast_to(np.arange(b["dec_in"].shape[1]), b["dec_in"].shape)
    weights = tuple(float(x) for x in G["loss_weights"])
    if weights != M.CLASS_WEIGHTS:
        check("grads_tiny loss weights = ours", 1.0, 0.0, f"{weights}")
    loss, aux = M.text_loss(ops, c, p, b)
    # The fixture's losses are float32 sums; ours float64: 1e-5 relative is ~100 float32 ulps.
    check("grads_tiny text_loss", abs(loss - G["text_loss"][0]) / G["text_loss"][0], 1e-5)
    check("grads_tiny ce", abs(aux["ce"] - G["ce"][0]) / G["ce"][0], 1e-5)
    check("grads_tiny z_loss", abs(aux["z"] - G["z_loss"][0]) / G["z_loss"][0], 1e-5)
    cq, ct = G["clip_query_tokens"], G["clip_tool_tokens"]
    cl = M.clip_loss(ops, c, p, cq, ct)
    check("grads_tiny clip_loss", abs(cl - G["clip_loss"][0]) / G["clip_loss"][0], 1e-5)

    # Gradients: the fixture's d loss / d params along random directions u, against
    # (L(p + h u) - L(p - h u)) / 2h in float64 (truncation ~h^2 |L'''| ~1e-10, rounding ~1e-11).
    # Random directions touch every parameter at once; per-tensor directions localize a failure.
    # Bound 1e-4 relative to max(|g.u|, 1e-3): the fixture gradients are float32 (~1e-6).
    rng = np.random.default_rng(7)
    for kind, f, gname in (("text", lambda q: M.text_loss(ops, c, q, b)[0], "grad_text/"),
                           ("clip", lambda q: M.clip_loss(ops, c, q, cq, ct), "grad_clip/")):
        worst = 0.0
        dirs = [None, None, None]
        dirs += ["embedding/embedding", M.ENC + "self_attn/k_norm/scale", M.DEC + "cross_attn/v_proj/kernel",
                 M.DEC + "self_attn_gate", "decoder/ZCRMSNorm_0/scale", "contrastive_hidden/bias", "log_temp"]
        for which in dirs:
            u = {k: (rng.standard_normal(v.shape) if which is None or k == which else np.zeros(v.shape))
                 for k, v in p.items()}
            h = 1e-5
            lp = f({k: p[k] + h * u[k] for k in p})
            lm = f({k: p[k] - h * u[k] for k in p})
            fd = (lp - lm) / (2 * h)
            an = sum(float((G[gname + k].astype(np.float64) * u[k]).sum()) for k in p)
            worst = max(worst, abs(fd - an) / max(abs(an), 1e-3))
        check(f"grads_tiny grad_{kind} vs central differences of our loss (10 directions)", worst, 1e-4)


def packing_check(fix):
    c, p, _ = M.load_pickle(os.path.join(fix, "checkpoints", "tiny_np1_f16.pkl"))
    R = read_ref(fix, "ref_tiny")
    ops = M.numpy_ops(np.float64)
    p = {k: v.astype(np.float64) for k, v in p.items()}
    ea, da = R["f32_caseA_enc_tokens"], R["f32_caseA_dec_tokens"]
    eb, db = R["f32_caseB_enc_tokens"], R["f32_caseB_dec_tokens"]
    _, la = M.forward_logits(ops, c, p, M.single_batch(ea, da))
    _, lb = M.forward_logits(ops, c, p, M.single_batch(eb, db))
    Le, Ld = len(ea) + len(eb) + 3, len(da) + len(db) + 2
    b = {k: np.zeros((1, Le if k.startswith("enc") else Ld), np.int32)
         for k in ("enc_tokens", "enc_seg", "enc_pos", "dec_in", "dec_out", "dec_seg", "dec_pos", "dec_cls")}
    for s, (e, d, oe, od) in enumerate(((eb, db, 0, 0), (ea, da, len(eb), len(db))), start=1):
        b["enc_tokens"][0, oe:oe + len(e)] = e
        b["enc_seg"][0, oe:oe + len(e)] = s
        b["enc_pos"][0, oe:oe + len(e)] = np.arange(len(e))
        b["dec_in"][0, od:od + len(d)] = d
        b["dec_seg"][0, od:od + len(d)] = s
        b["dec_pos"][0, od:od + len(d)] = np.arange(len(d))
    _, lp = M.forward_logits(ops, c, p, b)
    err = max(rel(lp[0, :len(db)], lb[0]), rel(lp[0, len(db):len(db) + len(da)], la[0]))
    check("packing: two examples in one row (segments, restarted positions) = each alone", err, 1e-12, "float64")


def classes_check():
    def s(v):
        return "".join(str(x) for x in v)

    a = '[{"name":"get_weather","arguments":{"city":"Paris","n":12,"tags":["a"]}}]'
    want = ("0000000000" "11111111111" "0" "0000000000000" "00" "3333" "000" "22222" "0" "00" "3" "00" "22"
            "00" "3333" "00" "22222" "00" "0")
    bad = int(s(D.answer_char_classes(a)) != want)
    bad += int(s(D.answer_char_classes('{"name":"f","arguments":{"x":true}}')) != "00000000010000000000000000300222200")
    bad += int(s(D.answer_char_classes('[{"name":')) != "000000000")
    bad += int(s(D.answer_char_classes("[]")) != "00")
    pieces = [" [{", '"name":"', 'f",', '"arguments":{"', 'x"', ':"a', "b", '"}}]', ""]
    bad += int(s(D.answer_token_classes('[{"name":"f","arguments":{"x":"ab"}}]', pieces)) != "001032200")
    check("loss classes: tests/unit/prompt_test.cpp vectors (mismatches)", bad, 0)


def optim_checks():
    # Schedule (docs/training.md): total 100 -> 5 warmup steps from 0, decay over the last 5 to 0.05.
    sched = [O.schedule(s, 100) for s in (0, 1, 5, 50, 94, 95, 97, 99, 100)]
    want = [0.0, 0.2, 1.0, 1.0, 1.0, 1.0, 0.05 + 0.95 * (1 + math.cos(math.pi * 2 / 5)) / 2,
            0.05 + 0.95 * (1 + math.cos(math.pi * 4 / 5)) / 2, 0.05]
    check("optim: schedule values", max(abs(a - b) for a, b in zip(sched, want)), 1e-12)
    rng = np.random.default_rng(3)
    g = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    n = math.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in g.values()))
    cg, cn = O.clip_by_global_norm(np, g, 1.0)
    check("optim: clip_by_global_norm", max(abs(float(cn) - n), abs(math.sqrt(sum(float((v ** 2).sum()) for v in cg.values())) - 1.0)), 1e-5)
    # AdamW, two steps, against optax's formula written out in float64.
    hp = O.Hyper(adam_lr=1e-3, adam_wd=0.1)
    p = {"x/scale": rng.standard_normal(6).astype(np.float32)}
    st = O.init_state(p, hp)
    ref_p, m, v = p["x/scale"].astype(np.float64), 0.0, 0.0
    for t in (1, 2):
        gr = {"x/scale": rng.standard_normal(6).astype(np.float32)}
        p, st = O.apply(np, p, gr, st, 0.5, hp)
        gg = gr["x/scale"].astype(np.float64)
        m = 0.9 * m + 0.1 * gg
        v = 0.95 * v + 0.05 * gg * gg
        ref_p = ref_p - 0.5e-3 * ((m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.95 ** t)) + 1e-8) + 0.1 * ref_p)
    check("optim: AdamW two steps vs the formula", rel(p["x/scale"], ref_p), 1e-6)
    # Newton-Schulz: singular values of NS5(G) land in the quintic's band (~0.68 .. 1.13) for
    # wide, tall and stacked matrices; orientation handled by transposing.
    worst = 0.0
    for shape in ((64, 32), (32, 64), (3, 48, 16)):
        X = O.newton_schulz(np, rng.standard_normal(shape).astype(np.float32))
        sv = np.linalg.svd(X.reshape((-1,) + shape[-2:]), compute_uv=False)
        worst = max(worst, float(np.abs(sv - 0.9).max()))
    check("optim: Newton-Schulz singular values within 0.9 +- 0.25", worst, 0.25)
    # Muon step from zero momentum: p' = p (1 - lr wd) - lr sqrt(max(1, out/in)) NS(g) (the
    # Nesterov term is (mu (1-mu) + (1-mu)) g, a positive multiple of g, removed by normalization).
    hp = O.Hyper(muon_lr=0.02)
    p = {"q/kernel": rng.standard_normal((2, 8, 16)).astype(np.float32)}
    gr = {"q/kernel": rng.standard_normal((2, 8, 16)).astype(np.float32)}
    p2, _ = O.apply(np, p, gr, O.init_state(p, hp), 1.0, hp)
    want = p["q/kernel"] * (1 - 0.02 * 0.01) - 0.02 * math.sqrt(2.0) * O.newton_schulz(np, gr["q/kernel"])
    check("optim: Muon step (shape factor sqrt(out/in), decoupled decay)", rel(p2["q/kernel"], want), 1e-5)


def e2e_check(fix, n):
    """Our data path (tokenizer, parse_tools port, sequences) + forward on the trained e2e model."""
    e2e = os.path.join(fix, "e2e")
    c, p, _ = M.load_pickle(os.path.join(e2e, "e2e_model.pkl"), np.float64)
    recs = D.read_jsonl(os.path.join(e2e, "goldens.jsonl"))[:n]
    tok = D.Tokenizer(os.path.join(e2e, "e2e_tok.model"))
    ex, skipped = D.build_examples(recs, tok)
    check("e2e: examples built (skipped)", len(skipped), 0)
    sums, _ = batched_ce(M.numpy_ops(np.float64), c, p, ex)
    worst_tok = max(abs(len(D.decoder_arrays(e["ans"], e["cls"])[1]) - r["loss_tokens"]) for e, r in zip(ex, recs))
    check("e2e: target length = the original's loss_tokens (max diff)", worst_tok, 0)
    # The golden sums are float32 sums of CE_t = lse_t - logit_t on a well-trained model: each
    # term loses ~|logit| * 2^-24 * a few to cancellation (~1e-5 per token at logits ~20-30);
    # we compute in float64. Bound: 2e-5 per target token.
    worst = max(abs(s - r["loss_sum"]) / r["loss_tokens"] for s, r in zip(sums, recs))
    check(f"e2e: teacher-forced CE of {len(recs)} golden examples vs the original (max abs diff per token)", worst, 2e-5,
          f"total {sum(sums):.6f} vs {sum(r['loss_sum'] for r in recs):.6f} nats")
    return ex, recs, sums, p


def batched_ce(ops, c, p, ex, rows=8):
    """Per-example summed CE of examples (in their order), in padded batches of `rows` examples of
    similar length (numpy on these machines runs reference BLAS: padding is expensive)."""
    order = sorted(range(len(ex)), key=lambda i: len(ex[i]["enc"]))
    res = [0.0] * len(ex)
    for i in range(0, len(ex), rows):
        idx = order[i:i + rows]
        chunk = [ex[j] for j in idx]
        decs = [D.decoder_arrays(e["ans"], e["cls"]) for e in chunk]
        Le = max(len(e["enc"]) for e in chunk)
        Ld = max(len(d[0]) for d in decs)
        enc = np.zeros((len(chunk), Le), np.int32)
        din = np.zeros((len(chunk), Ld), np.int32)
        dout = np.zeros((len(chunk), Ld), np.int32)
        for r, (e, d) in enumerate(zip(chunk, decs)):
            enc[r, :len(e["enc"])] = e["enc"]
            din[r, :len(d[0])] = d[0]
            dout[r, :len(d[1])] = d[1]
        b = M.single_batch(enc, din, dout, None, [len(e["enc"]) for e in chunk], [len(d[0]) for d in decs])
        ce, _, m = M.token_losses(ops, c, {k: ops.xp.asarray(v) for k, v in p.items()}, b)
        for j, x in zip(idx, np.asarray((ce * m).sum(axis=1))):
            res[j] = float(x)
    return res, None


def pipeline_check(fix, n, tmp):
    """The trainer's own data path: prepare (tokenize to data.npz), pack several examples per row,
    make_batch; the packed batches' summed CE equals the examples' CE one by one. And the
    float16 pack a run exports (params-f16.npz) gives back the float16 values exactly."""
    import train_jax as T
    e2e = os.path.join(fix, "e2e")
    recs = D.read_jsonl(os.path.join(e2e, "goldens.jsonl"))[:n]
    src = os.path.join(tmp, "train.jsonl")
    with open(src, "w") as f:
        for r in recs:
            f.write(json.dumps({"query": r["query"], "tools": r["tools"], "answers": r["answers"]}) + "\n")
    out = os.path.join(tmp, "data.npz")
    D.prepare({"train": src}, os.path.join(e2e, "e2e_tok.model"), out, log=lambda *a: None)
    data = D.Data(out)
    sp = data.splits["train"]
    c, p, _ = M.load_pickle(os.path.join(e2e, "e2e_model.pkl"))
    ops = M.numpy_ops(np.float32)
    shapes = [(512, 112)]  # e2e examples: <= 249 encoder / 57 decoder tokens, so two per row
    batches = D.epoch_batches(sp, shapes, 1024, 3, 0)
    seen = sorted(i for _, rows in batches for r in rows for i in r)
    check("pipeline: every example packed exactly once (missing + duplicated)", len(set(range(sp.n)) ^ set(seen))
          + len(seen) - len(set(seen)), 0)
    per_row = max(len(r) for _, rows in batches for r in rows)
    check("pipeline: rows hold several examples (most per row, at least 2)", -per_row, -2)
    total = tokens = 0.0
    for s, rows in batches:
        E, Dl = shapes[s]
        b = D.make_batch(sp, rows, max(1, 1024 // E), E, Dl)
        ce, _, m = M.token_losses(ops, c, p, b)
        total += float((ce * m).sum())
        tokens += float(m.sum())
    ref = sum(r["loss_sum"] for r in recs)
    n_ref = sum(r["loss_tokens"] for r in recs)
    # Against the original's per-example sums (e2e check above: same examples, one per row);
    # bound as there, 2e-5 per target token.
    check("pipeline: packed batches' summed CE vs the original's (abs diff per token)",
          abs(total - ref) / n_ref + abs(tokens - n_ref), 2e-5, f"{total:.5f} vs {ref:.5f} nats over {tokens:.0f} tokens")
    pack = os.path.join(tmp, "params-f16.npz")
    T.save_f16_pack(pack, p, {"step": 3})
    back, meta = T.load_f16_pack(pack)
    diff = max(float(np.abs(back[k] - p[k].astype(np.float16).astype(np.float32)).max()) for k in p)
    check("pipeline: params-f16.npz round trip (max abs diff)", diff + abs(meta["step"] - 3), 0.0, "exact")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return r


def convert_checks(fix, bindir, e2e_result, n_fresh, tmp):
    """Checkpoints written by our pickle writer through needle-convert and needle-eval --loss."""
    conv, ev = os.path.join(bindir, "needle-convert"), os.path.join(bindir, "needle-eval")
    e2e = os.path.join(fix, "e2e")
    tokp = os.path.join(e2e, "e2e_tok.model")
    ex_all, recs_all, sums_e2e, p_e2e64 = e2e_result
    tok = D.Tokenizer(tokp)
    c_e2e, p_e2e, _ = M.load_pickle(os.path.join(e2e, "e2e_model.pkl"))
    # A fresh model from our init (another shape: GQA 4:1, 2 + 1 layers, contrastive 48 > d/4),
    # every parameter moved off its initial value so that each one matters.
    c_new = M.Config({"vocab_size": tok.vocab_size, "d_model": 64, "num_heads": 4, "num_kv_heads": 1,
                      "num_encoder_layers": 2, "num_decoder_layers": 1, "contrastive_dim": 48, "max_seq_len": 1024})
    rng = np.random.default_rng(11)
    p_new = {k: (v + rng.normal(0, 0.2 if v.ndim < 2 else 0.0, v.shape)).astype(np.float32)
             for k, v in M.init_params(c_new, 5).items()}
    for name, c, p, n in (("e2e model re-saved", c_e2e, p_e2e, len(ex_all)), ("fresh init_params model", c_new, p_new, n_fresh)):
        recs, ex = recs_all[:n], ex_all[:n]
        jl = os.path.join(tmp, "eval.jsonl")
        with open(jl, "w") as f:
            for r in recs:
                f.write(json.dumps({"query": r["query"], "tools": r["tools"], "answers": r["answers"]}) + "\n")
        pkl, model, back = (os.path.join(tmp, x) for x in ("w.pkl", "w.needle", "back.pkl"))
        M.save_pickle(pkl, c, p, {"pretrain_step": 7})
        c16, p16, _ = M.load_pickle(pkl, np.float64)  # what the converter reads: float16 values
        try:
            run([conv, pkl, "--type", "f32", "--tokenizer", tokp, "-o", model])
            info = json.loads(run([conv, model, "--info", "--json"]).stdout)
            run([conv, model, "--export-pkl", back])
            out = os.path.join(tmp, "per.jsonl")
            run([ev, "-m", model, jl, "--loss", "--out", out, "-t", "1"])
        except RuntimeError as e:
            check(f"convert [{name}]: needle-convert / needle-eval ran", 1, 0, str(e))
            continue
        if isinstance(info.get("params"), int):
            check(f"convert [{name}]: parameter count, needle-convert --info vs ours", abs(info["params"] - M.count_params(c16)), 0)
        _, pb, _ = M.load_pickle(back, np.float32)
        diff = max(float(np.abs(pb[k] - p16[k].astype(np.float32)).max()) for k in p16)
        check(f"convert [{name}]: --export-pkl gives back our float16 leaves (max abs diff)", diff, 0.0, "exact")
        theirs = [json.loads(line) for line in open(out)]
        if c is c_e2e and all(np.array_equal(p16[k], p_e2e64[k]) for k in p16):
            sums = sums_e2e[:n]  # the same float16 values the e2e check ran: its sums are ours
        else:
            sums, _ = batched_ce(M.numpy_ops(np.float64), c16, p16, ex)
        ours_t = [len(D.decoder_arrays(e["ans"], e["cls"])[1]) for e in ex]
        tl = [t.get("loss_tokens") for t in theirs]
        check(f"convert [{name}]: target tokens, needle-eval vs ours (mismatching examples)",
              sum(int(a != b) for a, b in zip(tl, ours_t)) + abs(len(tl) - len(ours_t)), 0)
        # needle's f32 engine vs our float64: float32 rounding only (~1e-6 of |logits| per token).
        worst = max(abs(t["loss_sum"] - s_) / max(k, 1) for t, s_, k in zip(theirs, sums, ours_t))
        tot_t, tot_o = sum(t["loss_sum"] for t in theirs), sum(sums)
        check(f"convert [{name}]: needle-eval --loss vs ours, {len(ex)} examples (max abs diff per token)", worst, 2e-5,
              f"mean CE {tot_t / sum(ours_t):.6f} vs {tot_o / sum(ours_t):.6f} nats/token")


def real_data_check(bindir, data_dir, per_group, tmp):
    """Our data path on the real training data (scripts/data/build's val.jsonl: every schema form and
    augmentation kind) against needle's: a random model written by our writer, needle-eval --loss
    (C++ tokenization, parse_tools, prompts) vs our tokenization + forward."""
    recs = D.read_jsonl(os.path.join(data_dir, "val.jsonl"))
    groups = {}
    for r in recs:
        groups.setdefault((str(r.get("schema")), str(r.get("aug"))), []).append(r)
    pick = [r for k in sorted(groups) for r in groups[k][:per_group]]
    jl = os.path.join(tmp, "real.jsonl")
    with open(jl, "w") as f:
        for r in pick:
            f.write(json.dumps(r) + "\n")
    tokp = os.path.join(data_dir, "tokenizer.model")
    ex, skipped = D.build_examples(pick, D.Tokenizer(tokp))
    c = M.Config({"vocab_size": 8192, "d_model": 32, "num_heads": 4, "num_kv_heads": 2, "num_encoder_layers": 1,
                  "num_decoder_layers": 1, "contrastive_dim": 16, "max_seq_len": 1024})
    rng = np.random.default_rng(1)
    p = {k: (v + rng.normal(0, 0.2 if v.ndim < 2 else 0.0, v.shape)).astype(np.float32)
         for k, v in M.init_params(c, 3).items()}
    pkl, model, out = (os.path.join(tmp, x) for x in ("real.pkl", "real.needle", "real_out.jsonl"))
    M.save_pickle(pkl, c, p)
    c16, p16, _ = M.load_pickle(pkl, np.float64)
    run([os.path.join(bindir, "needle-convert"), pkl, "--type", "f32", "--tokenizer", tokp, "-o", model])
    run([os.path.join(bindir, "needle-eval"), "-m", model, jl, "--loss", "--out", out, "-t", "1"])
    theirs = [json.loads(line) for line in open(out)]
    sums, _ = batched_ce(M.numpy_ops(np.float64), c16, p16, ex)
    lens = [len(e["ans"]) + 2 for e in ex]
    check(f"real data: {len(ex)} val examples of {len(groups)} schema/augmentation kinds, target tokens vs needle-eval "
          "(mismatches + skipped)", sum(int(t["loss_tokens"] != n) for t, n in zip(theirs, lens)) + len(skipped)
          + abs(len(theirs) - len(ex)), 0)
    check("real data: needle-eval --loss vs ours (max abs diff per token)",
          max(abs(t["loss_sum"] - s_) / n for t, s_, n in zip(theirs, sums, lens)), 2e-5)


def jax_checks(fix, skip_full=False):
    """On a machine with JAX: the model through JaxOps (float32, highest precision), jax.grad
    against the fixture gradients, the optimizer against optax, and a few real training steps."""
    import jax
    import jax.numpy as jnp
    import needle_jax as NJ
    jax.config.update("jax_enable_x64", False)
    ops = NJ.JaxOps("f32")
    for name in ("tiny",) + (() if skip_full else ("full",)):
        forward_checks(ops, fix, name, tag="jax")
    G = read_ref(fix, "grads_tiny")
    c, p, _ = M.load_pickle(os.path.join(fix, "checkpoints", "tiny_np1_f16.pkl"))
    b = {"enc_tokens": G["src"], "enc_seg": G["enc_seg"], "dec_in": G["tgt_in"], "dec_out": G["tgt_out"],
         "dec_seg": G["dec_seg"], "dec_cls": G["loss_class"],
         "enc_pos": np.broadcast_to(np.arange(G["src"].shape[1]), G["src"].shape).astype(np.int32),
         "dec_pos": np.broadcast_to(np.arange(G["tgt_in"].shape[1]), G["tgt_in"].shape).astype(np.int32)}
    pj = NJ.to_device(p)
    gt = jax.grad(lambda q: M.text_loss(ops, c, q, b)[0])(pj)
    gc = jax.grad(lambda q: M.clip_loss(ops, c, q, G["clip_query_tokens"], G["clip_tool_tokens"]))(pj)
    # Per tensor, relative to the tensor's largest gradient: float32 vs float32, 1e-4 as above.
    check("jax grad_text vs fixture (worst tensor)", max(rel(gt[k], G["grad_text/" + k]) for k in p), 1e-4)
    check("jax grad_clip vs fixture (worst tensor)", max(rel(gc[k], G["grad_clip/" + k]) for k in p if
                                                         np.abs(G["grad_clip/" + k]).max() > 0), 1e-4)
    # Optimizer vs optax where optax implements the same thing.
    import optax
    rng = np.random.default_rng(0)
    hp = O.Hyper(muon=False, adam_lr=1e-3)
    params = {k: jnp.asarray(v) for k, v in p.items()}
    st = NJ.to_device(O.init_state(p, hp))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0))
    ost = tx.init(params)
    po = params
    for _ in range(3):
        g = {k: jnp.asarray(rng.standard_normal(v.shape).astype(np.float32)) for k, v in p.items()}
        gcl, _ = O.clip_by_global_norm(jnp, g, 1.0)
        params, st = O.apply(jnp, params, gcl, st, 1.0, hp)
        upd, ost = tx.update(g, ost, po)
        po = optax.apply_updates(po, upd)
    check("jax optimizer (clip + AdamW, 3 steps) vs optax.chain(clip_by_global_norm, adamw)",
          max(rel(params[k], po[k]) for k in p), 1e-5)
    # A few real steps (QAT step and CLIP step included) on a tiny model: finite, and the loss falls.
    hp = O.Hyper(muon=True, muon_lr=0.02, adam_lr=1e-3)
    tops = NJ.JaxOps("bf16", dropout=0.1)
    step, clip_step = NJ.make_train_step(c, hp, tops)
    params, st = NJ.to_device(p), NJ.to_device(O.init_state(p, hp))
    key = jax.random.PRNGKey(0)
    losses = []
    for s in range(30):
        k = jax.random.fold_in(key, s)
        if s == 10:
            params, st, mt = clip_step(params, st, b, k, 1.0, 1.0, G["clip_query_tokens"], G["clip_tool_tokens"])
        else:
            params, st, mt = step(params, st, b, k, 1.0 if s % 5 == 2 else 0.0, 1.0)  # QAT steps 2, 7, ...
        losses.append(float(mt["loss"]))
    check("jax training steps: finite losses, last/first", losses[-1] / losses[0] if all(map(math.isfinite, losses)) else
          float("inf"), 0.9, f"{losses[0]:.4f} -> {losses[-1]:.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(HERE))
    ap.add_argument("--fixtures", default=os.environ.get("NEEDLE_SHARED_FIXTURES") or os.path.join(repo, "..", "shared", "fixtures"))
    ap.add_argument("--bin", default=os.environ.get("NEEDLE_BIN"), help="folder with needle-convert and needle-eval")
    ap.add_argument("--e2e", type=int, default=24, help="golden e2e examples for the loss checks (default 24)")
    ap.add_argument("--jax", action="store_true", help="also run the checks through JAX (GPU machine)")
    ap.add_argument("--skip-full", action="store_true", help="skip the full-shape fixture (52 MB)")
    ap.add_argument("--real-data", metavar="DIR", help="also compare with needle-eval on DIR/val.jsonl (scripts/data/build's "
                    "output; needs --bin)")
    args = ap.parse_args()
    fix = args.fixtures
    if not os.path.isdir(os.path.join(fix, "checkpoints")):
        print(f"parity: fixtures not found at {fix}")
        return 77
    t0 = time.time()
    v1 = M.Config(json.load(open(os.path.join(HERE, "needle-v1.json"))))
    check("needle-v1.json: parameters - 26,315,421 and inference parameters - 26,233,372 (reference section 1)",
          abs(M.count_params(v1) - 26315421) + abs(M.count_params(v1, contrastive=False) - 26233372), 0)
    ops = M.numpy_ops(np.float32)
    for name in ("tiny",) + (() if args.skip_full else ("full",)):
        forward_checks(ops, fix, name, quick_int4=name == "full")
    loss_checks(fix)
    packing_check(fix)
    classes_check()
    optim_checks()
    e2e = e2e_check(fix, args.e2e)
    tmp = tempfile.mkdtemp(prefix="needle-parity-")
    try:
        pipeline_check(fix, min(args.e2e, 12), tmp)
        if args.bin and all(os.path.exists(os.path.join(args.bin, b)) for b in ("needle-convert", "needle-eval")):
            convert_checks(fix, args.bin, e2e, min(args.e2e, 8), tmp)
            if args.real_data:
                real_data_check(args.bin, args.real_data, 6, tmp)
        else:
            print("parity: --bin not given (or lacks needle-convert / needle-eval): converter round trip not checked")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.jax:
        jax_checks(fix, args.skip_full)
    print(f"({time.time() - t0:.1f}s)")
    print(f"{RESULTS['pass']} passed, {RESULTS['fail']} failed")
    return 0 if RESULTS["fail"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
