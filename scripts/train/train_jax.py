#!/usr/bin/env python3
"""Trains Needle with JAX on a GPU (issue 7, "the JAX route"): the original architecture and the
reference recipe (needle-reference.md section 5), checkpointing often and resuming across calls,
and writes the original pickle layout for needle-convert. See scripts/train/README.md.

  scripts/train/train_jax.py --data build-data --out build-train-jax --prepare-only      # CPU, once
  scripts/train/train_jax.py --out build-train-jax --config CONFIG.json --time-budget 540 [--export $OUT]

OUT (default build-train-jax/, git-ignored) holds:
  data.npz           the tokenized training / validation data (--prepare-only writes it; any run
                     without it prepares it from --data)
  run.json           the options that define the run (config, recipe, steps, seed): a resumed run
                     takes them from here, whatever the command line says
  state.npz          full training state (f32 parameters, optimizer moments, step, data position):
                     resume is exact
  needle.pkl         the latest parameters in the original layout (float16), what needle-convert reads
  best.pkl           the parameters with the lowest validation loss so far
  resume.json        step / data position of needle.pkl (with the run options)
  params-f16.npz     (--export / --assemble) the float16 parameters as compressed byte planes
                     plus the resume metadata: 43 MiB at the 26M shape where needle.pkl is 50, so it
                     and data.npz fit the device tool's 64 MiB transfers. Resuming from it or from
                     needle.pkl (a new machine, state.npz left behind) restarts the optimizer
                     moments ("warm resume"); from state.npz the run continues exactly.
  train_log.jsonl    one line per log interval and per evaluation
The newest of state.npz, params-f16.npz and needle.pkl (+ resume.json) is resumed from.
"""
import argparse
import json
import os
import queue
import shutil
import signal
import sys
import threading
import time

T0 = time.time()
sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import needle_data as D  # noqa: E402
import needle_model as M  # noqa: E402
import needle_optim as O  # noqa: E402

PART = 15 << 20  # exported files are split below the device tool's 16 MiB per file

RUN_KEYS = ("config", "init", "seed", "steps", "epochs", "batch_tokens", "rows", "optimizer", "muon_lr", "adam_lr",
            "warmup", "dropout", "qat_every", "clip_every", "clip_weight", "clip_pairs", "clip_query_len",
            "clip_tool_len", "z_loss", "compute", "remat")
