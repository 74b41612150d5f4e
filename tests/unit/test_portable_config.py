"""configs/portable.yaml: loads, and Beam's PortableRunner options know every argument."""

from __future__ import annotations

import logging

from pipeline.config import load_config
from tests.conftest import REPO_ROOT


def test_portable_config_is_a_portable_runner_with_an_external_worker_pool(caplog):
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

    config = load_config(REPO_ROOT / "configs" / "portable.yaml")
    with caplog.at_level(logging.WARNING):
        options = PipelineOptions(config.beam_pipeline_args)
        options.get_all_options()
    assert "Discarding unparseable args" not in caplog.text, caplog.text
    portable = options.view_as(PortableOptions)
    assert options.get_all_options()["runner"] == "PortableRunner"
    assert portable.environment_type == "EXTERNAL"
    assert portable.job_endpoint.startswith("localhost:")
    assert portable.environment_config.startswith("localhost:")
