#!/usr/bin/env python3
"""Writes e4m3_reference.json: float32 values and the FP8 E4M3 code ml_dtypes gives each (its
float8_e4m3fn, round to nearest even), for tests/kernels/fp8_e4m3_test.cc.

Usage: python3 tests/data/fp8/make_e4m3_reference.py   (needs numpy and ml_dtypes from PyPI)

The values: every finite code's value; the midpoint between each two neighbouring magnitudes and
the floats just either side of it (ties go to the even code); 4,000 magnitudes spread
log-uniformly over E4M3's range and a little beyond each end, both signs. Magnitudes above 448
are left out: ml_dtypes rounds them to NaN where the quantizer saturates."""
import json
import pathlib

import ml_dtypes
import numpy as np

E4M3 = ml_dtypes.float8_e4m3fn


def main() -> None:
    codes = np.arange(256, dtype=np.uint8)
    values = codes.view(E4M3).astype(np.float32)
    finite = values[np.isfinite(values)]
    positive = np.unique(np.abs(finite))  # 0 and the 126 positive magnitudes, ascending
    mids = ((positive[:-1].astype(np.float64) + positive[1:]) / 2).astype(np.float32)
    around = np.concatenate([mids, np.nextafter(mids, np.float32(0)),
                             np.nextafter(mids, np.float32(np.inf))])
    rng = np.random.default_rng(2026)
    spread = np.exp(rng.uniform(np.log(2.0**-12), np.log(448.0), 4000)).astype(np.float32)
    xs = np.concatenate([finite, around, -around, spread, -spread, np.float32([448.0, -448.0])])
    xs = xs[np.abs(xs) <= 448.0]
    got = xs.astype(E4M3).view(np.uint8)
    cases = [[f"{x.view(np.uint32):08x}", int(c)] for x, c in zip(xs, got)]
    out = {
        "generator": f"ml_dtypes {ml_dtypes.__version__} float8_e4m3fn, numpy {np.__version__}",
        "cases": cases,  # [float32 bits as hex, code]
    }
    path = pathlib.Path(__file__).with_name("e4m3_reference.json")
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"{path}: {len(cases)} cases")


if __name__ == "__main__":
    main()
