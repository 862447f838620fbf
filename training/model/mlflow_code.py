"""The file MLflow runs to build a logged DPT's pyfunc when it loads the model (MLflow's "models from code"), so
that no pickled Python object is stored in, or executed from, a model: ``training.model.mlflow_model`` logs
this file as the model's code, and it builds the class from the environment that loads it."""

from mlflow.models import set_model

from training.model.mlflow_model import DPTModel

set_model(DPTModel())
