// The model's training forward and backward, top to bottom:
//
//   encoder:  x = embed(src) * sqrt(d)
//             per layer  x += sigmoid(g) * drop(SelfAttn(ZCRMSNorm(x)))      (RoPE, keys by enc_seg)
//             enc = ZCRMSNorm(x)                                               (final_norm)
//   decoder:  x = embed(tgt_in) * sqrt(d)
//             per layer  x += sigmoid(g_s) * drop(SelfAttn(ZCRMSNorm_0(x)))   (RoPE, causal, keys by dec_seg)
//                        x += sigmoid(g_c) * drop(CrossAttn(ZCRMSNorm_1(x), enc))  (keys by enc_seg)
//             h = ZCRMSNorm(x);  logits = h E^T  (tied embedding)
//   text loss: weighted CE + z-loss over target positions with dec_seg > 0
//   contrastive: mean-pool(enc) -> Dense+bias -> ReLU -> Dense -> L2 normalize; CLIP loss.
//
// The backward walks the same list in reverse. Every *_backward accumulates (train/ops.h).
#include "train/grad.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include "nk/threadpool.h"
#include "train/matmul.h"
#include "train/ops.h"

namespace needle::train {
namespace {

using Vec = std::vector<float>;
using Attn = AttnT<Vec>;

// What one attention block keeps from its forward for the backward.
struct AttnActs {
  Vec x_in;         // residual stream entering the block [T, d]
  Vec rstd;         // 1/rms of x_in [T]
  Vec q_raw, q_rstd; // h Wq^T [T, d]; 1/rms per head [T*H]
  Vec k_raw, k_rstd; // kv Wk^T [Tk, kv]; 1/rms per head [Tk*Hkv]
  Vec v;            // kv Wv^T                                  [Tk, kv]
  Vec ctx, y;       // attention output, out_proj(ctx)          [T, d]
  Vec uq, uk, uv, uo; // LoRA: s (input A^T) of each adapted projection [rows, rank]

  // Everything but x_in (a recomputing pass keeps only the block's input).
  void release_all_but_input() {
    for (Vec* v : {&rstd, &q_raw, &q_rstd, &k_raw, &k_rstd, &v, &ctx, &y, &uq, &uk, &uv, &uo}) Vec().swap(*v);
  }
};

// The element-wise images of kept activations, never kept: h = ZCRMSNorm(x_in) and the normed
// (+ RoPE) q and k. Each block's backward recomputes them from x_in, q_raw and k_raw with the
// forward's own functions (the same ops on the same values: bit-identical), ~1% more work and
// ~330 MiB less at the 26M shape (docs/benchmarks.md). One set per pass, in BlockScratch.
struct Normed {
  Vec h;     // [T, d]
  Vec q, k;  // [T, d], [Tk, kv]
  Vec rstd;  // the recomputation's copies of the kept 1/rms values (equal to them)
};

// Buffers of one block's backward (and of a recomputed forward), reused by every block of a pass.
struct BlockScratch {
  Vec ga, gb;            // two [T, d] buffers, reused along the backward (see attn_block_backward);
                         // ga also takes the branch output y of a forward that keeps no activations
  Vec dk, dv;            // [Tk, kv]
  Vec wq;                // a fake-quantized (or merged) kernel [out, in]
  Vec bt, g;             // LoRA: B^T [rank, out]; s dy B [T, rank]
  AttnActs acts;         // the block being recomputed, or any block of a forward-only pass
  Normed normed;         // h, q, k of the block being run (see Normed)
};

// Which activations a forward keeps: all of them (backward without recomputation), each
// block's input (backward with recomputation), or none (no backward).
enum class Keep { All, Input, None };

// What a pass reads: the config, the weights, the threads, dropout, and scratch space.
struct Ctx {
  const Config& c;
  const Params& p;
  nk::ThreadPool* pool;
  float dropout;
  uint64_t key;
  BlockScratch* scratch;
  const Lora* lora;  // nullable
  bool fake_quant;
  Keep keep;

