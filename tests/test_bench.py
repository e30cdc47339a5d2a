"""``hairtryon bench``: the numbers it reports are measured, and there are as many as asked for.

Cost, measured on the shared 2-core machine at a load average of about 6: 23 s (try-ons at 256²,
SDEdit with a tiny UNet, most of it imports and model loading).
"""
import json

import pytest

from hairtryon.bench import bench_sdedit, bench_stages, format_report
from hairtryon.cli import main

TINY = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
            norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def test_sdedit_samplers_measured_in_one_run():
    rep = bench_sdedit(t0=40, steps=5, calls=2, config=TINY, device="cpu", precision="fp32")
    ddim, ddpm = rep["samplers"]["ddim"], rep["samplers"]["ddpm"]
    assert ddpm["unet_calls"] == 40 and 1 <= ddim["unet_calls"] <= 5  # what each sampler really called
    assert rep["unet_call_s"] > 0 and ddim["per_call_s"] == pytest.approx(ddim["refine_s"] / ddim["unet_calls"])
    assert rep["ddpm_over_ddim"] == pytest.approx(ddpm["refine_s"] / ddim["refine_s"])
    assert "ddpm / ddim" in format_report({"machine": {"cpus": 2, "torch": "x", "torch_threads": 2,
                                                       "cpu_capability": "x", "cuda": None,
                                                       "load_average": 0}, "sdedit": rep})


def test_stage_seconds_and_the_cli_json(capsys):
    stages = bench_stages(sizes=(256,), runs=1)["256"]
    assert list(stages)[0] == "analysis" and list(stages)[-1] == "total"
    assert {"reparse", "fast_marching"} <= set(stages)
    assert stages["total"] >= sum(v for k, v in stages.items() if k != "total") * 0.99
    assert main(["bench", "--sizes", "256", "--runs", "1", "--refine", "none", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["stages"]) == {"256"} and "fast_marching" not in report["stages"]["256"]
    assert report["machine"]["cpus"] >= 1