DEFAULTS = {"init": "random", "seed": 0, "steps": 0, "epochs": 10, "batch_tokens": 32768, "rows": "1024x160,1024x512",
            "optimizer": "muon", "muon_lr": 0.02, "adam_lr": 3e-5, "warmup": 5.0, "dropout": 0.1, "qat_every": 100,
            "clip_every": 1000, "clip_weight": 0.1, "clip_pairs": 64, "clip_query_len": 128, "clip_tool_len": 384,
            "z_loss": 1e-4, "compute": "bf16", "remat": False}


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder with train.jsonl, val.jsonl, tokenizer.model (scripts/data/build's output)")
    p.add_argument("--tokenizer", help="SentencePiece model (default: DATA/tokenizer.model)")
    p.add_argument("--out", default="build-train-jax", help="run folder (default build-train-jax)")
    p.add_argument("--prepare-only", action="store_true", help="tokenize --data into OUT/data.npz and stop (CPU)")
    p.add_argument("--max-enc-len", type=int, default=D.MAX_ENC_LEN)
    p.add_argument("--max-dec-len", type=int, default=D.MAX_DEC_LEN)
    p.add_argument("--assemble", metavar="DIR", help="join DIR/needle.pkl.part-* (an --export) into OUT/needle.pkl, "
                   "check SHA256SUMS, copy resume.json / data.npz / train_log.jsonl, and stop")
    # Run-defining options (stored in OUT/run.json by the first call).
    g = p.add_argument_group("run (fixed by the first call; a resumed run reads them from OUT/run.json)")
    g.add_argument("--config", help="JSON object of model config keys (needle-reference.md section 2 defaults fill the rest)")
    g.add_argument("--init", help="random (default) or a .pkl checkpoint to start from (fine-tuning)")
    g.add_argument("--seed", type=int)
    g.add_argument("--steps", type=int, help="total optimizer steps (default: --epochs worth)")
    g.add_argument("--epochs", type=float, help=f"epochs when --steps is not given (default {DEFAULTS['epochs']})")
    g.add_argument("--batch-tokens", type=int, help=f"encoder row tokens per batch (default {DEFAULTS['batch_tokens']})")
    g.add_argument("--rows", help=f"packed row shapes ENCxDEC,... (default {DEFAULTS['rows']})")
    g.add_argument("--optimizer", choices=("muon", "adamw"), help="muon (default: Muon on kernels, AdamW on the rest) or adamw")
    g.add_argument("--muon-lr", type=float, help="Muon peak learning rate (default 0.02)")
    g.add_argument("--adam-lr", type=float, help="AdamW peak learning rate (default 3e-5, the reference fine-tuning value)")
    g.add_argument("--warmup", type=float, help="warmup and final decay, percent of the steps (default 5)")
    g.add_argument("--dropout", type=float, help="dropout on residual branches (default 0.1)")
    g.add_argument("--qat-every", type=int, help="every N-th step runs with INT4 fake-quantized kernels (default 100; 0 = never)")
    g.add_argument("--clip-every", type=int, help="every N-th step adds the CLIP loss (default 1000; 0 = never)")
    g.add_argument("--clip-weight", type=float, help="weight of the CLIP loss (default 0.1)")
    g.add_argument("--clip-pairs", type=int, help="(query, tool) pairs per CLIP batch (default 64)")
    g.add_argument("--clip-query-len", type=int)
    g.add_argument("--clip-tool-len", type=int)
    g.add_argument("--z-loss", type=float, help="z-loss coefficient (default 1e-4)")
    g.add_argument("--compute", choices=("bf16", "tf32", "f32"), help="matmul inputs (default bf16, as the original's dtype)")
    g.add_argument("--remat", action="store_true", default=None, help="recompute each layer in the backward (less memory)")
    # Per call.
    c = p.add_argument_group("this call")
    c.add_argument("--time-budget", type=float, default=540, help="seconds from start; stop, save and export before (default 540)")
    c.add_argument("--save-every", type=float, default=180, help="seconds between checkpoints (default 180)")
    c.add_argument("--eval-every", type=int, default=500, help="steps between validation passes (default 500)")
    c.add_argument("--log-every", type=int, default=50)
    c.add_argument("--export", metavar="DIR", help="at the end copy needle.pkl (split into <= 15 MiB parts), resume.json, "
                   "train_log.jsonl and SHA256SUMS here, e.g. the device tool's $OUT")
    c.add_argument("--export-data", action="store_true", help="with --export: also data.npz")
    c.add_argument("--export-best", action="store_true", help="with --export: also best.pkl (if it fits 60 MiB in all)")
    c.add_argument("--max-steps-this-call", type=int, default=0, help="stop after this many steps (smoke tests)")
    return p.parse_args(argv)


# ---- files ----------------------------------------------------------------------------------------


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def sha256(path):
    return D.file_sha256(path)


def save_state(path, params, opt, meta):
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8), "count": np.asarray(opt["count"])}
    for k, v in params.items():
        arrays["p/" + k] = v
    for k, v in opt["m"].items():
        arrays["m/" + k] = v
    for k, v in opt["v"].items():
        arrays["v/" + k] = v
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_state(path):
    z = np.load(path)
    meta = json.loads(bytes(z["meta"]).decode())
    params, m, v = {}, {}, {}
    for k in z.files:
        if k.startswith("p/"):
            params[k[2:]] = z[k]
        elif k.startswith("m/"):
            m[k[2:]] = z[k]
        elif k.startswith("v/"):
            v[k[2:]] = z[k]
    return params, {"count": z["count"], "m": m, "v": v}, meta


