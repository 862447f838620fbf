"""What the tests share: one home for each helper, so that no test module carries its own copy.

The real servers behind the fixtures of tests/conftest.py (Ray head, MLflow, moto S3) are in tests/services.py;
everything else a test needs from outside itself is here:

- adapter_tools: tiny native dataset trees for the adapter tests, and the shard contract round trip
- checkpoints: a `dpt train` checkpoint directory written with the product's own code
- eval_data: tiny benchmark folders in each benchmark's released formats, and a model that reads them back
- fault_proxy: an HTTP proxy between boto3 and the S3 server that injects faults
- ingest_trees: a dataset in the ``folder`` adapter's layout for the ingest command tests
- netns: a private network namespace with loopback only (the two-node Ray cluster)
- readme_blocks: the README's command blocks, as tests/test_readme.py runs them
- training_corpus: small shard corpora for the training tests, and ways to damage a shard
"""
