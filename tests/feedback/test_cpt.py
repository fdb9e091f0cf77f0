"""`training cpt`: continued pre-training on a folder of documents gives a completion adapter that
fits that text better than the base model (a few steps on CPU)."""

import json

import pytest

from tests.training.conftest import base_model  # noqa: F401
from training.loop import corpus_chunks, run_cpt, text_perplexity

pytestmark = pytest.mark.integration


def test_cpt_adapter_fits_the_corpus(base_model, tmp_path):  # noqa: F811
    corpus = tmp_path / "reader"
    corpus.mkdir()
    (corpus / "thesis.md").write_text(
        "# Thesis statements\n\nA thesis statement names the claim an essay defends. It is arguable, specific, "
        "and placed at the end of the introduction.\n\nA weak thesis announces a topic; a strong thesis takes a "
        "position and gives the reason.\n\nRevise a thesis after drafting: the essay you wrote may argue something "
        "sharper than the thesis you planned.\n", encoding="utf-8")
    adapter = run_cpt([str(corpus)], name="cpt-test", base_model=base_model, output_dir=str(tmp_path / "adapter"),
                      max_steps=4, learning_rate=2e-3, max_length=128, batch_size=1)
    assert (adapter / "adapter_config.json").exists()
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["metrics"]["chunks"] == 1 and manifest["metrics"]["global_step"] == 4
    texts = corpus_chunks(str(corpus))
    assert text_perplexity(base_model, str(adapter), texts) < text_perplexity(base_model, None, texts)
