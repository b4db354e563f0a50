"""Training of needle_nav's artery / vein / aorta segmentation network (issue 5).

The package builds the data (digital patients from the project's CLI plus one real labelled
series), trains a small 3-D U-Net with CBAM skips and a transformer bottleneck on CPU, and
exports ONNX with the metadata the Rust runtime reads (see export.py).
"""

CLASS_NAMES = ["background", "artery", "vein", "aorta"]
NUM_CLASSES = 4