def save_f16_pack(path, params, meta):
    """float16 parameters as two byte planes per tensor (high bytes: sign, exponent and 2 mantissa
    bits, which compress; low bytes barely do) in a compressed npz, with the resume metadata."""
    meta = dict(meta, shapes={k: list(np.shape(v)) for k, v in params.items()})
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    for k, v in params.items():
        u = np.asarray(v, np.float32).astype(np.float16).reshape(-1).view(np.uint16)
        arrays["hi/" + k] = (u >> 8).astype(np.uint8)
        arrays["lo/" + k] = (u & 0xFF).astype(np.uint8)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_f16_pack(path):
    z = np.load(path)
    meta = json.loads(bytes(z["meta"]).decode())
    params = {}
    for k in z.files:
        if k.startswith("hi/"):
            name = k[3:]
            u = (z[k].astype(np.uint16) << 8) | z["lo/" + name].astype(np.uint16)
            params[name] = u.view(np.float16).astype(np.float32).reshape(meta["shapes"][name])
    return params, meta


def export(out, dest, with_data, with_best):
    """Copies what a new session needs into dest (<= 8 files of <= 15 MiB: the device tool's
    limits): params-f16.npz (split), resume.json, train_log.jsonl, SHA256SUMS, optionally
    data.npz and best.pkl."""
    os.makedirs(dest, exist_ok=True)
    files, whole = [], []

    def put(src, name):
        if os.path.getsize(src) <= PART:
            shutil.copyfile(src, os.path.join(dest, name))
            files.append(name)
            return
        whole.append((name, sha256(src)))
        with open(src, "rb") as f:
            k = 0
            while True:
                chunk = f.read(PART)
                if not chunk:
                    break
                n = f"{name}.part-{k:02d}"
                with open(os.path.join(dest, n), "wb") as g:
                    g.write(chunk)
                files.append(n)
                k += 1

    with open(os.path.join(out, "resume.json")) as f:
        meta = json.load(f)
    _, params, _ = M.load_pickle(os.path.join(out, "needle.pkl"))
    pack = os.path.join(out, "params-f16.npz")
    save_f16_pack(pack, params, meta)
    total = os.path.getsize(pack)
    put(pack, "params-f16.npz")
    for name in ("resume.json", "train_log.jsonl"):
        if os.path.exists(os.path.join(out, name)):
            put(os.path.join(out, name), name)
    if with_data:
        total += os.path.getsize(os.path.join(out, "data.npz"))
        put(os.path.join(out, "data.npz"), "data.npz")
    best = os.path.join(out, "best.pkl")
    if with_best and os.path.exists(best):
        if total + os.path.getsize(best) <= 60 << 20:
            put(best, "best.pkl")
        else:
            log("export: best.pkl left out (over 60 MiB in all)")
    sums = [f"{sha256(os.path.join(dest, n))}  {n}" for n in files] + [f"{h}  {n}" for n, h in whole]
    with open(os.path.join(dest, "SHA256SUMS"), "w") as f:
        f.write("\n".join(sums) + "\n")
    if len(files) + 1 > 8:
        log(f"export: {len(files) + 1} files; the device tool brings back at most 8")
    log(f"exported {', '.join(files)} + SHA256SUMS to {dest} ({(total >> 20)} MiB)")


