"""experiments/topics.py: its quick run leaves figures/lda.{png,json} with every number drawn,
and --plot-only redraws from the JSON."""
import json
import os
import sys

import pytest

from conftest import ROOT, quick_run

pytest.importorskip("matplotlib")
sys.path.append(os.path.join(ROOT, "experiments"))  # after the scripts: nothing shadows them


def test_quick_run_writes_every_number_and_redraws(tmp_path, capsys, monkeypatch):
    import topics
    r, data = quick_run("topics", tmp_path, "--threads", 1, drawn="lda")
    assert data["quick"] and data["machine"]["threads"] == 1
    s = data["settings"]
    assert s["n_topics"] == 5 and s["train_documents"] > 20 and s["held_out_documents"] > 0
    for name in ("vb", "prodlda"):
        (run,) = data["runs"][name]
        assert run["seed"] == 1337 and len(run["npmi"]) == 5 and run["held_out_perplexity"] > 1
        assert 0 < run["diversity"] <= 1
        assert all(-1 <= v <= 1 for v in run["npmi"])
    assert len(data["runs"]["random"][0]["npmi"]) == s["random_sets"]
    assert [t["npmi"] for t in data["topics"]] == sorted(data["runs"]["vb"][0]["npmi"],
                                                          reverse=True)
    rows = data["map"]["share"]
    assert len(rows) == len(data["map"]["packages"]) and all(abs(sum(r) - 1) < 1e-9 for r in rows)
    assert "| vb | 1337 |" in r.stdout and "| random 10-word sets |" in r.stdout
    (tmp_path / "lda.png").unlink()
    capsys.readouterr()
    monkeypatch.setattr(topics, "measure", lambda args: pytest.fail("--plot-only measured"))
    topics.main(["--plot-only", "--out", str(tmp_path)])
    assert (tmp_path / "lda.png").exists()
    assert json.loads((tmp_path / "lda.json").read_text()) == data  # not re-measured
    assert "| prodlda | 1337 |" in capsys.readouterr().out