  Dropout drop(uint64_t site) const {
    if (dropout <= 0.0f) return {};
    uint64_t z = key ^ (site * 0x9E3779B97F4A7C15ull + 0xD1B54A32D192ED03ull);
    z = (z ^ (z >> 31)) * 0xBF58476D1CE4E5B9ull;
    return Dropout{dropout, z ^ (z >> 29)};
  }
};

// Dropout sites: a distinct mask per residual branch (and per encoder use within a pass).
enum : uint64_t { kSiteEncoder = 1u << 20, kSiteDecSelf = 2u << 20, kSiteDecCross = 3u << 20 };

Vec zeros(size_t n) { return Vec(n, 0.0f); }
// v resized to n zeros, reusing its capacity.
Vec& zeroed(Vec& v, size_t n) {
  v.assign(n, 0.0f);
  return v;
}
// A gradient tensor's data, or null when the parameter is frozen (no gradient buffer).
float* grad_of(Vec* v) { return v ? v->data() : nullptr; }

// =============================================================================================
// One Dense layer  y = x W^T  (W [out, in]), with an optional LoRA adapter:
//   y = x W^T + s (x A^T) B^T           (A [rank, in], B [out, rank], s = alpha / rank)
// Backward, with g = s dy B  [T, rank] and u = s x A^T:
//   dx += dy W + g A,   dW += dy^T x,   dB += dy^T u,   dA += g^T x.
// On fake-quantized passes the forward uses Wq = fake_quantize(W + s B A) as one kernel
// (dx += dy Wq); dW, dA and dB are the same straight-through expressions.

struct Dense {
  const Vec* w;
  int in = 0, out = 0;
  const LoraPair* lora = nullptr;  // adapter (nullable)
  float* dw = nullptr;             // base kernel gradient (nullable: frozen)
  LoraPair* glora = nullptr;       // adapter gradients (nullable)
};

// The kernel the pass multiplies by: W itself, or fake_quantize(W [+ s B A]) written to buf.
const float* effective_kernel(const Ctx& cx, const Dense& L, Vec& buf) {
  if (!cx.fake_quant) return L.w->data();
  buf.resize((size_t)L.out * L.in);
  if (L.lora) merged_kernel(buf.data(), L.w->data(), *L.lora, L.out, L.in, cx.lora->rank, cx.lora->scale());
  else std::copy(L.w->begin(), L.w->end(), buf.begin());
  fake_quantize_rows(buf.data(), (size_t)L.out, (size_t)L.in);
  return buf.data();
}

// y [T, out] = x [T, in] W^T (+ adapter). u receives s x A^T when there is an adapter. y null:
// only u (a recomputed forward whose output nothing reads).
void dense_forward(const Ctx& cx, const Dense& L, float* y, const float* x, int T, Vec& u) {
  BlockScratch& sc = *cx.scratch;
  if (y) matmul_forward(y, x, effective_kernel(cx, L, sc.wq), T, L.in, L.out, cx.pool);
  if (!L.lora) return;
  const int r = cx.lora->rank;
  const float s = cx.lora->scale();
  u.resize((size_t)T * r);
  matmul_forward(u.data(), x, L.lora->a.data(), T, L.in, r, cx.pool);
  for (float& e : u) e *= s;
  if (cx.fake_quant || !y) return;  // the adapter is inside the quantized kernel / no output
  sc.bt.resize((size_t)r * L.out);
  transpose(sc.bt.data(), L.lora->b.data(), L.out, r);
  matmul_backward(y, nullptr, u.data(), nullptr, sc.bt.data(), T, L.out, r, cx.pool);  // y += u B^T
}

// dx [T, in] += d/dx (nullable), parameter gradients where given.
void dense_backward(const Ctx& cx, const Dense& L, float* dx, const float* dy, const float* x, int T, const Vec& u) {
  BlockScratch& sc = *cx.scratch;
  if (dx || L.dw) matmul_backward(dx, L.dw, dy, x, effective_kernel(cx, L, sc.wq), T, L.in, L.out, cx.pool);
  if (!L.lora) return;
  const int r = cx.lora->rank;
  const float s = cx.lora->scale();
  sc.bt.resize((size_t)r * L.out);
  transpose(sc.bt.data(), L.lora->b.data(), L.out, r);
  sc.g.resize((size_t)T * r);
  matmul_forward(sc.g.data(), dy, sc.bt.data(), T, L.out, r, cx.pool);  // dy B
  for (float& e : sc.g) e *= s;
  if (L.glora) {
    matmul_backward(nullptr, L.glora->b.data(), dy, u.data(), nullptr, T, r, L.out, cx.pool);     // dB += dy^T u
    matmul_backward(nullptr, L.glora->a.data(), sc.g.data(), x, nullptr, T, L.in, r, cx.pool);    // dA += g^T x
  }
  if (dx && !cx.fake_quant)
    matmul_backward(dx, nullptr, sc.g.data(), nullptr, L.lora->a.data(), T, L.in, r, cx.pool);  // dx += g A
}

// =============================================================================================
// One attention sub-layer with its pre-norm and gated residual:
//   x += sigmoid(gate) * drop( out_proj( attention( rope(q_norm(h Wq)), rope(k_norm(kv Wk)), kv Wv ) ) ),
//   h = ZCRMSNorm(x), kv = h (self-attention) or the encoder output (cross-attention).

struct BlockShape {
  int B = 0, Lq = 0, Lk = 0;
  bool self = true;  // kv input is h itself (and RoPE applies)
  bool causal = false;
  const uint8_t* key_valid = nullptr;  // [B*Lk]
};

// A block's parameters and where their gradients go (each nullable: frozen / no adapters).
struct BlockParams {
  const Attn& w;
  const Vec& norm;
  float gate;
  const LoraAttn* lora;
  Attn* gw;
  Vec* gnorm;
  float* dgate;
  LoraAttn* glora;

