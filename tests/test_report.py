"""Markdown tables that render as tables (sbgc.report), checked with the parser the book uses."""

import pytest
from markdown_it import MarkdownIt

from sbgc.report import cell, markdown_table


def _html(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def test_a_pipe_in_a_cell_stays_in_its_cell():
    header = ("set", "bits/dim of p(x | y_true)")
    table = markdown_table(header, [("exact | head", 1.25)], align=["left", "right"])
    html = _html(table)
    assert html.count("<table>") == 1 and html.count("</th>") == 2 and html.count("</td>") == 2
    assert "p(x | y_true)" in html and 'style="text-align:right"' in html
    # the same table written by hand, unescaped, is not a table at all: what the helper prevents
    naive = "| set | bits/dim of p(x | y_true) |\n| --- | --- |\n| exact | 1.25 |"
    assert "<table>" not in _html(naive)


def test_cells_are_one_line_and_rows_must_match_the_header():
    assert cell("a\nb|c") == "a b\\|c"
    with pytest.raises(ValueError, match="row 1 has 1 cells, the header 2"):
        markdown_table(("a", "b"), [(1, 2), (3,)])
    with pytest.raises(ValueError, match="align must be 2 of"):
        markdown_table(("a", "b"), [], align=["left"])


def test_cpu_trained_note_names_cpu_models_only():
    from sbgc.report import cpu_trained_note

    mnist = {"device": "1x cpu (2 cores)", "n_params": 348_609, "data_source": "mnist-official", "step": 15_000}
    assert cpu_trained_note(mnist) == "0.35M-parameter MNIST network trained on a CPU (15,000 steps)"
    assert cpu_trained_note({"device": "8x NVIDIA H100"}, {"device": "1x cpu", "n_params": 781_251}) == \
        "0.78M-parameter CIFAR-10 network trained on a CPU"
    assert cpu_trained_note({"device": "1x NVIDIA H200"}) is None and cpu_trained_note({}) is None
    wrn = {"device": "1x cpu (2 cores)", "n_params": 303_418, "data_source": "mnist-official", "step": 2_000,
           "architecture": "WRN-10-2"}
    assert cpu_trained_note(mnist, wrn) == ("0.35M-parameter MNIST network trained on a CPU (15,000 steps); "
                                            "0.30M-parameter MNIST WRN-10-2 baseline trained on a CPU (2,000 steps)")