def assemble(src, out):
    """Joins an export's parts into OUT, checks their SHA-256, and writes OUT/needle.pkl (the
    original layout, float16: the file needle-convert reads) from params-f16.npz."""
    os.makedirs(out, exist_ok=True)
    sums = {}
    if os.path.exists(os.path.join(src, "SHA256SUMS")):
        for line in open(os.path.join(src, "SHA256SUMS")):
            if line.strip():
                h, n = line.split()
                sums[n] = h
    names = sorted(os.listdir(src))
    done = []
    for base in ("params-f16.npz", "best.pkl", "data.npz", "resume.json", "train_log.jsonl"):
        parts = sorted(n for n in names if n.startswith(base + ".part-"))
        if not parts and base in names:
            parts = [base]
        if not parts:
            continue
        dst = os.path.join(out, base)
        with open(dst + ".tmp", "wb") as g:
            for n in parts:
                if n in sums and sha256(os.path.join(src, n)) != sums[n]:
                    sys.exit(f"assemble: {n}: SHA-256 mismatch")
                with open(os.path.join(src, n), "rb") as f:
                    g.write(f.read())
        if base in sums and sha256(dst + ".tmp") != sums[base]:
            os.unlink(dst + ".tmp")
            sys.exit(f"assemble: {base}: SHA-256 mismatch (incomplete or damaged parts)")
        os.replace(dst + ".tmp", dst)
        done.append(base)
    if "params-f16.npz" not in done:
        sys.exit(f"assemble: no params-f16.npz in {src}")
    params, meta = load_f16_pack(os.path.join(out, "params-f16.npz"))
    c = M.Config(meta["run"]["config"])
    M.save_pickle(os.path.join(out, "needle.pkl"), c, params, {"pretrain_step": int(meta["step"])})
    write_json(os.path.join(out, "run.json"), meta["run"])
    write_json(os.path.join(out, "resume.json"), meta)
    print(f"assembled {', '.join(done)} into {out}; wrote {out}/needle.pkl (step {meta['step']} of {meta['total']})")


# ---- run options -----------------------------------------------------------------------------------


def run_options(args, out):
    path = os.path.join(out, "run.json")
    given = {k: getattr(args, k) for k in RUN_KEYS if getattr(args, k) is not None}
    if "config" in given:
        with open(given["config"]) as f:
            given["config"] = json.load(f)
    if os.path.exists(path):
        with open(path) as f:
            run = json.load(f)
        for k, v in given.items():
            if run.get(k) != v:
                log(f"note: --{k.replace('_', '-')} {v!r} ignored: this run was started with {run.get(k)!r} (OUT/run.json)")
        return run, True
    if "config" not in given and given.get("init", "random") == "random":
        sys.exit("train_jax: a new run needs --config CONFIG.json (or --init CHECKPOINT.pkl)")
    run = dict(DEFAULTS)
    run.update(given)
    return run, False


