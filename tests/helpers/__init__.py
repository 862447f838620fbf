"""What the tests share: one home for each helper, so that no test module carries its own copy.

The real servers behind the fixtures of tests/conftest.py (Ray head, MLflow, moto S3) are in tests/services.py;
everything else a test needs from outside itself is here:

- adapter_tools: files written under a root (local or s3://), a smooth test image, and the shard contract round
  trip every adapter must survive
- checkpoints: a `dpt train` checkpoint directory written with the product's own code
- cli: the real `dpt` console script in a subprocess (``dpt``), and in a folder of its own (``run_dpt``)
- depth_reference: the metric depth metrics (Tables 2 and 3) written out in numpy, to check the product's against
- eval_data: tiny benchmark folders in each benchmark's released formats, and a model that reads them back
- fault_proxy: an HTTP proxy between boto3 and the S3 server that injects faults
- images: PNG, JPEG, palette PNG and .npy bytes for the tiny trees
- label_maps: PASCAL-Context's VOC2010 tree as released, and a colour classifier that reads label maps back
- ingest_trees: a dataset in the ``folder`` adapter's layout for the ingest tests, and what an ingest wrote
- netns: a private network namespace with loopback only (the two-node Ray cluster)
- readme_blocks: the README's command blocks, as tests/test_readme.py runs them
- resume_runs: one rank of training without Ray, stopped and resumed, for the exact-resume tests
- training_corpus: small shard corpora for the training tests, and ways to damage a shard
"""