  Dense dense(const Config& c, char which) const {
    const int d = c.d_model, kvd = c.kv_dim();
    auto pick = [&](auto& a) -> decltype(&a.q) { return which == 'q' ? &a.q : which == 'k' ? &a.k : which == 'v' ? &a.v : &a.o; };
    const bool kv = which == 'k' || which == 'v';
    return Dense{pick(w), d, kv ? kvd : d, lora ? pick(*lora) : nullptr, gw ? pick(*gw)->data() : nullptr,
                 glora ? pick(*glora) : nullptr};
  }
};

// h = ZCRMSNorm(x_in) into n.h, its 1/rms into rstd.
void pre_norm(const Ctx& cx, Normed& n, float* rstd, const float* x_in, int T, const BlockParams& bp) {
  const Config& c = cx.c;
  nk::ThreadPool* pool = cx.pool;
  n.h.resize((size_t)T * c.d_model);
  rmsnorm_forward(n.h.data(), rstd, x_in, bp.norm.data(), T, c.d_model, pool);
}

// q = q_norm(q_raw), k = k_norm(k_raw) into n.q, n.k (+ RoPE for self-attention); their 1/rms
// per head into q_rstd, k_rstd.
void qk_norm_rope(const Ctx& cx, Normed& n, float* q_rstd, float* k_rstd, const AttnActs& a, const BlockShape& s,
                  const BlockParams& bp) {
  const Config& c = cx.c;
  nk::ThreadPool* pool = cx.pool;
  const int hd = c.head_dim(), H = c.num_heads, Hkv = c.num_kv_heads;
  const int T = s.B * s.Lq, Tk = s.B * s.Lk;
  n.q.resize((size_t)T * c.d_model);
  n.k.resize((size_t)Tk * c.kv_dim());
  rmsnorm_forward(n.q.data(), q_rstd, a.q_raw.data(), bp.w.q_norm.data(), T * H, hd, pool);
  rmsnorm_forward(n.k.data(), k_rstd, a.k_raw.data(), bp.w.k_norm.data(), Tk * Hkv, hd, pool);
  if (s.self) {
    rope_forward(n.q.data(), s.B, s.Lq, H, hd, c.rope_theta, pool);
    rope_forward(n.k.data(), s.B, s.Lk, Hkv, hd, c.rope_theta, pool);
  }
}

// Recomputes n (h, q, k) of a block whose forward kept a (the kept 1/rms values are computed
// again, equal, into n.rstd).
void recompute_normed(const Ctx& cx, Normed& n, const AttnActs& a, const float* x_in, const BlockShape& s,
                      const BlockParams& bp) {
  const Config& c = cx.c;
  const int T = s.B * s.Lq, Tk = s.B * s.Lk;
  n.rstd.resize((size_t)T + (size_t)T * c.num_heads + (size_t)Tk * c.num_kv_heads);
  float* r = n.rstd.data();
  pre_norm(cx, n, r, x_in, T, bp);
  qk_norm_rope(cx, n, r + T, r + T + (size_t)T * c.num_heads, a, s, bp);
}

// The block's output branch y [T, d] (before the gated residual) from its input x_in, keeping
// the intermediate activations in `a`. y null: everything but the out projection's output (a
// recomputation for a backward that does not read y: frozen gate).
void attn_block_forward(const Ctx& cx, AttnActs& a, const float* x_in, const float* kv_in, const BlockShape& s,
                        const BlockParams& bp, float* y) {
  const Config& c = cx.c;
  const int d = c.d_model, hd = c.head_dim(), kvd = c.kv_dim(), H = c.num_heads, Hkv = c.num_kv_heads;
  const int T = s.B * s.Lq, Tk = s.B * s.Lk;
  Normed& n = cx.scratch->normed;
  a.rstd.resize((size_t)T);
  pre_norm(cx, n, a.rstd.data(), x_in, T, bp);
  const float* kv = s.self ? n.h.data() : kv_in;

  a.q_raw.resize((size_t)T * d);
  a.q_rstd.resize((size_t)T * H);
  dense_forward(cx, bp.dense(c, 'q'), a.q_raw.data(), n.h.data(), T, a.uq);
  a.k_raw.resize((size_t)Tk * kvd);
  a.k_rstd.resize((size_t)Tk * Hkv);
  a.v.resize((size_t)Tk * kvd);
  dense_forward(cx, bp.dense(c, 'k'), a.k_raw.data(), kv, Tk, a.uk);
  dense_forward(cx, bp.dense(c, 'v'), a.v.data(), kv, Tk, a.uv);
  qk_norm_rope(cx, n, a.q_rstd.data(), a.k_rstd.data(), a, s, bp);

  a.ctx.resize((size_t)T * d);
  const AttnShape as{s.B, s.Lq, s.Lk, H, Hkv, hd, s.causal};
  attention_forward(a.ctx.data(), n.q.data(), n.k.data(), a.v.data(), s.key_valid, as, cx.pool);
  dense_forward(cx, bp.dense(c, 'o'), y, a.ctx.data(), T, a.uo);
}

// dx: gradient of the residual stream after the block on entry, before it on return.
// d_kv_in: for cross-attention, receives the gradient of the encoder output.
//
// Two [T, d] buffers carry the chain: ga = dy -> (free) -> dq -> dq_raw (in place) and
// gb = dctx -> (free) -> dh, each reused once its previous content is dead; dk -> dk_raw in place.
// y: the branch output (read only for the gate's gradient; may be null when the gate is frozen).
// h, q and k are read from the scratch's Normed: the forward's own, or recomputed (block_backward).
void attn_block_backward(const Ctx& cx, const AttnActs& a, const float* x_in, const float* y, Vec& dx,
                         const float* kv_in, float* d_kv_in, const BlockShape& s, const BlockParams& bp,
                         const Dropout& drop) {
  BlockScratch& sc = *cx.scratch;
  const Config& c = cx.c;
  const int d = c.d_model, hd = c.head_dim(), kvd = c.kv_dim(), H = c.num_heads, Hkv = c.num_kv_heads;
  const int T = s.B * s.Lq, Tk = s.B * s.Lk;

  Vec& dy = zeroed(sc.ga, (size_t)T * d);
  residual_backward(dy.data(), bp.dgate, dx.data(), y, bp.gate, drop, dy.size(), cx.pool);

  Vec& dctx = zeroed(sc.gb, (size_t)T * d);
  dense_backward(cx, bp.dense(c, 'o'), dctx.data(), dy.data(), a.ctx.data(), T, a.uo);

  Vec& dq = zeroed(sc.ga, (size_t)T * d);  // dy is dead
  Vec& dk = zeroed(sc.dk, (size_t)Tk * kvd);
  Vec& dv = zeroed(sc.dv, (size_t)Tk * kvd);
  const AttnShape as{s.B, s.Lq, s.Lk, H, Hkv, hd, s.causal};
  const Normed& n = sc.normed;
  attention_backward(dq.data(), dk.data(), dv.data(), dctx.data(), n.q.data(), n.k.data(), a.v.data(), s.key_valid,
                     as, cx.pool);
  if (s.self) {
    rope_backward(dq.data(), s.B, s.Lq, H, hd, c.rope_theta, cx.pool);
    rope_backward(dk.data(), s.B, s.Lk, Hkv, hd, c.rope_theta, cx.pool);
  }
  rmsnorm_backward_inplace(dq.data(), bp.gw ? bp.gw->q_norm.data() : nullptr, a.q_raw.data(), a.q_rstd.data(),
                           bp.w.q_norm.data(), T * H, hd, cx.pool);
  rmsnorm_backward_inplace(dk.data(), bp.gw ? bp.gw->k_norm.data() : nullptr, a.k_raw.data(), a.k_rstd.data(),
                           bp.w.k_norm.data(), Tk * Hkv, hd, cx.pool);
  const Vec& dq_raw = dq;
  const Vec& dk_raw = dk;

  Vec& dh = zeroed(sc.gb, (size_t)T * d);  // dctx is dead
  dense_backward(cx, bp.dense(c, 'q'), dh.data(), dq_raw.data(), n.h.data(), T, a.uq);
  const float* kv = s.self ? n.h.data() : kv_in;
  float* dkv = s.self ? dh.data() : d_kv_in;
  dense_backward(cx, bp.dense(c, 'k'), dkv, dk_raw.data(), kv, Tk, a.uk);
  dense_backward(cx, bp.dense(c, 'v'), dkv, dv.data(), kv, Tk, a.uv);

  // The residual path passes dx through unchanged; the norm adds its share.
  rmsnorm_backward(dx.data(), grad_of(bp.gnorm), dh.data(), x_in, a.rstd.data(), bp.norm.data(), T, d, cx.pool);
}

// Forward of a block in the pass's keep mode: x += sigmoid(gate) * drop(branch).
void block_forward(const Ctx& cx, AttnActs& kept, Vec& x, const float* kv_in, const BlockShape& s,
                   const BlockParams& bp, const Dropout& drop) {
  const float* x_in = x.data();
  if (cx.keep != Keep::None) {
    kept.x_in = x;
    x_in = kept.x_in.data();
  }
  if (cx.keep == Keep::All) {
    kept.y.resize(x.size());
    attn_block_forward(cx, kept, x_in, kv_in, s, bp, kept.y.data());
    residual_forward(x.data(), kept.y.data(), bp.gate, drop, x.size(), cx.pool);
    return;
  }
  if (cx.keep == Keep::Input) kept.release_all_but_input();
  Vec& y = cx.scratch->ga;  // free until the backward starts
  y.resize(x.size());
  attn_block_forward(cx, cx.scratch->acts, x_in, kv_in, s, bp, y.data());
  residual_forward(x.data(), y.data(), bp.gate, drop, x.size(), cx.pool);
}

// Backward of a block, recomputing its forward from the kept input first when the pass keeps
// only inputs (the same ops on the same values: bit-identical activations).
void block_backward(const Ctx& cx, const AttnActs& kept, Vec& dx, const float* kv_in, float* d_kv_in,
                    const BlockShape& s, const BlockParams& bp, const Dropout& drop) {
  if (cx.keep == Keep::All) {
    recompute_normed(cx, cx.scratch->normed, kept, kept.x_in.data(), s, bp);
    attn_block_backward(cx, kept, kept.x_in.data(), kept.y.data(), dx, kv_in, d_kv_in, s, bp, drop);
    return;
  }
  AttnActs& a = cx.scratch->acts;
  float* y = nullptr;  // only the gate's gradient reads the branch output
  if (bp.dgate) {
    a.y.resize(dx.size());
    y = a.y.data();
  }
  attn_block_forward(cx, a, kept.x_in.data(), kv_in, s, bp, y);
  attn_block_backward(cx, a, kept.x_in.data(), y, dx, kv_in, d_kv_in, s, bp, drop);
}

// The adapters of attention i of a list (nullable).
const LoraAttn* lora_at(const std::vector<LoraAttn>* v, size_t i) { return v ? &(*v)[i] : nullptr; }
LoraAttn* lora_at(std::vector<LoraAttn>* v, size_t i) { return v ? &(*v)[i] : nullptr; }

// =============================================================================================
// Encoder

struct EncoderActs {
  int B = 0, L = 0;
  std::vector<int32_t> tokens;
  std::vector<uint8_t> valid;  // key mask [B*L]
  std::vector<AttnActs> layers;
  Vec x_last, rstd;  // input of final_norm, its 1/rms
  Vec out;           // final-normed encoder output [B*L, d]
  uint64_t site = 0; // dropout site base (distinct per encoder use in a pass)
};

BlockParams encoder_block(const Ctx& cx, size_t l, Params* g, Lora* gl) {
  const auto& L = cx.p.encoder[l];
  auto* G = g ? &g->encoder[l] : nullptr;
  return BlockParams{L.attn, L.norm, L.gate[0], cx.lora ? lora_at(&cx.lora->encoder, l) : nullptr,
                     G ? &G->attn : nullptr, G ? &G->norm : nullptr, G ? &G->gate[0] : nullptr,
                     gl ? lora_at(&gl->encoder, l) : nullptr};
}

void encoder_forward(const Ctx& cx, EncoderActs& a) {
  const Config& c = cx.c;
  const int d = c.d_model, T = a.B * a.L;
  Vec& x = a.x_last;  // the residual stream; after the last layer it is final_norm's input
  x.resize((size_t)T * d);
  embedding_forward(x.data(), a.tokens.data(), T, cx.p.embedding.data(), d);
  a.layers.resize(cx.p.encoder.size());
  const BlockShape s{a.B, a.L, a.L, /*self=*/true, /*causal=*/false, a.valid.data()};
  for (size_t l = 0; l < cx.p.encoder.size(); ++l)
    block_forward(cx, a.layers[l], x, nullptr, s, encoder_block(cx, l, nullptr, nullptr), cx.drop(a.site + l));
  a.out.resize((size_t)T * d);
  a.rstd.resize((size_t)T);
  rmsnorm_forward(a.out.data(), a.rstd.data(), a.x_last.data(), cx.p.encoder_norm.data(), T, d, cx.pool);
}

// d_out: gradient of the encoder output on entry; used as the stream's gradient (overwritten).
void encoder_backward(const Ctx& cx, const EncoderActs& a, Vec& d_out, Params* g, Lora* gl) {
  const Config& c = cx.c;
  const int d = c.d_model, T = a.B * a.L;
  Vec& dx = d_out;
  rmsnorm_backward_inplace(dx.data(), g ? g->encoder_norm.data() : nullptr, a.x_last.data(), a.rstd.data(),
                           cx.p.encoder_norm.data(), T, d, cx.pool);
  const BlockShape s{a.B, a.L, a.L, true, false, a.valid.data()};
  for (size_t l = cx.p.encoder.size(); l-- > 0;)
    block_backward(cx, a.layers[l], dx, nullptr, nullptr, s, encoder_block(cx, l, g, gl), cx.drop(a.site + l));
  if (g) embedding_backward(g->embedding.data(), dx.data(), a.tokens.data(), T, d);
}

// =============================================================================================
// Decoder (teacher-forced)

struct DecoderActs {
  int B = 0, L = 0;
  std::vector<uint8_t> valid;  // self-attention key mask [B*L]
  std::vector<AttnActs> self, cross;
  Vec x_last, rstd;
  Vec out;  // final-normed [B*L, d]
};

BlockParams decoder_block(const Ctx& cx, size_t l, bool cross, Params* g, Lora* gl) {
  const auto& L = cx.p.decoder[l];
  auto* G = g ? &g->decoder[l] : nullptr;
  if (!cross)
    return BlockParams{L.self_attn, L.norm_self, L.gate_self[0], cx.lora ? lora_at(&cx.lora->dec_self, l) : nullptr,
                       G ? &G->self_attn : nullptr, G ? &G->norm_self : nullptr, G ? &G->gate_self[0] : nullptr,
                       gl ? lora_at(&gl->dec_self, l) : nullptr};
  return BlockParams{L.cross_attn, L.norm_cross, L.gate_cross[0], cx.lora ? lora_at(&cx.lora->dec_cross, l) : nullptr,
                     G ? &G->cross_attn : nullptr, G ? &G->norm_cross : nullptr, G ? &G->gate_cross[0] : nullptr,
                     gl ? lora_at(&gl->dec_cross, l) : nullptr};
}

void decoder_forward(const Ctx& cx, DecoderActs& a, const TextBatch& batch, const EncoderActs& enc) {
  const Config& c = cx.c;
  const int d = c.d_model, T = a.B * a.L;
  Vec& x = a.x_last;  // the residual stream; after the last layer it is the final norm's input
  x.resize((size_t)T * d);
  embedding_forward(x.data(), batch.tgt_in.data(), T, cx.p.embedding.data(), d);
  const size_t n = cx.p.decoder.size();
  a.self.resize(n);
  a.cross.resize(n);
  const BlockShape ss{a.B, a.L, a.L, /*self=*/true, /*causal=*/true, a.valid.data()};
  const BlockShape cs{a.B, a.L, enc.L, /*self=*/false, /*causal=*/false, enc.valid.data()};
  for (size_t l = 0; l < n; ++l) {
    block_forward(cx, a.self[l], x, nullptr, ss, decoder_block(cx, l, false, nullptr, nullptr),
                  cx.drop(kSiteDecSelf + l));
    block_forward(cx, a.cross[l], x, enc.out.data(), cs, decoder_block(cx, l, true, nullptr, nullptr),
                  cx.drop(kSiteDecCross + l));
  }
  a.out.resize((size_t)T * d);
  a.rstd.resize((size_t)T);
  rmsnorm_forward(a.out.data(), a.rstd.data(), a.x_last.data(), cx.p.decoder_norm.data(), T, d, cx.pool);
}

// d_out: gradient of the final-normed decoder output (overwritten: it becomes the stream's
// gradient); adds the encoder output's gradient to d_enc.
void decoder_backward(const Ctx& cx, const DecoderActs& a, const TextBatch& batch, const EncoderActs& enc,
                      Vec& d_out, Vec& d_enc, Params* g, Lora* gl) {
  const Config& c = cx.c;
  const int d = c.d_model, T = a.B * a.L;
  Vec& dx = d_out;
  rmsnorm_backward_inplace(dx.data(), g ? g->decoder_norm.data() : nullptr, a.x_last.data(), a.rstd.data(),
                           cx.p.decoder_norm.data(), T, d, cx.pool);
  const BlockShape ss{a.B, a.L, a.L, true, true, a.valid.data()};
  const BlockShape cs{a.B, a.L, enc.L, false, false, enc.valid.data()};
  for (size_t l = cx.p.decoder.size(); l-- > 0;) {
    block_backward(cx, a.cross[l], dx, enc.out.data(), d_enc.data(), cs, decoder_block(cx, l, true, g, gl),
                   cx.drop(kSiteDecCross + l));
    block_backward(cx, a.self[l], dx, nullptr, nullptr, ss, decoder_block(cx, l, false, g, gl),
                   cx.drop(kSiteDecSelf + l));
  }
  if (g) embedding_backward(g->embedding.data(), dx.data(), batch.tgt_in.data(), T, d);
}

// =============================================================================================
// Output head (logits = h E^T over the target positions only) and the text loss.

// The head runs in chunks of kLmChunk target rows. A pass that keeps all activations keeps
// every chunk's probabilities for the backward; otherwise (recomputing or forward-only passes)
// one chunk buffer is reused and the backward recomputes each chunk's logits (one more GEMM,
// ~2% of a step at the 26M shape, instead of [R, V] floats: 32 MiB at batch 16 x 64).
constexpr int kLmChunk = 128;

struct LmActs {
  std::vector<int> rows;  // decoder rows with dec_seg > 0
  Vec h;                  // their final-normed states [R, d]
  Vec probs;              // softmax(logits): [R, V] (Keep::All) or one chunk [kLmChunk, V]
  std::vector<double> lse;
  std::vector<double> ce, nll, zz;  // per-row loss terms, summed in row order
};

// Logits of target rows [r0, r0 + n) into out [n, V] = h E^T, the embedding E [V, d] read in
// place. The same chunks in every pass: bit-identical logits.
void lm_logits(const Ctx& cx, const LmActs& a, int r0, int n, float* out) {
  const int d = cx.c.d_model, V = cx.c.vocab_size;
  matmul_forward(out, a.h.data() + (size_t)r0 * d, cx.p.embedding.data(), n, d, V, cx.pool);
}

// Runs fn(i) for i in [0, n) split over the pool; each i is computed by one thread, in one
// order, so results do not depend on the thread count.
template <class F>
void for_rows(nk::ThreadPool* pool, int n, F&& fn) {
  auto range = [&](size_t b, size_t e, unsigned) {
    for (size_t i = b; i < e; ++i) fn((int)i);
  };
  if (pool) pool->parallel_range((size_t)n, 8, range);
  else range(0, (size_t)n, 0);
}

// Where chunk r0's probabilities live.
float* lm_chunk(const Ctx& cx, LmActs& a, int r0) {
  return cx.keep == Keep::All ? a.probs.data() + (size_t)r0 * cx.c.vocab_size : a.probs.data();
}

TextLoss text_loss_forward(const Ctx& cx, LmActs& a, const DecoderActs& dec, const TextBatch& batch,
                           const LossOptions& opt) {
  const Config& c = cx.c;
  const int d = c.d_model, V = c.vocab_size;
  a.rows.clear();
  for (int r = 0; r < batch.batch * batch.dec_len; ++r)
    if (batch.dec_seg[(size_t)r] > 0) a.rows.push_back(r);
  const int R = (int)a.rows.size();
  a.h.resize((size_t)R * d);
  for (int i = 0; i < R; ++i)
    std::copy_n(dec.out.data() + (size_t)a.rows[(size_t)i] * d, d, a.h.data() + (size_t)i * d);
  a.probs.resize((size_t)(cx.keep == Keep::All ? R : std::min(R, kLmChunk)) * V);
  a.lse.resize((size_t)R);
  a.ce.resize((size_t)R);
  a.nll.resize((size_t)R);
  a.zz.resize((size_t)R);
  for (int r0 = 0; r0 < R; r0 += kLmChunk) {
    const int n = std::min(kLmChunk, R - r0);
    float* chunk = lm_chunk(cx, a, r0);
    lm_logits(cx, a, r0, n, chunk);
    for_rows(cx.pool, n, [&](int k) {
      const int i = r0 + k;
      float* z = chunk + (size_t)k * V;
      const int r = a.rows[(size_t)i];
      const float logit_t = z[batch.tgt_out[(size_t)r]];
      const float mx = *std::max_element(z, z + V);
      double sum = 0;
      for (int j = 0; j < V; ++j) sum += std::exp((double)z[j] - mx);
      const double lse = mx + std::log(sum);
      for (int j = 0; j < V; ++j) z[j] = (float)(std::exp((double)z[j] - lse));  // logits -> probabilities
      a.lse[(size_t)i] = lse;
      a.nll[(size_t)i] = lse - logit_t;
      a.ce[(size_t)i] = (lse - logit_t) * opt.class_weights[(size_t)batch.loss_class[(size_t)r]];
      a.zz[(size_t)i] = lse * lse;
    });
  }
  double ce = 0, nll = 0, zz = 0;
  for (int i = 0; i < R; ++i) {
    ce += a.ce[(size_t)i];
    nll += a.nll[(size_t)i];
    zz += a.zz[(size_t)i];
  }
  const double n = std::max(R, 1);
  TextLoss out;
  out.tokens = R;
  out.ce = ce / n;
  out.nll = nll / n;
  out.z_loss = opt.z_loss * zz / n;
  out.loss = out.ce + out.z_loss;
  return out;
}

// d(scale * text_loss)/d logits = scale/n * (w_t (p - onehot(target)) + 2 z lse_t p), then
// logits = h E^T gives dh (scattered back to decoder rows) and dE.
void text_loss_backward(const Ctx& cx, LmActs& a, const TextBatch& batch, const LossOptions& opt, float scale,
                        Vec& d_dec_out, Params* g) {
  const Config& c = cx.c;
  const int d = c.d_model, V = c.vocab_size, R = (int)a.rows.size();
  const double n = std::max(R, 1);
  Vec dh = zeros((size_t)R * d);
  for (int r0 = 0; r0 < R; r0 += kLmChunk) {
    const int m = std::min(kLmChunk, R - r0);
    float* chunk = lm_chunk(cx, a, r0);
    if (cx.keep != Keep::All) lm_logits(cx, a, r0, m, chunk);  // the forward's logits again
    for_rows(cx.pool, m, [&](int k) {
      const int i = r0 + k;
      float* p = chunk + (size_t)k * V;  // probabilities (recomputed from the same logits and
      const double lse = a.lse[(size_t)i];  // lse in a recomputing pass), then dlogits in place
      if (cx.keep != Keep::All)
        for (int j = 0; j < V; ++j) p[j] = (float)(std::exp((double)p[j] - lse));
      const int r = a.rows[(size_t)i];
      const float w = opt.class_weights[(size_t)batch.loss_class[(size_t)r]];
      const float cw = (float)(scale * w / n);
      const float cz = (float)(scale * 2.0 * opt.z_loss * lse / n);
      for (int j = 0; j < V; ++j) p[j] *= cw + cz;
      p[batch.tgt_out[(size_t)r]] -= cw;
    });
    matmul_backward(dh.data() + (size_t)r0 * d, g ? g->embedding.data() : nullptr, chunk, a.h.data() + (size_t)r0 * d,
                    cx.p.embedding.data(), m, d, V, cx.pool);
  }
  for (int i = 0; i < R; ++i) {
    const float* src = dh.data() + (size_t)i * d;
    float* dst = d_dec_out.data() + (size_t)a.rows[(size_t)i] * d;
    for (int k = 0; k < d; ++k) dst[k] += src[k];
  }
  // A recomputing pass saves memory: the head's buffers (~10 MiB at the 26M shape) are idle
  // for the rest of the backward, where the peak is.
  if (cx.keep != Keep::All)
    for (Vec* v : {&a.probs, &a.h}) Vec().swap(*v);
}

// =============================================================================================
// Contrastive head and the CLIP loss

struct ContrastiveActs {
  int N = 0;
  Vec pooled;  // [N, d]
  Vec hid;     // ReLU(pooled Wh^T + b) [N, d/4]
  Vec proj;    // hid Wp^T [N, cd]
  Vec inv;     // 1/||proj|| [N]
  Vec emb;     // L2-normalized [N, cd]
};

// The head's two Dense layers (never adapted by LoRA).
Dense head_hidden(const Ctx& cx, Params* g) {
  return Dense{&cx.p.contrastive_hidden, cx.c.d_model, cx.c.hidden_dim(), nullptr,
               g ? g->contrastive_hidden.data() : nullptr, nullptr};
}
Dense head_proj(const Ctx& cx, Params* g) {
  return Dense{&cx.p.contrastive_proj, cx.c.hidden_dim(), cx.c.contrastive_dim, nullptr,
               g ? g->contrastive_proj.data() : nullptr, nullptr};
}

void contrastive_forward(const Ctx& cx, ContrastiveActs& a, const EncoderActs& enc) {
  const Config& c = cx.c;
  const int d = c.d_model, h4 = c.hidden_dim(), cd = c.contrastive_dim, N = enc.B;
  Vec none;
  a.N = N;
  a.pooled.resize((size_t)N * d);
  mean_pool_forward(a.pooled.data(), enc.out.data(), enc.valid.data(), N, enc.L, d);
  a.hid.resize((size_t)N * h4);
  dense_forward(cx, head_hidden(cx, nullptr), a.hid.data(), a.pooled.data(), N, none);
  bias_relu_forward(a.hid.data(), cx.p.contrastive_hidden_bias.data(), N, h4);
  a.proj.resize((size_t)N * cd);
  dense_forward(cx, head_proj(cx, nullptr), a.proj.data(), a.hid.data(), N, none);
  a.inv.resize((size_t)N);
  a.emb.resize((size_t)N * cd);
  l2norm_forward(a.emb.data(), a.inv.data(), a.proj.data(), N, cd);
}

void contrastive_backward(const Ctx& cx, const ContrastiveActs& a, const EncoderActs& enc, const Vec& d_emb,
                          Vec& d_enc_out, Params* g) {
  const Config& c = cx.c;
  const int d = c.d_model, h4 = c.hidden_dim(), cd = c.contrastive_dim, N = a.N;
  Vec d_proj = zeros((size_t)N * cd);
  l2norm_backward(d_proj.data(), d_emb.data(), a.emb.data(), a.inv.data(), N, cd);
  Vec d_hid = zeros((size_t)N * h4);
  const Vec none;
  dense_backward(cx, head_proj(cx, g), d_hid.data(), d_proj.data(), a.hid.data(), N, none);
  bias_relu_backward(d_hid.data(), g ? g->contrastive_hidden_bias.data() : nullptr, a.hid.data(), N, h4);
  Vec d_pooled = zeros((size_t)N * d);
  dense_backward(cx, head_hidden(cx, g), d_pooled.data(), d_hid.data(), a.pooled.data(), N, none);
  mean_pool_backward(d_enc_out.data(), d_pooled.data(), enc.valid.data(), N, enc.L, d);
}

struct ClipActs {
  int N = 0;
  double temp = 1;
  bool temp_clipped = false;
  Vec logits;  // [N, N] = q t^T / temp
  Vec p_row, p_col;  // row-wise and column-wise softmax of logits
};

double clip_forward(ClipActs& a, const Vec& q, const Vec& t, int N, int cd, float log_temp) {
  const double lo = -std::log(100.0), hi = std::log(100.0);
  a.N = N;
  a.temp_clipped = log_temp < lo || log_temp > hi;
  a.temp = std::exp(std::clamp((double)log_temp, lo, hi));
  a.logits.assign((size_t)N * N, 0.0f);
  a.p_row.assign((size_t)N * N, 0.0f);
  a.p_col.assign((size_t)N * N, 0.0f);
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < cd; ++k) s += (double)q[(size_t)i * cd + k] * t[(size_t)j * cd + k];
      a.logits[(size_t)i * N + j] = (float)(s / a.temp);
    }
  // CE of row i (target i) and of column j (target j), each as log-softmax.
  double loss_row = 0, loss_col = 0;
  for (int i = 0; i < N; ++i) {
    double mr = -std::numeric_limits<double>::infinity(), mc = mr;
    for (int j = 0; j < N; ++j) {
      mr = std::max(mr, (double)a.logits[(size_t)i * N + j]);
      mc = std::max(mc, (double)a.logits[(size_t)j * N + i]);
    }
    double sr = 0, sc = 0;
    for (int j = 0; j < N; ++j) {
      sr += std::exp(a.logits[(size_t)i * N + j] - mr);
      sc += std::exp(a.logits[(size_t)j * N + i] - mc);
    }
    const double lse_r = mr + std::log(sr), lse_c = mc + std::log(sc);
    for (int j = 0; j < N; ++j) {
      a.p_row[(size_t)i * N + j] = (float)std::exp(a.logits[(size_t)i * N + j] - lse_r);
      a.p_col[(size_t)j * N + i] = (float)std::exp(a.logits[(size_t)j * N + i] - lse_c);
    }
    loss_row += lse_r - a.logits[(size_t)i * N + i];
    loss_col += lse_c - a.logits[(size_t)i * N + i];
  }
  return (loss_row / N + loss_col / N) / 2.0;
}