# ---- main ------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    out = args.out
    os.makedirs(out, exist_ok=True)
    if args.assemble:
        return assemble(args.assemble, out)

    data_path = os.path.join(out, "data.npz")
    if args.data and not os.path.exists(os.path.join(args.data, "train.jsonl")) and os.path.exists(data_path):
        log(f"note: {args.data}/train.jsonl not here: training on {data_path} as it is")
        args.data = None
    if args.data:
        files = {s: os.path.join(args.data, f"{s}.jsonl") for s in ("train", "val")}
        files = {s: f for s, f in files.items() if os.path.exists(f)}
        if "train" not in files:
            sys.exit(f"train_jax: {args.data}/train.jsonl not found")
        tok = args.tokenizer or os.path.join(args.data, "tokenizer.model")
        fresh = os.path.exists(data_path)
        if fresh:
            info = D.Data(data_path).info
            fresh = (info["tokenizer_sha256"] == sha256(tok) and info["max_enc_len"] == args.max_enc_len
                     and info["max_dec_len"] == args.max_dec_len
                     and all(info["splits"].get(s, {}).get("sha256") == sha256(f) for s, f in files.items()))
        if not fresh:
            log(f"tokenizing {', '.join(files.values())} with {tok}")
            D.prepare(files, tok, data_path, args.max_enc_len, args.max_dec_len, log=log)
            shutil.copyfile(tok, os.path.join(out, "tokenizer.model"))
    if args.prepare_only:
        log(f"wrote {data_path} ({os.path.getsize(data_path) / 2**20:.1f} MiB)")
        return
    if not os.path.exists(data_path):
        sys.exit(f"train_jax: {data_path} not found: pass --data DIR (or carry it from a --prepare-only run)")

    run, resumed_run = run_options(args, out)
    data = D.Data(data_path)
    train, val = data.splits["train"], data.splits.get("val")
    shapes = D.parse_shapes(run["rows"])

    try:
        import jax
    except ImportError:
        sys.exit("train_jax: JAX is not installed here: training runs on the GPU machine (scripts/train/README.md); "
                 "--prepare-only and --assemble need only numpy")
    import needle_jax as NJ
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(out, "jax-cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    log(f"jax {jax.__version__}, devices {jax.devices()}")

    # Config and parameters.
    if run["init"] != "random" and not resumed_run:
        c, _, _ = M.load_pickle(run["init"])
        if run.get("config"):
            log("note: --config ignored with --init CHECKPOINT (the checkpoint's config is used)")
        run["config"] = c.given
    c = M.Config(run["config"])
    if c.vocab_size != data.info["vocab_size"]:
        sys.exit(f"train_jax: the tokenizer has {data.info['vocab_size']} pieces, the config's vocab_size is {c.vocab_size}")
    hp = O.Hyper(muon=run["optimizer"] == "muon", muon_lr=run["muon_lr"], adam_lr=run["adam_lr"])

    # Steps.
    if not resumed_run:
        per_epoch = len(D.epoch_batches(train, shapes, run["batch_tokens"], run["seed"], 0))
        run["steps_per_epoch"] = per_epoch
        if not run["steps"]:
            run["steps"] = max(1, int(round(run["epochs"] * per_epoch)))
        run["data_fingerprint"] = data.fingerprint
        write_json(os.path.join(out, "run.json"), run)
        log(f"new run: {M.count_params(c):,} parameters, {train.n} training examples, {per_epoch} batches per epoch, "
            f"{run['steps']} steps")
    elif run.get("data_fingerprint") != data.fingerprint:
        sys.exit("train_jax: OUT/data.npz differs from the data this run was started on (run.json data_fingerprint); "
                 "start a new run in another --out")
    total = run["steps"]

    # State: the newest of state.npz (exact), params-f16.npz and needle.pkl + resume.json (warm:
    # float16 parameters, fresh optimizer moments).
    state_path, pkl_path, resume_path, pack_path = (os.path.join(out, n) for n in
                                                    ("state.npz", "needle.pkl", "resume.json", "params-f16.npz"))
    meta = {"step": 0, "epoch": 0, "batch": 0, "best_val": None}
    params = opt = None
    source = "init"
    candidates = []
    if os.path.exists(state_path):
        with np.load(state_path) as z:
            candidates.append((json.loads(bytes(z["meta"]).decode())["step"], 2, "state"))
    if os.path.exists(pack_path):
        with np.load(pack_path) as z:
            candidates.append((json.loads(bytes(z["meta"]).decode())["step"], 1, "pack"))
    if os.path.exists(pkl_path) and os.path.exists(resume_path):
        with open(resume_path) as f:
            rj = json.load(f)
        if M.load_pickle(pkl_path)[2].get("pretrain_step") == rj["step"]:
            candidates.append((rj["step"], 0, "pkl"))
    if candidates:
        source = max(candidates)[2]
    if source == "state":
        params, opt, meta = load_state(state_path)
        log(f"resumed exactly from {state_path} at step {meta['step']}")
    elif source in ("pack", "pkl"):
        if source == "pack":
            params, warm = load_f16_pack(pack_path)
        else:
            params, warm = M.load_pickle(pkl_path)[1], rj
        if warm.get("data_fingerprint") != data.fingerprint:
            sys.exit(f"train_jax: {pack_path if source == 'pack' else resume_path} was written for other data")
        opt = O.init_state(params, hp)
        opt["count"] = np.asarray(warm["step"], np.int32)
        meta = {k: warm[k] for k in ("step", "epoch", "batch", "best_val")}
        log(f"warm resume from {pack_path if source == 'pack' else pkl_path} at step {meta['step']}: "
            "float16 parameters, optimizer moments restarted")
    else:
        if run["init"] != "random":
            _, params, _ = M.load_pickle(run["init"])
        else:
            params = M.init_params(c, run["seed"])
        opt = O.init_state(params, hp)
    M.check_params(c, params)

    if meta["step"] >= total:
        log(f"run already finished ({meta['step']}/{total} steps)")
        if args.export:
            export(out, args.export, args.export_data, args.export_best)
        return

    ops = NJ.JaxOps(run["compute"], run["dropout"], run["remat"])
    text_step, clip_step = NJ.make_train_step(c, hp, ops, run["z_loss"], M.CLASS_WEIGHTS, run["clip_weight"])
    eval_step = NJ.make_eval_step(c, NJ.JaxOps(run["compute"], 0.0, False), run["z_loss"])
    params = NJ.to_device(params)
    opt = NJ.to_device(opt)
    base_key = jax.random.PRNGKey(run["seed"])

    stop = {"signal": None}

    def on_signal(sig, _frame):
        stop["signal"] = sig

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log_path = os.path.join(out, "train_log.jsonl")

    def log_line(obj):
        with open(log_path, "a") as f:
            f.write(json.dumps(obj) + "\n")

    def evaluate():
        if val is None or val.n == 0:
            return None
        t = time.time()
        ce = tok = wl = 0.0
        for s, rows in D.epoch_batches(val, shapes, run["batch_tokens"], 0, 0):
            E, Dl = shapes[s]
            B = max(1, run["batch_tokens"] // E)
            a, b, w = eval_step(params, D.make_batch(val, rows, B, E, Dl))
            ce, tok, wl = ce + float(a), tok + float(b), wl + float(w)
        r = {"val_ce": ce / max(tok, 1), "val_loss": wl / max(tok, 1), "val_tokens": tok, "eval_s": time.time() - t}
        eval_cost[0] = r["eval_s"]
        return r

    save_cost = [20.0]
    eval_cost = [0.0]
    saved_step = [-1]

    def save(final=False):
        t = time.time()
        p_np = NJ.to_numpy(params)
        o_np = NJ.to_numpy(opt)
        m = dict(meta, data_fingerprint=data.fingerprint, total=total, time=time.strftime("%Y-%m-%d %H:%M:%S"), run=run)
        save_state(state_path, p_np, o_np, m)
        M.save_pickle(pkl_path + ".tmp", c, p_np, {"pretrain_step": int(meta["step"])})
        os.replace(pkl_path + ".tmp", pkl_path)
        write_json(resume_path, m)
        save_cost[0] = time.time() - t
        saved_step[0] = meta["step"]
        log(f"saved step {meta['step']} ({save_cost[0]:.1f}s){' (final)' if final else ''}")

    # Batches, produced ahead on a thread (host-side packing overlaps the GPU).
    def batches():
        epoch, b = meta["epoch"], meta["batch"]
        while True:
            eb = D.epoch_batches(train, shapes, run["batch_tokens"], run["seed"], epoch)
            while b < len(eb):
                s, rows = eb[b]
                E, Dl = shapes[s]
                B = max(1, run["batch_tokens"] // E)
                yield epoch, b + 1, D.make_batch(train, rows, B, E, Dl)
                b += 1
            epoch, b = epoch + 1, 0

    q = queue.Queue(maxsize=8)

    def producer():
        for item in batches():
            q.put(item)

    threading.Thread(target=producer, daemon=True).start()
    clip_rng_seed = run["seed"] * 1000003

    if meta["step"] == 0 and val is not None:
        r = evaluate()
        log(f"step 0 validation: ce {r['val_ce']:.4f} loss {r['val_loss']:.4f} ({r['eval_s']:.1f}s, includes compiling)")
        log_line(dict(r, step=0, time=time.time() - T0))

    last_save = time.time()
    step_times = []
    pending = []
    toks = n_since = 0
    t_log = time.time()
    steps_this_call = 0
    while meta["step"] < total:
        elapsed = time.time() - T0
        step_est = float(np.median(step_times[-20:])) if step_times else 30.0
        reserve = 2 * save_cost[0] + 3 * step_est + eval_cost[0] + 10 + (save_cost[0] if args.export else 0)
        if elapsed + reserve > args.time_budget:
            log(f"time budget: stopping at step {meta['step']} ({elapsed:.0f}s of {args.time_budget:.0f}s)")
            break
        if stop["signal"] is not None:
            log(f"signal {stop['signal']}: stopping at step {meta['step']}")
            break
        if args.max_steps_this_call and steps_this_call >= args.max_steps_this_call:
            break
        epoch, b_next, batch = q.get()
        step = meta["step"]
        key = jax.random.fold_in(base_key, step)
        qat = 1.0 if run["qat_every"] and step % run["qat_every"] == run["qat_every"] - 1 else 0.0
        lr_scale = O.schedule(step, total, run["warmup"] / 100, run["warmup"] / 100)
        cb = None
        if run["clip_every"] and run["clip_weight"] and step % run["clip_every"] == run["clip_every"] - 1:
            cb = D.clip_batch(data, train, np.random.default_rng([clip_rng_seed, step]), run["clip_pairs"],
                              run["clip_query_len"], run["clip_tool_len"])
        if cb is not None:
            params, opt, mt = clip_step(params, opt, batch, key, qat, lr_scale, cb[0], cb[1])
        else:
            params, opt, mt = text_step(params, opt, batch, key, qat, lr_scale)
        pending.append((step, epoch, qat, lr_scale, mt))
        toks += int((batch["enc_seg"] > 0).sum() + (batch["dec_seg"] > 0).sum())
        meta.update(step=step + 1, epoch=epoch, batch=b_next)
        steps_this_call += 1
        n_since += 1
        if steps_this_call <= 3 or step % args.log_every == args.log_every - 1 or meta["step"] == total:
            jax.block_until_ready(mt["loss"])
            dt = time.time() - t_log
            for s_, e_, q_, l_, m_ in pending:
                rec = {k: float(v) for k, v in m_.items()}
                rec.update(step=s_ + 1, epoch=e_, qat=q_, lr_scale=l_)
                log_line(rec)
            last = {k: float(v) for k, v in pending[-1][4].items()}
            log(f"step {meta['step']}/{total} epoch {epoch} loss {last['loss']:.4f} ce {last['ce']:.4f} "
                f"(unweighted {last['ce_plain_sum'] / max(last['tokens'], 1):.4f}/token) "
                f"z {last['z']:.5f} |g| {last['grad_norm']:.3f} lr x{lr_scale:.3f}"
                + (f" clip {last['clip']:.4f}" if "clip" in last else "")
                + f" | {toks / max(dt, 1e-9):,.0f} tok/s")
            if steps_this_call > 3:
                step_times.append(dt / n_since)
            pending, toks, n_since, t_log = [], 0, 0, time.time()
        if meta["step"] % args.eval_every == 0 or meta["step"] == total:
            r = evaluate()
            if r is not None:
                best = meta["best_val"] is None or r["val_ce"] < meta["best_val"]
                log(f"step {meta['step']} validation: ce {r['val_ce']:.4f} loss {r['val_loss']:.4f}{' (best)' if best else ''}")
                log_line(dict(r, step=meta["step"], time=time.time() - T0))
                if best:
                    meta["best_val"] = r["val_ce"]
                    save()
                    last_save = time.time()
                    shutil.copyfile(pkl_path, os.path.join(out, "best.pkl"))
            jax.block_until_ready(params)
            toks, n_since, t_log = 0, 0, time.time()  # throughput counts training steps only
        if time.time() - last_save > args.save_every:
            save()
            last_save = time.time()
            toks, n_since, t_log = 0, 0, time.time()

    jax.block_until_ready(params)
    if saved_step[0] != meta["step"]:
        save(final=True)
    if meta["step"] >= total:
        tokp = os.path.join(out, "tokenizer.model")
        log(f"run finished: {total} steps; convert with: build/bin/needle-convert {pkl_path} "
            f"--tokenizer {tokp if os.path.exists(tokp) else 'build-data/tokenizer.model'} -o data/needle-default.needle")
    if args.export:
        export(out, args.export, args.export_data, args.export_best)
    log("done")


if __name__ == "__main__":
    main()
