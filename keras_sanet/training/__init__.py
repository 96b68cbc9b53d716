"""Training utilities: the paper's optimizer and the `keras-sanet train` command."""

from keras_sanet.training.config import Config
from keras_sanet.training.config import load_config
from keras_sanet.training.optimizers import MultiplierSGD
from keras_sanet.training.optimizers import sgd_poly
from keras_sanet.training.trainer import train
