"""Input pipelines: `tf.data` readers of segmentation datasets, on every Keras backend.

```python
from keras_sanet import data

train = data.camvid_dataset("camvid", "train", batch_size=8, seed=0, repeat=True)
val = data.camvid_dataset("camvid", "val", batch_size=1)
own = data.folder_dataset("images", "masks", num_classes=3, batch_size=1)
voc = data.voc_dataset("VOCdevkit/VOC2012", "train", augmented=True, batch_size=16)
context = data.context_dataset("VOCdevkit/VOC2010", "val", num_classes=59, batch_size=1)
same = data.named_dataset("context59", "VOCdevkit/VOC2010", "val", batch_size=1)
```
"""

from keras_sanet.data.augment import pad_to_size
from keras_sanet.data.augment import random_crop
from keras_sanet.data.augment import random_flip
from keras_sanet.data.augment import random_scale
from keras_sanet.data.augment import resize_pair
from keras_sanet.data.augment import train_augment
from keras_sanet.data.camvid import camvid_dataset
from keras_sanet.data.camvid import camvid_pairs
from keras_sanet.data.dataset_info import CAMVID_INFO
from keras_sanet.data.dataset_info import CONTEXT59_INFO
from keras_sanet.data.dataset_info import CONTEXT60_INFO
from keras_sanet.data.dataset_info import VOC_AUG_INFO
from keras_sanet.data.dataset_info import VOC_INFO
from keras_sanet.data.dataset_info import IGNORE_INDEX
from keras_sanet.data.dataset_info import DatasetInfo
from keras_sanet.data.dataset_info import dataset_names
from keras_sanet.data.dataset_info import get_dataset_info
from keras_sanet.data.dataset_info import register_dataset_info
from keras_sanet.data.dataset_info import voc_colormap
from keras_sanet.data.folder import folder_dataset
from keras_sanet.data.folder import folder_pairs
from keras_sanet.data.folder import read_list_file
from keras_sanet.data.label_map import label_lookup_table
from keras_sanet.data.pipeline import AUTOTUNE
from keras_sanet.data.pascal import context_dataset
from keras_sanet.data.pascal import context_pairs
from keras_sanet.data.pascal import voc_dataset
from keras_sanet.data.pascal import voc_pairs
from keras_sanet.data.pipeline import segmentation_dataset
from keras_sanet.data.readers import NAMED_DATASETS
from keras_sanet.data.readers import named_dataset
from keras_sanet.data.readers import named_dataset_info
from keras_sanet.data.readers import named_pairs
from keras_sanet.data.validation import ValidationReport
from keras_sanet.data.validation import clear_validation_cache
from keras_sanet.data.validation import validate_pairs
