"""The model zoo: preset folders, the bundled presets and loading them.

```python
import keras_sanet

keras_sanet.list_presets()                       # the bundled presets, with scores
model = keras_sanet.SANet.from_preset("sanet_resnet18_camvid")
model = keras_sanet.SANet.from_preset("hf://org/my_preset", num_classes=5)  # fine-tune
model.save_to_preset("my_preset", {"dataset": "roads", "class_names": [...]})
print(keras_sanet.presets.format_table())       # Markdown, for the README
```
"""

from keras_sanet.presets.download import resolve_preset
from keras_sanet.presets.preset_format import CONFIG_FILE
from keras_sanet.presets.preset_format import METADATA_FILE
from keras_sanet.presets.preset_format import WEIGHTS_FILE
from keras_sanet.presets.preset_format import classifier_layers
from keras_sanet.presets.preset_format import load_preset
from keras_sanet.presets.preset_format import read_metadata
from keras_sanet.presets.preset_format import save_preset
from keras_sanet.presets.preset_format import sha256_file
from keras_sanet.presets.preset_format import verify_preset
from keras_sanet.presets.registry import format_table
from keras_sanet.presets.registry import list_presets
from keras_sanet.presets.registry import preset_names
from keras_sanet.presets.registry import weights_root