// dlogits = scale/(2N) * ((P_row - I) + (P_col - I)); logits = q t^T / temp.
void clip_backward(const ClipActs& a, const Vec& q, const Vec& t, int cd, float scale, Vec& dq, Vec& dt,
                   float* d_log_temp) {
  const int N = a.N;
  double dlt = 0;
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < N; ++j) {
      const size_t ij = (size_t)i * N + j;
      const double dl = scale / (2.0 * N) * (a.p_row[ij] + a.p_col[ij] - (i == j ? 2.0 : 0.0));
      // d logits / d log_temp = -logits (inside the clip range)
      dlt -= dl * a.logits[ij];
      const double f = dl / a.temp;
      for (int k = 0; k < cd; ++k) {
        dq[(size_t)i * cd + k] += (float)(f * t[(size_t)j * cd + k]);
        dt[(size_t)j * cd + k] += (float)(f * q[(size_t)i * cd + k]);
      }
    }
  if (!a.temp_clipped && d_log_temp) *d_log_temp += (float)dlt;
}

// =============================================================================================
// Entry points

}  // namespace

struct WorkspaceImpl {
  EncoderActs enc, enc_q, enc_t;
  DecoderActs dec;
  LmActs lm;
  ContrastiveActs head_q, head_t;
  BlockScratch scratch;
  Vec d_dec, d_enc;
};

