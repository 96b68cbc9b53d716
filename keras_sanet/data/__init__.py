"""Input pipelines: `tf.data` readers of segmentation datasets, on every Keras backend.

```python
from keras_sanet import data

train = data.camvid_dataset("camvid", "train", batch_size=8, seed=0, repeat=True)
val = data.camvid_dataset("camvid", "val", batch_size=1)
own = data.folder_dataset("images", "masks", num_classes=3, batch_size=1)
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
from keras_sanet.data.dataset_info import IGNORE_INDEX
from keras_sanet.data.dataset_info import DatasetInfo
from keras_sanet.data.dataset_info import dataset_names
from keras_sanet.data.dataset_info import get_dataset_info
from keras_sanet.data.dataset_info import register_dataset_info
from keras_sanet.data.folder import folder_dataset
from keras_sanet.data.folder import folder_pairs
from keras_sanet.data.folder import read_list_file
from keras_sanet.data.label_map import label_lookup_table
from keras_sanet.data.pipeline import AUTOTUNE
from keras_sanet.data.pipeline import segmentation_dataset
from keras_sanet.data.validation import ValidationReport
from keras_sanet.data.validation import clear_validation_cache
from keras_sanet.data.validation import validate_pairs
