"""The quickstart's two configs agree with each other (fast; the README's test runs the quickstart itself):
the training config works alone on the README's corpus and inside the pipeline, and the benchmarks reach the
network at the scale the training images did (a model trained on small images is not judged on big ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.pipeline_config import PipelineConfig
from training.config import TrainConfig
from training.model import Preprocess, get_config
from training.model.inference import target_size

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "configs" / "quickstart.yaml"
PIPELINES = ["pipeline_quickstart.yaml", "pipeline_smoke.yaml", "pipeline_metric_smoke.yaml"]


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


def _scales(pipeline: PipelineConfig, train: TrainConfig, eval_args: list[str]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(the size the generated images are trained at, the size `dpt eval` feeds them to the network at)."""
    height, width = pipeline.sample_data.height, pipeline.sample_data.width  # training and benchmark images alike
    geometric = train.data.geometric
    side = max(height, width) if geometric.resize_side == "longer" else min(height, width)
    trained = (round(height * geometric.size / side), round(width * geometric.size / side))
    size = (int(eval_args[eval_args.index("--input-size") + 1]) if "--input-size" in eval_args
            else get_config(train.model.name).preprocess.size)  # `dpt eval --input-size N`, else the variant's own
    return trained, target_size(height, width, Preprocess(size=size))


def test_benchmarks_reach_the_network_at_the_training_scale(pipeline_and_train):
    pipeline, train = pipeline_and_train
    trained, evaluated = _scales(pipeline, train, pipeline.eval.args)
    assert evaluated == trained, "eval.args --input-size"


def test_the_fine_tuning_step_trains_on_the_pipeline_s_corpus_and_is_evaluated_at_its_scale(monkeypatch):
    monkeypatch.chdir(ROOT)
    pipeline = load_config(PipelineConfig, ROOT / "configs" / "pipeline_metric_smoke.yaml")
    [step] = pipeline.finetune
    train = load_config(TrainConfig, step.config, step.overrides)
    assert set(train.data.shards.sources) <= {ingest.source for ingest in pipeline.ingest}
    assert set(step.eval.benchmarks) <= set(pipeline.sample_data.benchmarks) | {"nyu_metric"}  # nyu_metric reads nyu/
    assert "nyu" in pipeline.sample_data.benchmarks
    trained, evaluated = _scales(pipeline, train, step.eval.args)
    assert evaluated == trained, "finetune[0].eval.args --input-size"