Workspace::Workspace() : impl_(std::make_unique<WorkspaceImpl>()) {}
Workspace::~Workspace() = default;
Workspace::Workspace(Workspace&&) noexcept = default;
Workspace& Workspace::operator=(Workspace&&) noexcept = default;

namespace {

Status check_grads(const Config& c, Params* g) {
  if (!g) return Status::ok();
  if (g->encoder.empty() && g->decoder.empty() && g->embedding.empty()) {
    *g = zero_params(c);
    return Status::ok();
  }
  if ((int)g->encoder.size() != c.num_encoder_layers || (int)g->decoder.size() != c.num_decoder_layers)
    return make_error("gradient buffer has the wrong number of layers");
  Status st;
  for_each_tensor(*g, c, [&](const TensorSpec& s, Vec& v) {
    int64_t n = 1;
    for (auto x : s.shape) n *= x;
    if (st && (int64_t)v.size() != n) st = make_error("gradient buffer '{}' has {} values, expected {}", s.name, v.size(), n);
  });
  return st;
}

Status check_params(const Config& c, const Params& p) {
  Params& mp = const_cast<Params&>(p);  // visited read-only
  if ((int)p.encoder.size() != c.num_encoder_layers || (int)p.decoder.size() != c.num_decoder_layers)
    return make_error("parameters have the wrong number of layers for the config");
  Status st;
  for_each_tensor(mp, c, [&](const TensorSpec& s, Vec& v) {
    int64_t n = 1;
    for (auto x : s.shape) n *= x;
    if (st && (int64_t)v.size() != n) st = make_error("parameter '{}' has {} values, expected {}", s.name, v.size(), n);
  });
  return st;
}

// The LoRA side of a pass: adapters of the config's shape, gradients only with adapters.
Status check_lora_pass(const Config& c, const PassOptions& pass) {
  if (pass.lora_grads && !pass.lora) return make_error("LoRA gradients were asked for without adapters");
  if (pass.lora) NEEDLE_TRY(check_lora(*pass.lora, c));
  if (pass.lora_grads) {
    if (pass.lora_grads->rank != pass.lora->rank) return make_error("LoRA gradient buffer has another rank");
    NEEDLE_TRY(check_lora(*pass.lora_grads, c));
  }
  return Status::ok();
}

Status check_ids(const Config& c, const std::vector<int32_t>& ids, const char* what) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= c.vocab_size)
      return make_error("{}[{}] = {} is outside the vocabulary [0, {})", what, i, ids[i], c.vocab_size);
  return Status::ok();
}

}  // namespace

