"""The `swinv2 demo` command behind `make demo` (`swinv2 predict` is tested with the downloads)."""

from keras_swinv2.cli import main


def test_demo_runs_and_labels_random_weights(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 28,347,154" in out
    assert "RANDOM initialisation" in out
    top = out[out.index("Top-5:"):].strip().splitlines()[1:]
    assert len(top) == 5 and all(line.strip().endswith(")") and "%" in line for line in top)
