"""The quickstart's two configs agree with each other (fast; the README's test runs the quickstart itself):
the training config works alone on the README's corpus and inside the pipeline, and the benchmarks reach the
network at the scale the training images did (a model trained on small images is not judged on big ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.orchestrate import PipelineConfig
from training.config import TrainConfig
from training.model import Preprocess, get_config
from training.model.inference import target_size

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "configs" / "quickstart.yaml"
PIPELINES = ["pipeline_quickstart.yaml", "pipeline_smoke.yaml"]


@pytest.fixture(params=PIPELINES)
def pipeline_and_train(monkeypatch, request):
    monkeypatch.chdir(ROOT)  # the pipeline config names the training config relative to the repository
    pipeline = load_config(PipelineConfig, ROOT / "configs" / request.param)
    return pipeline, load_config(TrainConfig, pipeline.train.config, pipeline.train.overrides)


def test_the_training_config_works_alone_and_in_the_pipeline(pipeline_and_train):
    alone = load_config(TrainConfig, TRAIN)
    assert alone.data.shards.sources == ["hrwsi", "tartanair"]  # what the README's `dpt ingest` steps write
    assert alone.storage.path != "runs/quickstart/train"  # never continues the pipeline's own training run
    pipeline, train = pipeline_and_train
    assert sorted(train.data.shards.sources) == sorted(step.source for step in pipeline.ingest)
    assert train.model.name == alone.model.name and not train.model.overrides  # eval rebuilds it by name


def test_benchmarks_reach_the_network_at_the_training_scale(pipeline_and_train):
    pipeline, train = pipeline_and_train
    height, width = pipeline.sample_data.height, pipeline.sample_data.width  # training and benchmark images alike
    geometric = train.data.geometric
    side = max(height, width) if geometric.resize_side == "longer" else min(height, width)
    trained = (round(height * geometric.size / side), round(width * geometric.size / side))
    args = pipeline.eval.args  # `dpt eval --input-size N`, else the variant's own size
    size = (int(args[args.index("--input-size") + 1]) if "--input-size" in args
            else get_config(train.model.name).preprocess.size)
    assert target_size(height, width, Preprocess(size=size)) == trained, "eval.args --input-size"