Status TextBatch::validate(const Config& c) const {
  if (batch <= 0 || enc_len <= 0 || dec_len <= 0)
    return make_error("text batch has shape batch={} enc_len={} dec_len={}; all must be positive", batch, enc_len,
                      dec_len);
  const size_t ne = (size_t)batch * enc_len, nd = (size_t)batch * dec_len;
  if (src.size() != ne || enc_seg.size() != ne)
    return make_error("text batch: src/enc_seg need {} entries, have {}/{}", ne, src.size(), enc_seg.size());
  if (tgt_in.size() != nd || tgt_out.size() != nd || dec_seg.size() != nd || loss_class.size() != nd)
    return make_error("text batch: tgt_in/tgt_out/dec_seg/loss_class need {} entries each", nd);
  NEEDLE_TRY(check_ids(c, src, "src"));
  NEEDLE_TRY(check_ids(c, tgt_in, "tgt_in"));
  NEEDLE_TRY(check_ids(c, tgt_out, "tgt_out"));
  for (size_t i = 0; i < nd; ++i)
    if (loss_class[i] < 0 || loss_class[i] > 3)
      return make_error("loss_class[{}] = {} is not one of 0..3", i, loss_class[i]);
  return Status::ok();
}

int64_t TextBatch::target_tokens() const {
  int64_t n = 0;
  for (int32_t s : dec_seg) n += s > 0;
  return n;
}

