"""The soak script itself (benchmarks/soak.py), on a short budget: the real daemon, a real broker
stopped mid-run, and books that balance - every produced result received or counted as dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mosquitto import need_mosquitto

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_soak_script_short_run_with_a_broker_outage_balances_its_books(tmp_path, tiny_tflite):
    need_mosquitto()
    out = tmp_path / "soak"
    # a buffer smaller than what the outage produces, so the overflow path is counted too
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "0.3",
                        "--broker-outage-s", "3", "--mqtt-buffer", "100", "--sample-s", "1",
                        "--model", str(tiny_tflite["int8"]), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]   # 1 = a criterion failed (e.g. a busy CPU)
    res = json.loads((out / "soak.json").read_text())
    books = res["books"]
    assert books["produced"] > 500
    assert books["lost"] == 0 and books["received"] + books["dropped"] == books["produced"]
    assert books["dropped"] > 0                                     # the outage overflowed the buffer, counted
    assert books["beyond_produced"] == 0 and books["undecodable"] == 0
    assert res["outage"] and res["outage"][1] - res["outage"][0] >= 3
    assert any(s["health"] == "degraded" for s in res["samples"])   # the outage showed in /healthz
    assert res["samples"][-1]["health"] == "ok"                      # and healed by itself
    crit = res["judgement"]["criteria"]
    assert set(crit) == {"rss_growth_mb", "fps_last_vs_first", "lost"} and crit["lost"]["pass"]
    assert crit["rss_growth_mb"]["value"] is not None
    assert (out / "soak.png").stat().st_size > 10_000 and "| lost results" in (out / "soak.md").read_text()
    assert "lost: 0 PASS" in r.stdout
