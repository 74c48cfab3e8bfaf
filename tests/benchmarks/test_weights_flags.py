"""``benchmarks.int8_layers`` and ``benchmarks.tiling_vs_whole`` take the shared weights flags (parse level)."""

from __future__ import annotations

import pytest

from benchmarks import int8_layers, tiling_vs_whole


@pytest.mark.parametrize("main", [int8_layers.main, lambda argv: tiling_vs_whole.main(["x.png", *argv])],
                         ids=["int8_layers", "tiling_vs_whole"])
def test_weights_flags_are_read_and_a_missing_file_is_a_usage_error(tmp_path, main, capsys):
    with pytest.raises(SystemExit) as error:
        main(["--weights", str(tmp_path / "nope.pth.tar")])
    assert error.value.code == 2 and f"weights file {tmp_path / 'nope.pth.tar'} not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as error:
        main(["--weights-md5", "abc"])
    assert error.value.code == 2 and "--weights-md5 checks the archive" in capsys.readouterr().err