Status ClipBatch::validate(const Config& c) const {
  if (batch <= 0 || query_len <= 0 || tool_len <= 0) return make_error("clip batch has an empty dimension");
  if (query.size() != (size_t)batch * query_len || tool.size() != (size_t)batch * tool_len)
    return make_error("clip batch: query/tool sizes do not match [batch, len]");
  NEEDLE_TRY(check_ids(c, query, "query"));
  NEEDLE_TRY(check_ids(c, tool, "tool"));
  return Status::ok();
}

Result<TextLoss> text_loss(const Config& c, const Params& p, const TextBatch& batch, const LossOptions& opt,
                           const PassOptions& pass, Params* grads, float scale) {
  NEEDLE_TRY(c.validate());
  NEEDLE_TRY(check_params(c, p));
  NEEDLE_TRY(batch.validate(c));
  NEEDLE_TRY(check_grads(c, grads));
  NEEDLE_TRY(check_lora_pass(c, pass));
  std::unique_ptr<WorkspaceImpl> local;
  if (!pass.workspace) local = std::make_unique<WorkspaceImpl>();
  WorkspaceImpl& ws = pass.workspace ? pass.workspace->impl() : *local;
  const bool backward = grads || pass.lora_grads;
  const Keep keep = !backward ? Keep::None : pass.recompute ? Keep::Input : Keep::All;
  const Ctx cx{c, p, pass.pool, pass.dropout, pass.dropout_key, &ws.scratch, pass.lora, pass.fake_quant, keep};

  EncoderActs& enc = ws.enc;
  enc.B = batch.batch;
  enc.L = batch.enc_len;
  enc.tokens = batch.src;
  enc.site = kSiteEncoder;
  enc.valid.resize(batch.enc_seg.size());
  for (size_t i = 0; i < enc.valid.size(); ++i) enc.valid[i] = batch.enc_seg[i] > 0;
  encoder_forward(cx, enc);

  DecoderActs& dec = ws.dec;
  dec.B = batch.batch;
  dec.L = batch.dec_len;
  dec.valid.resize(batch.dec_seg.size());
  for (size_t i = 0; i < dec.valid.size(); ++i) dec.valid[i] = batch.dec_seg[i] > 0;
  decoder_forward(cx, dec, batch, enc);

  const TextLoss loss = text_loss_forward(cx, ws.lm, dec, batch, opt);
  if (!backward) return loss;

  Vec& d_dec = zeroed(ws.d_dec, dec.out.size());
  Vec& d_enc = zeroed(ws.d_enc, enc.out.size());
  text_loss_backward(cx, ws.lm, batch, opt, scale, d_dec, grads);
  decoder_backward(cx, dec, batch, enc, d_dec, d_enc, grads, pass.lora_grads);
  encoder_backward(cx, enc, d_enc, grads, pass.lora_grads);
  return loss;
}

