"""Training: a small trainer the ``spikeforge`` command calls, usable from Python too.

    from spikeforge.train import load_run, make_config, train
    result = train(make_config(dataset="yinyang", epochs=30), out="runs/yy")
    result.test_accuracy
    model, cfg = load_run("runs/yy")        # the trained model (best.pt), in eval mode
"""
from .checkpoint import CheckpointError as CheckpointError
from .config import ConfigError as ConfigError
from .config import DataSet as DataSet
from .config import Encoding as Encoding
from .config import Frames as Frames
from .config import Loss as Loss
from .config import Precision as Precision
from .config import Schedule as Schedule
from .config import TrainConfig as TrainConfig
from .config_files import load_config_file as load_config_file
from .config import make_config as make_config
from .model import Classifier as Classifier
from .runs import RunError as RunError
from .runs import evaluate as evaluate
from .runs import load_run as load_run
from .runs import resume as resume
from .runs import train as train
from .trainer import RunResult as RunResult
from .trainer import Trainer as Trainer
