"""CKKS secure sum: privfl COMPACT against the way NVIDIA FLARE uses TenSEAL, in one run.

d = 1e6 float32 parameters (uniform in [-1, 1]) for each of 10 clients, weights 1.

* **privfl COMPACT** — :class:`privfl.he.CKKSSecureSum` with parameters derived from the
  ValueSpec (‖x‖∞ ≤ 1, 10 clients): seeded symmetric encryption, complex packing, byte-packed
  residues; the full client/server protocol through privfl's wire format.
* **NVFlare-style baseline** — STANDARD parameters (N = 8192, [60, 40, 40], scale 2^40),
  symmetric TenSEAL context, one ``ts.ckks_vector`` per layer (the vector is split into four
  "layers"), ``serialize()``; the server loads each with a key-less context and ``add_``s.

Reported per client: encrypt seconds (to wire bytes), upload bytes per parameter, decrypt
seconds (from the aggregate's bytes); per round: server sum seconds (parse and add 10 uploads,
produce the aggregate's bytes); max |error| of the decrypted sum. Medians; speed-ups are
baseline / privfl in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from typing import Any

import numpy as np

from privfl.core.spec import Contribution, ValueSpec
from privfl.he import STANDARD, CKKSSecureSum
from privfl.he.parallel import default_workers

CONFIG = {"dim": 1_000_000, "clients": 10, "reps": 3,
          "layers": [500_000, 400_000, 99_000, 1_000]}


def _privfl(values: list[np.ndarray], reps: int, workers: int) -> dict[str, Any]:
    d, n = len(values[0]), len(values)
    ss = CKKSSecureSum(workers=workers)
    proc = ss.create(ValueSpec(length=d, max_clients=n, linf_bound=1.0))
    side = ss.client(proc.client_config())
    clients = list(range(n))
    enc_t, uploads = [], []
    srv = proc.new_round(1, clients)
    req = srv.step(())
    assert isinstance(req, dict)
    side.session(0).step(req[0], Contribution(values[0], 1.0))  # start any workers
    for c in clients:
        t = time.perf_counter()
        uploads.append(side.session(c).step(req[c], Contribution(values[c], 1.0)))
        enc_t.append(time.perf_counter() - t)
    sum_t, agg = [], b""
    for _ in range(reps):
        srv = proc.new_round(1, clients)
        srv.step(())
        t = time.perf_counter()
        for c in clients:
            srv.receive(c, uploads[c])
        requests = srv.step(())
        sum_t.append(time.perf_counter() - t)
        assert isinstance(requests, dict)
        decryptor = min(requests)
        agg = requests[decryptor]
    dec_t, reply = [], b""
    for _ in range(reps):
        t = time.perf_counter()
        reply = side.session(decryptor).step(agg, None)
        dec_t.append(time.perf_counter() - t)
    from privfl.core import wire
    from privfl.he.securesum import _DECRYPTED

    total = wire.decode(reply, _DECRYPTED).array("sum")[:-1]
    ref = np.sum(np.stack(values).astype(np.float64), axis=0)
    assert ss.params is not None
    return {"params": repr(ss.params), "workers": workers,
            "encrypt_s": statistics.median(enc_t),
            "upload_bytes_per_param": statistics.median(len(u) for u in uploads) / d,
            "server_sum_s": statistics.median(sum_t), "decrypt_s": statistics.median(dec_t),
            "download_bytes_per_param": len(agg) / d,
            "max_abs_error": float(np.abs(total - ref).max())}


def _nvflare(values: list[np.ndarray], layers: list[int], reps: int) -> dict[str, Any]:
    import tenseal as ts

    d = len(values[0])
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, STANDARD.poly_modulus_degree,
                     coeff_mod_bit_sizes=list(STANDARD.coeff_mod_bit_sizes),
                     encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC)
    ctx.global_scale = 2.0**STANDARD.scale_bits
    server_ctx = ts.context_from(ctx.serialize(save_public_key=False, save_secret_key=False,
                                               save_galois_keys=False, save_relin_keys=False))
    bounds = np.cumsum([0, *layers])
    quiet = contextlib.redirect_stdout(io.StringIO())
    enc_t, uploads = [], []
    with quiet:
        for x in values:
            t = time.perf_counter()
            uploads.append([ts.ckks_vector(ctx, x[a:b].ravel()).serialize()
                            for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
            enc_t.append(time.perf_counter() - t)
        sum_t, agg = [], []
        for _ in range(reps):
            t = time.perf_counter()
            acc = [ts.ckks_vector_from(server_ctx, blob) for blob in uploads[0]]
            for up in uploads[1:]:
                for a, blob in zip(acc, up, strict=True):
                    a.add_(ts.ckks_vector_from(server_ctx, blob))
            agg = [a.serialize() for a in acc]
            sum_t.append(time.perf_counter() - t)
        dec_t, total = [], np.zeros(d)
        for _ in range(reps):
            t = time.perf_counter()
            total = np.concatenate([np.asarray(ts.ckks_vector_from(ctx, blob).decrypt())
                                    for blob in agg])
            dec_t.append(time.perf_counter() - t)
    ref = np.sum(np.stack(values).astype(np.float64), axis=0)
    return {"params": repr(STANDARD), "encrypt_s": statistics.median(enc_t),
            "upload_bytes_per_param": statistics.median(sum(map(len, u)) for u in uploads) / d,
            "server_sum_s": statistics.median(sum_t), "decrypt_s": statistics.median(dec_t),
            "download_bytes_per_param": sum(map(len, agg)) / d,
            "max_abs_error": float(np.abs(total - ref).max())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(CONFIG)
    if args.quick:
        cfg.update(dim=100_000, clients=3, reps=1, layers=[50_000, 40_000, 9_000, 1_000])
    if args.repeats:
        cfg["reps"] = args.repeats
    rng = np.random.default_rng(0)
    values = [rng.uniform(-1, 1, int(cfg["dim"])).astype(np.float32)
              for _ in range(int(cfg["clients"]))]
    base = _nvflare(values, list(cfg["layers"]), int(cfg["reps"]))
    ours = _privfl(values, int(cfg["reps"]), 1)
    par = _privfl(values, int(cfg["reps"]), default_workers())
    speedups = {k: base[k] / ours[k] for k in ("encrypt_s", "decrypt_s", "server_sum_s")}
    for name, r in (("nvflare-style", base), ("privfl COMPACT", ours),
                    (f"  + {par['workers']} procs", par)):
        print(f"{name:15s} upload {r['upload_bytes_per_param']:6.2f} B/param  encrypt "
              f"{r['encrypt_s']:.3f} s  server sum {r['server_sum_s']:.3f} s  decrypt "
              f"{r['decrypt_s']:.3f} s  max err {r['max_abs_error']:.2e}")
    print("speed-up (baseline / privfl): " + ", ".join(f"{k} x{v:.2f}"
                                                      for k, v in speedups.items()))
    par_speedups = {k: base[k] / par[k] for k in ("encrypt_s",)}
    print(f"with {par['workers']} worker processes: " + ", ".join(
        f"{k} x{v:.2f}" for k, v in par_speedups.items()))
    return {"config": cfg, "baseline_nvflare_style": base, "privfl_compact": ours,
            "privfl_compact_parallel": par, "speedup_baseline_over_privfl": speedups,
            "speedup_baseline_over_privfl_parallel": par_speedups}