Result<double> clip_loss(const Config& c, const Params& p, const ClipBatch& batch, const PassOptions& pass,
                         Params* grads, float scale) {
  NEEDLE_TRY(c.validate());
  NEEDLE_TRY(check_params(c, p));
  NEEDLE_TRY(batch.validate(c));
  NEEDLE_TRY(check_grads(c, grads));
  NEEDLE_TRY(check_lora_pass(c, pass));
  std::unique_ptr<WorkspaceImpl> local;
  if (!pass.workspace) local = std::make_unique<WorkspaceImpl>();
  WorkspaceImpl& ws = pass.workspace ? pass.workspace->impl() : *local;
  const bool backward = grads || pass.lora_grads;
  const Keep keep = !backward ? Keep::None : pass.recompute ? Keep::Input : Keep::All;
  const Ctx cx{c, p, pass.pool, pass.dropout, pass.dropout_key, &ws.scratch, pass.lora, pass.fake_quant, keep};
  const int N = batch.batch, cd = c.contrastive_dim;

  // The two sides run the same encoder and head on their own padded token arrays.
  auto side = [&](const std::vector<int32_t>& tokens, int L, uint64_t site, EncoderActs& enc, ContrastiveActs& head) {
    enc.B = N;
    enc.L = L;
    enc.tokens = tokens;
    enc.site = site;
    enc.valid.resize(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) enc.valid[i] = tokens[i] != c.pad_token_id;
    encoder_forward(cx, enc);
    contrastive_forward(cx, head, enc);
  };
  EncoderActs &enc_q = ws.enc_q, &enc_t = ws.enc_t;
  ContrastiveActs &head_q = ws.head_q, &head_t = ws.head_t;
  side(batch.query, batch.query_len, kSiteEncoder + (1u << 16), enc_q, head_q);
  side(batch.tool, batch.tool_len, kSiteEncoder + (2u << 16), enc_t, head_t);

  ClipActs clip;
  const double loss = clip_forward(clip, head_q.emb, head_t.emb, N, cd, p.log_temp[0]);
  if (!backward) return loss;

  Vec dq = zeros(head_q.emb.size()), dt = zeros(head_t.emb.size());
  clip_backward(clip, head_q.emb, head_t.emb, cd, scale, dq, dt, grads ? &grads->log_temp[0] : nullptr);
  for (auto [enc, head, d_emb] : {std::tuple{&enc_q, &head_q, &dq}, std::tuple{&enc_t, &head_t, &dt}}) {
    Vec d_enc = zeros(enc->out.size());
    contrastive_backward(cx, *head, *enc, *d_emb, d_enc, grads);
    encoder_backward(cx, *enc, d_enc, grads, pass.lora_grads);
  }
  return loss;
}

}  // namespace needle::train
