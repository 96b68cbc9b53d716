"""Evaluation: the paper's test protocol and whole-split mIoU / pixel accuracy.

```python
from keras_sanet import data, evaluation

val = data.camvid_dataset("data/camvid", "val", batch_size=1)
results = evaluation.evaluate_model(
    model, val, num_classes=11, class_names=data.CAMVID_INFO.class_names,
    scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True, crop_size=(360, 480))
print(evaluation.format_table(results))
```

From the shell: `keras-sanet eval --run-dir runs/camvid --flip --scales 0.5,...`, and
`keras-sanet ablation configs/paper/tables/table2_context59.toml` for a whole paper table.
"""

from keras_sanet.evaluation.ablation import run_ablation
from keras_sanet.evaluation.evaluate import evaluate_model
from keras_sanet.evaluation.evaluate import format_table
from keras_sanet.evaluation.evaluate import summarize_confusion_matrix
from keras_sanet.evaluation.inference import predict_logits
from keras_sanet.evaluation.inference import scaled_size
from keras_sanet.evaluation.inference import window_starts
from keras_sanet.evaluation.inference import window_stride
